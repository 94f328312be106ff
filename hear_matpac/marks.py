"""Ownership marks: a folder a tool makes gets a mark (`MARK`) before anything else goes into
it, saying which tool made it and for what (`{"made_by": "hear-matpac", "tool": ..., "purpose":
...}`). A tool removes a folder only when the mark names that tool and purpose
(`remove_marked`); marks of older versions (plain text, no tool named) are accepted only where
the caller says that place held nothing else (`legacy=True`). Also whether a process recorded
by host and pid is gone (`owner_gone`), for claims and the synthetic suite's temporary folders.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Optional, Tuple

from .io import InputError

MARK = ".hear-matpac-made"


def alive(pid: int) -> bool:
    """Whether process `pid` on this host exists (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def owner_gone(data: Optional[dict]) -> bool:
    """True when the claim's owner is known dead: same host, pid not alive."""
    if not data or data.get("host") != socket.gethostname():
        return False
    pid = data.get("pid")
    return isinstance(pid, int) and not alive(pid)


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


def ensure_marked(folder: Path, tool: str, purpose: str) -> Path:
    """`make_marked(folder, ...)` unless `folder` is a directory already, or another process
    makes it at the same moment; the caller has checked that one there is its own."""
    folder = Path(folder)
    if not folder.is_dir():
        try:
            make_marked(folder, tool, purpose)
        except FileExistsError:  # another run made it first
            pass
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
    """`InputError` when `folder` exists and `tool` did not make it for `purpose`: it is left alone."""
    if os.path.lexists(folder) and not made_for(folder, tool, purpose, legacy):
        raise InputError(f"{folder} exists and {describe_mark(folder)}, not by {tool} as its {what}; "
                         "it is left alone: choose another --out or move it")  # fmt: skip
