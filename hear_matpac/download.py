"""Fetch a published checkpoint: streamed, resumable, and checked before it is kept.

Bytes go to `NAME.part` beside the final file, with `NAME.part.json` saying where they came
from (URL, size, ETag / Last-Modified). An interrupted transfer resumes from there with an HTTP
`Range` request (guarded by `If-Range`, so a file that changed on the server restarts from zero
instead of being spliced). Only a complete file that opens as a MATPAC checkpoint of the
registered shape, and whose sha256 matches the published or recorded one, is renamed to NAME;
its sha256 is recorded beside it (trust on first use, see `integrity.py`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from . import __version__
from .atomic import atomic_write
from .checkpoint import CheckpointError, PathLike, extract_encoder, read_checkpoint
from .head import find_head
from .integrity import ChecksumError, read_record, record_path, sha256_file, verify_recorded, write_record
from .registry import BASE_URL_ENV, WeightsEntry
from .weights_locate import default_fetch_dir

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2
USER_AGENT = f"hear-matpac/{__version__}"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


class DownloadError(OSError):
    """The transfer failed (network, HTTP status, disk); any partial file is kept for a resume."""


class RejectedDownload(ValueError):
    """What came back is not the registered checkpoint (an HTML page, a truncated or foreign
    file, a checksum mismatch); it was deleted."""


@dataclass(frozen=True)
class FetchResult:
    """`path`: the checked file; `downloaded`: False when it was already there;
    `recorded`: True when its sha256 was recorded by this call (first use)."""

    path: Path
    sha256: str
    downloaded: bool
    recorded: bool


class _Interrupted(Exception):
    """The transfer stopped early; the `.part` file holds what came and can be resumed."""


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
    `retries` more times. Raises `DownloadError` (kept `.part`, retry hint) or `RejectedDownload`.
    Fetches into one folder from several processes (or threads) run one at a time.
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    folder = Path(dest_dir).expanduser() if dest_dir is not None else default_fetch_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder, progress):
        return _fetch_locked(entry, folder, base_url, retries, timeout, progress, dest_dir)


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
            _transfer(url, part, timeout, _Progress(entry.file) if progress else None, hint)
            break
        except _Interrupted as why:
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


def _transfer(url: str, part: Path, timeout: float, progress: Optional["_Progress"], hint: str) -> None:
    """Append the rest of `url` to `part` (everything, when `part` cannot be resumed)."""
    meta_path = part.with_name(part.name + ".json")
    meta = _read_meta(meta_path)
    have = part.stat().st_size if part.is_file() else 0
    if have and meta.get("url") != url:
        have = 0  # left by another URL, or by a crash before its description was written
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator and not str(validator).startswith("W/"):
            headers["If-Range"] = str(validator)
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        with err:
            total = _content_range(err.headers.get("Content-Range", ""))[1]
        if err.code == 416 and have:
            if total == have:
                return  # the earlier attempt already had every byte
            _discard(part)
            raise _Interrupted("the server would not resume the partial file, restarting from zero") from None
        raise DownloadError(
            f"{url}: HTTP {err.code} {err.reason}. {_status_advice(err.code)}; then run `{hint}`"
        ) from None
    except URLError as err:
        host = urlsplit(url).netloc
        raise DownloadError(
            f"could not reach {host} to download {url} ({err.reason}). Check the network or proxy "
            f"(https_proxy), or point --base-url / ${BASE_URL_ENV} at a mirror, then run `{hint}`"
        ) from None
    except (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise _Interrupted(f"no response ({type(err).__name__}: {err})") from None
    with response:
        if response.headers.get_content_type() in _PAGE_TYPES:
            _discard(part)
            raise RejectedDownload(_html_message(url, f"Content-Type {response.headers.get('Content-Type')}"))
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                _discard(part)
                raise _Interrupted(f"the server resumed at byte {start}, not {have}; restarting from zero")
            mode = "ab"
        else:  # 200: the whole file (the server ignored the Range, or the file changed)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            meta = {
                "url": url,
                "total": total,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
        if total is not None:
            _check_space(part.parent, total - have, hint)
        with open(part, mode) as out:
            _write_meta(meta_path, meta)
            if progress:
                progress.start(have, total)
            try:
                have = _stream(response, out, have, url, part, progress)
            finally:
                if progress:
                    progress.finish(out.tell() if not out.closed else have)
    if total is not None and have < total:
        raise _Interrupted(f"the connection closed at byte {have} of {total}")
    if total is not None and have > total:
        _discard(part)
        raise RejectedDownload(
            f"{url} sent {have} bytes but announced {total}; nothing was kept. Run `{hint}` again"
        )


def _stream(response, out, have: int, url: str, part: Path, progress: Optional["_Progress"]) -> int:
    """Copy the response body into `out`; returns the bytes now in the file."""
    first = have == 0
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (
            http.client.IncompleteRead,
            socket.timeout,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as err:
            out.flush()
            raise _Interrupted(
                f"the connection broke at byte {have + len(getattr(err, 'partial', b''))} ({type(err).__name__})"
            ) from None
        if not chunk:
            return have
        if first and chunk.lstrip()[:16].lower().startswith(_HTML_STARTS):
            out.close()
            _discard(part)
            raise RejectedDownload(_html_message(url, "the body starts like a web page"))
        first = False
        out.write(chunk)
        have += len(chunk)
        if progress:
            progress.update(have)


def _accept_download(entry: WeightsEntry, part: Path, final: Path, url: str) -> FetchResult:
    """Check the complete `.part` and, only if it passes, rename it to `final` and record it."""
    try:
        _check_checkpoint(entry, part)
    except CheckpointError as err:
        _discard(part)
        raise RejectedDownload(
            f"the file downloaded from {url} is not the registered MATPAC checkpoint {entry.name!r}, so it "
            f"was deleted: {err}"
        ) from None
    digest = sha256_file(part)
    recorded = read_record(final)
    for expected, source in (
        (entry.sha256, "the published sha256"),
        (recorded, f"the sha256 recorded in {record_path(final)}"),
    ):
        if expected and digest != expected:
            _discard(part)
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
        _check_checkpoint(entry, final)
        digest = sha256_file(final)
    if entry.sha256 and digest != entry.sha256:
        raise ChecksumError(
            f"{final}: sha256 {digest} is not the published {entry.sha256}; delete it and fetch again"
        )
    if recorded_now:
        write_record(final, digest)
    return FetchResult(final, digest, downloaded=False, recorded=recorded_now)


def _check_checkpoint(entry: WeightsEntry, path: Path) -> None:
    """`CheckpointError` unless `path` holds a MATPAC encoder of `entry`'s window (and head)."""
    raw = read_checkpoint(path)
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


