"""Per-stage claims and ownership marks, so that many processes (and hosts) can share one
`--out` and a run only ever removes what it made.

A claim is a file made with `O_CREAT | O_EXCL` (atomic on local and NFSv3+ file systems)
holding `{"host": ..., "pid": ...}`. It is taken over only when its owner is gone: same host
and no process with that pid. A folder a run makes gets an ownership mark (`MARK`) before
anything else goes into it; only folders bearing it are ever removed.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Optional

MARK = ".hear-matpac-made"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def owner(claim: Path) -> Optional[dict]:
    """The claim's `{"host", "pid"}`, or None when it is absent or unreadable (being written)."""
    try:
        data = json.loads(Path(claim).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def owner_gone(data: Optional[dict]) -> bool:
    """True when the claim's owner is known dead: same host, pid not alive."""
    if not data or data.get("host") != socket.gethostname():
        return False
    pid = data.get("pid")
    return isinstance(pid, int) and not _alive(pid)


def take_claim(claim: Path) -> bool:
    """Take `claim` (a file path); True when this process holds it now. A claim whose owner is
    gone is taken over; one held by a live (or other host's) process is left alone."""
    claim = Path(claim)
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            data = owner(claim)
            if data and data.get("host") == socket.gethostname() and data.get("pid") == os.getpid():
                return True
            if not owner_gone(data):
                return False
            try:  # owner gone: remove its claim and try again (only one remover wins the next O_EXCL)
                os.unlink(claim)
            except FileNotFoundError:
                pass
            continue
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        return True
    return False


def release_claim(claim: Path) -> None:
    """Remove `claim` if this process holds it."""
    data = owner(claim)
    if data and data.get("host") == socket.gethostname() and data.get("pid") == os.getpid():
        try:
            os.unlink(claim)
        except FileNotFoundError:
            pass


def make_marked(folder: Path, note: str = "") -> Path:
    """Create `folder` (must not exist) with its ownership mark inside."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / MARK).write_text(note or "made by hear-matpac; safe for hear-matpac to remove\n")
    return folder


def is_marked(folder: Path) -> bool:
    return Path(folder).is_dir() and not Path(folder).is_symlink() and (Path(folder) / MARK).is_file()


def remove_marked(folder: Path) -> bool:
    """Remove `folder` only if it bears the ownership mark (never through a symlink); True if removed."""
    if not is_marked(folder):
        return False
    shutil.rmtree(folder)
    return True


def refuse_unmarked(folder: Path, what: str) -> None:
    """`ValueError` when `folder` exists without the mark: hear-matpac did not make it."""
    if os.path.lexists(folder) and not is_marked(folder):
        raise ValueError(f"{folder} exists and was not made by hear-matpac ({what}); "
                         "it is left alone: choose another --out or move it")
