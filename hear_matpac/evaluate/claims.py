"""Per-stage claims and ownership marks, so that many processes (and hosts) can share one
`--out` and a run only ever removes what it made.

A claim is a file made with `O_CREAT | O_EXCL` (atomic on local and NFSv3+ file systems)
holding `{"host", "pid", "token", "job"}`: `token` is new for every claim taken, `job` names
the scheduler job that runs the stage (`JOB_ENV`, set by `slurm.py`; empty otherwise). While a
process holds a claim, a heartbeat thread refreshes the file's modification time every quarter
of the lease. A claim is taken over when its owner is gone:

- same host and no process with that pid (the fast path of one machine), or
- the same scheduler job (`job`): a retry or requeue of the job that took it, so that one ended, or
- its lease ran out: not refreshed for `LEASE_S` seconds (by the file server's clock, compared
  with this host's: keep the hosts' clocks in step well within the lease). That covers a node
  that died or lost the shared file system, from any host.

A holder that lost its claim (its lease ran out while it was stalled, and another process took
the stage) finds out through the token: `holds_claim` is False, and the stage discards its work
rather than putting it in place (`pipeline.run_stage`).

A folder a tool makes gets an ownership mark (`MARK`) before anything else goes into it, saying
which tool made it and for what (`{"made_by": "hear-matpac", "tool": ..., "purpose": ...}`). A
tool removes a folder only when the mark names that tool and purpose (`remove_marked`); marks of
older versions (plain text, no tool named) are accepted only where the caller says that place
held nothing else (`legacy=True`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

MARK = ".hear-matpac-made"
LEASE_S = 600.0  # a claim not refreshed for this long is stale: taken over from any host
JOB_ENV = "HEAR_MATPAC_CLAIM_JOB"  # the scheduler job running this process's stages, if any

clock: Callable[[], float] = time.time  # what a lease's age is measured by (tests inject one)
_held: Dict[str, Tuple[str, threading.Event]] = {}  # claim path -> (its token, heartbeat stop)
_lock = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def owner(claim: Path) -> Optional[dict]:
    """The claim's `{"host", "pid", "token", "job"}`, or None when it is absent or unreadable
    (being written)."""
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


def lease_expired(claim: Path, lease_s: float = LEASE_S) -> bool:
    """True when `claim` was last refreshed more than `lease_s` seconds ago."""
    try:
        return clock() - os.stat(claim).st_mtime > lease_s
    except FileNotFoundError:
        return False


def _same_job(data: Optional[dict]) -> bool:
    job = os.environ.get(JOB_ENV, "")
    return bool(job) and bool(data) and data.get("job") == job


def _token(claim: Path) -> Optional[str]:
    with _lock:
        held = _held.get(str(claim))
    return held[0] if held else None


def holds_claim(claim: Path) -> bool:
    """True when this process took `claim` and nobody has taken it over since."""
    token = _token(Path(claim))
    data = owner(claim)
    return token is not None and bool(data) and data.get("token") == token


def claim_token(claim: Path) -> str:
    """The token of `claim` as this process took it (names its work folder); '' if not held."""
    return _token(Path(claim)) or ""


def _heartbeat(claim: Path, token: str, stop: threading.Event, every_s: float) -> None:
    """Refresh `claim`'s modification time until stopped or until it is no longer ours."""
    while not stop.wait(every_s):
        data = owner(claim)
        if not data or data.get("token") != token:
            return
        try:
            os.utime(claim)
        except OSError:  # gone, or the file system is away: the lease may run out
            pass


