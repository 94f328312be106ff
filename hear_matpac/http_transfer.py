"""HTTP transfer of one file into `NAME.part`: streamed, resumable, sniffed, bounded in time.

`transfer(url, part, ...)` appends what is missing of `url` to `part` (or writes it from byte
0) and returns when the server says the file is complete. `NAME.part.json` beside it says where
the bytes came from (URL, size, ETag / Last-Modified), so a later call can resume. Whether the
complete file is kept is not decided here (`download.py`).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from . import __version__
from .atomic import atomic_write
from .registry import BASE_URL_ENV

CHUNK_BYTES = 1 << 20
USER_AGENT = f"hear-matpac/{__version__}"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


class DownloadError(OSError):
    """The transfer failed (network, HTTP status, disk); any partial file is kept for a resume."""


class RejectedDownload(ValueError):
    """What came back is not the registered checkpoint (an HTML page, a truncated or foreign
    file, a checksum mismatch); it was deleted."""


class Interrupted(Exception):
    """The transfer stopped early; the `.part` file holds what came and can be resumed."""


def transfer(url: str, part: Path, timeout: float, progress: Optional["Progress"], hint: str) -> None:
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
            discard(part)
            raise Interrupted("the server would not resume the partial file, restarting from zero") from None
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
        raise Interrupted(f"no response ({type(err).__name__}: {err})") from None
    with response:
        if response.headers.get_content_type() in _PAGE_TYPES:
            discard(part)
            raise RejectedDownload(_html_message(url, f"Content-Type {response.headers.get('Content-Type')}"))
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                discard(part)
                raise Interrupted(f"the server resumed at byte {start}, not {have}; restarting from zero")
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
        raise Interrupted(f"the connection closed at byte {have} of {total}")
    if total is not None and have > total:
        discard(part)
        raise RejectedDownload(
            f"{url} sent {have} bytes but announced {total}; nothing was kept. Run `{hint}` again"
        )


def _stream(response, out, have: int, url: str, part: Path, progress: Optional["Progress"]) -> int:
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
            raise Interrupted(
                f"the connection broke at byte {have + len(getattr(err, 'partial', b''))} ({type(err).__name__})"
            ) from None
        if not chunk:
            return have
        if first and chunk.lstrip()[:16].lower().startswith(_HTML_STARTS):
            out.close()
            discard(part)
            raise RejectedDownload(_html_message(url, "the body starts like a web page"))
        first = False
        out.write(chunk)
        have += len(chunk)
        if progress:
            progress.update(have)


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


def discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


class Progress:
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
