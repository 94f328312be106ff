"""Trust on first use: a file's sha256 is recorded beside it and checked on every later use.

The record of `DIR/NAME` is `DIR/NAME.sha256`, one line in `sha256sum` format
(`<64 hex digits>  NAME`), so `cd DIR && sha256sum -c NAME.sha256` checks it too.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

from .atomic import atomic_write

_CHUNK = 1 << 20
_RECORD = re.compile(r"([0-9a-f]{64})(?:\s+\*?(.+))?")


class ChecksumError(ValueError):
    """A file whose sha256 differs from the one recorded or published for it."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    """Where the sha256 of `path` is recorded: `path` + `.sha256`."""
    return path.with_name(path.name + ".sha256")


def read_record(path: Path) -> Optional[str]:
    """The sha256 recorded for `path`, or None when there is no record.

    A record that is not a sha256 line is a `ChecksumError` (never silently ignored)."""
    rec = record_path(path)
    if not rec.is_file():
        return None
    text = rec.read_text(encoding="utf-8").strip()
    match = _RECORD.fullmatch(text.lower()) if text else None
    if match is None:
        raise ChecksumError(
            f"{rec}: not a sha256 record (expected '<64 hex digits>  {path.name}'); "
            f"delete it to record {path.name}'s digest again"
        )
    return match.group(1)


def write_record(path: Path, digest: str) -> Path:
    """Record `digest` for `path` (atomically: temp file, then rename). Returns the record's path."""
    rec = record_path(path)
    with atomic_write(rec) as f:
        f.write(f"{digest}  {path.name}\n".encode("utf-8"))
    return rec


def verify_recorded(path: Path) -> Optional[str]:
    """Check `path` against its record, if it has one: the digest, or None when unrecorded.

    Raises `ChecksumError` naming both digests when the file changed since it was recorded."""
    expected = read_record(path)
    if expected is None:
        return None
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the digest recorded on first download "
            f"({expected}, in {record_path(path)}); the file changed or is corrupt. Delete {path.name} "
            f"and fetch it again (the new download is checked against the record), or delete both "
            f"files if the published checkpoint itself changed"
        )
    return actual