def take_claim(claim: Path, lease_s: float = LEASE_S) -> bool:
    """Take `claim` (a file path); True when this process holds it now, with a heartbeat
    keeping its lease. A claim whose owner is gone (dead pid on this host, the same scheduler
    job, or a lease not refreshed for `lease_s` seconds) is taken over; one held by a live
    owner is left alone."""
    claim = Path(claim)
    if holds_claim(claim):
        return True
    token = uuid.uuid4().hex
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                       "job": os.environ.get(JOB_ENV, "")}).encode()  # fmt: skip
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            data = owner(claim)
            if not (owner_gone(data) or _same_job(data) or lease_expired(claim, lease_s)):
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
        stop = threading.Event()
        with _lock:
            _held[str(claim)] = (token, stop)
        beat = threading.Thread(target=_heartbeat, args=(claim, token, stop, max(lease_s / 4, 0.01)),
                                name=f"claim {claim.name}", daemon=True)  # fmt: skip
        beat.start()
        return True
    return False


def release_claim(claim: Path) -> None:
    """Stop refreshing `claim` and remove it if this process still holds it."""
    claim = Path(claim)
    mine = holds_claim(claim)
    with _lock:
        held = _held.pop(str(claim), None)
    if held:
        held[1].set()
    if mine:
        try:
            os.unlink(claim)
        except FileNotFoundError:
            pass


LEGACY_MARK_TEXT = "made by hear-matpac; safe for hear-matpac to remove"  # versions before tool/purpose marks


def mark_text(tool: str, purpose: str) -> str:
    """The content of an ownership mark: which tool made the folder, and for what."""
    return json.dumps({"made_by": "hear-matpac", "tool": tool, "purpose": purpose}) + "\n"


def make_marked(folder: Path, tool: str, purpose: str) -> Path:
    """Create `folder` (must not exist) with its ownership mark (`tool`, `purpose`) inside."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    write_mark(folder, tool, purpose)
    return folder


def write_mark(folder: Path, tool: str, purpose: str) -> None:
    """Mark the existing `folder` as made by `tool` for `purpose`."""
    (Path(folder) / MARK).write_text(mark_text(tool, purpose))


def is_marked(folder: Path) -> bool:
    """`folder` is a real folder (not a symlink) bearing a hear-matpac mark of any kind."""
    return Path(folder).is_dir() and not Path(folder).is_symlink() and (Path(folder) / MARK).is_file()


def mark_owner(folder: Path) -> Optional[Tuple[str, str]]:
    """(tool, purpose) of `folder`'s mark; ("", "") for an older version's mark (no tool named);
    None when `folder` is no marked folder or its mark cannot be read."""
    if not is_marked(folder):
        return None
    try:
        text = (Path(folder) / MARK).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if text.strip() in ("", LEGACY_MARK_TEXT):
        return ("", "")
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("made_by") != "hear-matpac":
        return None
    return str(data.get("tool", "")), str(data.get("purpose", ""))


def made_for(folder: Path, tool: str, purpose: str, legacy: bool = False) -> bool:
    """True when `folder`'s mark says `tool` made it for `purpose` (or, with `legacy`, when it
    bears an older version's mark, which named no tool)."""
    found = mark_owner(folder)
    return found == (tool, purpose) or (legacy and found == ("", ""))


def remove_marked(folder: Path, tool: str, purpose: str, legacy: bool = False) -> bool:
    """Remove `folder` only if `made_for(folder, tool, purpose, legacy)` (never through a
    symlink); True if removed."""
    if not made_for(folder, tool, purpose, legacy):
        return False
    shutil.rmtree(folder)
    return True


def describe_mark(folder: Path) -> str:
    """Who made `folder`, in words, for error messages."""
    found = mark_owner(folder)
    if found is None:
        return "was not made by hear-matpac"
    if found == ("", ""):
        return "was made by an older hear-matpac"
    return f"was made by hear-matpac {found[0]} ({found[1]})"


def refuse_unless_made_for(folder: Path, tool: str, purpose: str, what: str, legacy: bool = False) -> None:
    """`ValueError` when `folder` exists and `tool` did not make it for `purpose`: it is left alone."""
    if os.path.lexists(folder) and not made_for(folder, tool, purpose, legacy):
        raise ValueError(f"{folder} exists and {describe_mark(folder)}, not by {tool} as its {what}; "
                         "it is left alone: choose another --out or move it")  # fmt: skip
