"""Trust on first use: a file's sha256 is recorded beside it and checked on every later use.

The record of `DIR/NAME` is `DIR/NAME.sha256`, one line in `sha256sum` format
(`<64 hex digits>  NAME`), so `cd DIR && sha256sum -c NAME.sha256` checks it too. Records are
read for the file a path resolves to (through symbolic links), and for the link's own name
too when it has one. Anything at `NAME.sha256` that is not a readable, well-formed record naming
NAME is an error naming both files, never "no record".
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from ..io import atomic_write, InputError

_CHUNK = 1 << 20
_MAX_RECORD_BYTES = 4096
_RECORD = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


class ChecksumError(InputError):
    """A file whose sha256 differs from the one recorded or published for it, or whose record
    is not a well-formed sha256 record of it."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    """Where the sha256 of `path` is recorded: `path` + `.sha256`."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def read_record(path: Path) -> Optional[str]:
    """The sha256 recorded for `path`, or None when nothing is at any of its record paths.

    Checked: the record of the file `path` resolves to and, when `path` is a link, the record
    beside the link; two records that disagree, or one that is not well-formed, are a
    `ChecksumError`."""
    found: dict[Path, str] = {}
    for file in _named_files(Path(path)):
        digest = _read_one(file)
        if digest is not None:
            found[record_path(file)] = digest
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{rec} says {d}" for rec, d in found.items())
        raise ChecksumError(f"{path}: its sha256 records disagree ({listed}); delete the wrong one")
    return next(iter(found.values()), None)


def _named_files(path: Path) -> list[Path]:
    """The file `path` resolves to, then `path` itself when that is another name for it."""
    real = Path(os.path.realpath(path))
    own = Path(os.path.abspath(path))
    return [real] if own == real or record_path(own) == record_path(real) else [real, own]


def _read_one(file: Path) -> Optional[str]:
    rec = record_path(file)
    if not os.path.lexists(rec):
        return None
    expected = f"expected one line '<64 hex digits>  {file.name}'"

    def bad(problem: str) -> ChecksumError:
        return ChecksumError(
            f"{rec}: {problem}, so {file} cannot be checked against it ({expected}). Fix or delete "
            f"{rec.name}; with no record, the next fetch or load records {file.name}'s digest again"
        )

    try:
        with open(rec, "rb") as f:
            data = f.read(_MAX_RECORD_BYTES + 1)
    except OSError as err:
        raise bad(f"unreadable ({err.strerror or type(err).__name__})") from None
    if len(data) > _MAX_RECORD_BYTES:
        raise bad("not a sha256 record (too long)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("not a sha256 record (binary, not text)") from None
    lines = text.strip().splitlines()
    match = _RECORD.fullmatch(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise bad("not a sha256 record")
    if match.group(2) != file.name:
        raise bad(f"it records the sha256 of {match.group(2)!r}, not of {file.name!r}")
    return match.group(1).lower()


def write_record(path: Path, digest: str) -> Path:
    """Record `digest` for `path` (atomically: temp file, then rename). Returns the record's path."""
    rec = record_path(path)
    with atomic_write(rec) as f:
        f.write(f"{digest}  {Path(path).name}\n".encode("utf-8"))
    return rec


def check_digest(path: Path, actual: str) -> Optional[str]:
    """Check `actual`, the sha256 of the bytes read from `path`, against its record, if it has
    one: the recorded digest, or None when unrecorded. `ChecksumError` naming both digests when
    the file changed since it was recorded."""
    expected = read_record(path)
    if expected is None:
        return None
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the digest recorded on first download "
            f"({expected}, in {record_path(Path(os.path.realpath(path)))}); the file changed or is "
            f"corrupt. Delete {Path(path).name} and fetch it again (the new download is checked "
            f"against the record), or delete both files if the published checkpoint itself changed"
        )
    return actual


def verify_recorded(path: Path) -> Optional[str]:
    """Check the file at `path` against its record, if it has one: the digest, or None when
    unrecorded (see `check_digest`)."""
    if read_record(path) is None:
        return None
    return check_digest(path, sha256_file(path))


def weights_sha256(path: Path) -> str:
    """The content identity of a weights file: the sha256 on record for it (the file is
    checked against that record whenever it is loaded or fetched), else computed now."""
    return read_record(path) or sha256_file(path)
