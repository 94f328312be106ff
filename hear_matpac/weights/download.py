"""Fetch a published checkpoint: transferred (`weights/http_transfer.py`), then checked before it is kept.

An interrupted transfer resumes from `NAME.part` (see `weights/http_transfer.py`). Only a complete file
that opens as a MATPAC checkpoint of the registered shape, and whose sha256 matches the
published or recorded one, is renamed to NAME; its sha256 is recorded beside it (trust on first
use, see `weights/integrity.py`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..io import InputError, unwritable
from .read import CheckpointError, PathLike, extract_encoder, read_checkpoint_digest
from .head import find_head
from .http_transfer import DownloadError, Interrupted, Progress, RejectedDownload, discard, transfer
from .integrity import ChecksumError, read_record, record_path, verify_recorded, write_record
from .registry import WeightsEntry
from .locate import default_fetch_dir

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2

__all__ = ["DownloadError", "RejectedDownload", "FetchResult", "fetch", "DEFAULT_TIMEOUT_S", "DEFAULT_RETRIES"]


@dataclass(frozen=True)
class FetchResult:
    """`path`: the checked file; `downloaded`: False when it was already there;
    `recorded`: True when its sha256 was recorded by this call (first use)."""

    path: Path
    sha256: str
    downloaded: bool
    recorded: bool

    def describe(self, name: str) -> str:
        """Two lines for the checkpoint `name`: where it is (fetched or found) and its sha256's state."""
        where = f"downloaded {name} to {self.path}" if self.downloaded else f"{name} is already at {self.path}; not fetched again"
        state = "recorded now (trust on first use)" if self.recorded else "matches the record"
        return f"{where}\nsha256 {self.sha256}: {state}"


def fetch(
    entry: WeightsEntry,
    dest_dir: Optional[PathLike] = None,
    *,
    base_url: Optional[str] = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> FetchResult:
    """Make `dest_dir / entry.file` a checked copy of the published checkpoint.

    A file already there is not fetched again: it is checked against its recorded sha256 (or,
    with no record yet, opened, checked and recorded). Otherwise it is downloaded from
    `entry.url(base_url)`, resuming an earlier `.part`; an interrupted transfer is resumed up to
    `retries` more times. Raises `DownloadError` (kept `.part`, retry hint), `RejectedDownload`,
    or `ValueError` when the folder cannot be written.
    Fetches into one folder from several processes (or threads) run one at a time.
    """
    if retries < 0:
        raise InputError(f"retries must be 0 or more, got {retries}")
    folder = Path(dest_dir).expanduser() if dest_dir is not None else default_fetch_dir()
    advice = "choose another folder (--dir) or fix its permissions"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is not a folder; choose another folder (--dir) for the weights")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _folder_lock(folder, progress):
            return _fetch_locked(entry, folder, base_url, retries, timeout, progress, dest_dir)
    except DownloadError:
        raise
    except OSError as err:
        one_line = unwritable(err, folder, advice)
        if one_line is None:
            raise DownloadError(f"{folder}: {err.strerror or err}") from None
        raise one_line from None


@contextlib.contextmanager
def _folder_lock(folder: Path, progress: bool) -> Iterator[None]:
    """Hold an exclusive `flock` on `folder` itself (no lock file is left behind), so that
    fetches into one folder from several processes run one after another: the later ones find
    the file there and only check it. A no-op where `fcntl` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another fetch into {folder} to finish", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fetch_locked(
    entry: WeightsEntry, folder: Path, base_url: Optional[str], retries: int, timeout: float,
    progress: bool, dest_dir: Optional[PathLike],
) -> FetchResult:  # fmt: skip
    final = folder / entry.file
    if final.is_file():
        return _accept_present(entry, final)
    url = entry.url(base_url)
    part = final.with_name(final.name + ".part")
    hint = _retry_hint(entry, dest_dir, base_url)
    for attempt in range(retries + 1):
        try:
            transfer(url, part, timeout, Progress(entry.file) if progress else None, hint)
            break
        except Interrupted as why:
            kept = part.stat().st_size if part.is_file() else 0
            if attempt == retries:
                raise DownloadError(
                    f"download of {url} failed after {attempt + 1} attempt(s): {why}. {kept} bytes are "
                    f"kept in {part}; run `{hint}` again to resume"
                ) from None
            if progress:
                print(f"{entry.file}: {why}; resuming at byte {kept}", file=sys.stderr)
    return _accept_download(entry, part, final, url)


def _retry_hint(entry: WeightsEntry, dest_dir: Optional[PathLike], base_url: Optional[str]) -> str:
    command = f"hear-matpac weights fetch {entry.name}"
    if dest_dir is not None:
        command += f" --dir {dest_dir}"
    if base_url:
        command += f" --base-url {base_url}"
    return command


def _accept_download(entry: WeightsEntry, part: Path, final: Path, url: str) -> FetchResult:
    """Check the complete `.part` and, only if it passes, rename it to `final` and record it."""
    try:
        digest = _check_checkpoint(entry, part)
    except CheckpointError as err:
        discard(part)
        raise RejectedDownload(
            f"the file downloaded from {url} is not the registered MATPAC checkpoint {entry.name!r}, so it "
            f"was deleted: {err}"
        ) from None
    recorded = read_record(final)
    for expected, source in (
        (entry.sha256, "the published sha256"),
        (recorded, f"the sha256 recorded in {record_path(final)}"),
    ):
        if expected and digest != expected:
            discard(part)
            raise RejectedDownload(
                f"the file downloaded from {url} has sha256 {digest}, not {source} ({expected}); it was "
                f"deleted. Either the download is corrupt (fetch again) or the published file changed: "
                f"if you trust the new one, delete {record_path(final)} and fetch again"
            )
    if recorded is None:
        write_record(final, digest)
    os.replace(part, final)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    return FetchResult(final, digest, downloaded=True, recorded=recorded is None)


def _accept_present(entry: WeightsEntry, final: Path) -> FetchResult:
    """An existing file: verified against its record, or checked and recorded when it has none."""
    digest = verify_recorded(final)
    recorded_now = digest is None
    if digest is None:
        digest = _check_checkpoint(entry, final)
    if entry.sha256 and digest != entry.sha256:
        raise ChecksumError(
            f"{final}: sha256 {digest} is not the published {entry.sha256}; delete it and fetch again"
        )
    if recorded_now:
        write_record(final, digest)
    return FetchResult(final, digest, downloaded=False, recorded=recorded_now)


def _check_checkpoint(entry: WeightsEntry, path: Path) -> str:
    """The sha256 of the bytes checked; `CheckpointError` unless `path` holds a MATPAC encoder
    of `entry`'s window (and head)."""
    raw, digest = read_checkpoint_digest(path)
    weights = extract_encoder(raw, path)
    if weights.config.n_frames != entry.frames:
        raise CheckpointError(
            path,
            f"its encoder has {weights.config.n_frames}-frame windows; {entry.name!r} has {entry.frames}",
        )
    if entry.head and find_head(raw, path, weights.config.embed_dim) is None:
        raise CheckpointError(
            path, f"{entry.name!r} should hold the AudioSet classification head; this file has none"
        )
    assert digest is not None  # read into memory, so hashed
    return digest