def _content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    """`(start, total)` of a `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) header."""
    unit, _, spec = value.partition(" ")
    if unit != "bytes" or "/" not in spec:
        return None, None
    span, _, total = spec.partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None, int(total) if total.isdigit() else None)


def _status_advice(code: int) -> str:
    if code == 404:
        return "No such file on the server: the release or file name may have changed (see https://github.com/aurianworld/matpac/releases)"
    if code in (401, 403, 429):
        return "The server refused or rate-limited the request: wait a few minutes"
    if code >= 500:
        return "The server failed: try again later"
    return "Check the URL"


def _html_message(url: str, why: str) -> str:
    return (
        f"{url} returned an HTML or XML page ({why}), not a checkpoint; nothing was kept. The URL is probably "
        f"wrong, or a proxy or login page answered instead of the server: open it in a browser to see"
    )


def _check_space(folder: Path, needed: int, hint: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{folder} has {free} bytes free, the download needs {needed}: free some space, then run `{hint}`"
        )


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(path: Path, meta: dict) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(meta).encode("utf-8"))


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


class _Progress:
    """One progress line on stderr: redrawn in place on a terminal (at most 10 times a second),
    a new line every 10% otherwise (logs)."""

    def __init__(self, label: str, stream: Optional[TextIO] = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total: Optional[int] = None
        self.began, self.first, self.shown_at, self.step, self.shown = 0.0, 0, 0.0, -1, -1

    def start(self, done: int, total: Optional[int]) -> None:
        self.total, self.first, self.began = total, done, time.monotonic()
        if done:
            self.stream.write(f"{self.label}: resuming at {_mb(done)}\n")
        self.update(done)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self.shown_at >= 0.1:
                self.shown_at = now
                self.stream.write("\r" + self._line(done, now))
                self.stream.flush()
            return
        step = done * 10 // self.total if self.total else done // (50 << 20)
        if step != self.step:
            self.step, self.shown = step, done
            self.stream.write(self._line(done, now) + "\n")

    def finish(self, done: int) -> None:
        if self.tty:
            self.stream.write("\r" + self._line(done, time.monotonic()) + "\n")
        elif done != self.shown:
            self.stream.write(self._line(done, time.monotonic()) + "\n")
        self.stream.flush()

    def _line(self, done: int, now: float) -> str:
        rate = (done - self.first) / max(now - self.began, 1e-6)
        if self.total:
            return f"{self.label}: {100 * done // self.total:3d}% {_mb(done)} of {_mb(self.total)}, {_mb(rate)}/s"
        return f"{self.label}: {_mb(done)}, {_mb(rate)}/s"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"
