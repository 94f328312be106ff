"""HTTP transfer of one file into `NAME.part`: streamed, resumable, sniffed, bounded in time.

`transfer(url, part, ...)` appends what is missing of `url` to `part` (or writes it from byte
0) and returns when the server says the file is complete. `NAME.part.json` beside it says where
the bytes came from (URL, size, ETag / Last-Modified), so a later call can resume. Whether the
complete file is kept is not decided here (`weights/download.py`).
"""

from __future__ import annotations

import http.client
import json
import shutil
import os
import socket
import stat
import sys
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO, Optional, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ..version import __version__
from ..io import atomic_write, InputError, UserError
from .registry import BASE_URL_ENV

CHUNK_BYTES = 1 << 20
USER_AGENT = f"hear-matpac/{__version__}"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


MIN_RATE_BYTES_S = 1000  # slower than this over a whole `timeout` window: stalled
_SNIFF_BYTES = 512


class DownloadError(UserError, OSError):
    """The transfer failed (network, HTTP status, disk); any partial file is kept for a resume."""


class RejectedDownload(InputError):
    """What came back is not the registered checkpoint (an HTML page, a truncated or foreign
    file, a checksum mismatch); it was deleted."""


class Interrupted(Exception):
    """The transfer stopped early; the `.part` file holds what came and can be resumed."""


def transfer(url: str, part: Path, timeout: float, progress: Optional["Progress"], hint: str) -> None:
    """Append the rest of `url` to `part`, or write it all from byte 0.

    A partial file is resumed only when it came from `url` and the server gave a validator
    that `If-Range` can carry (a strong ETag, else Last-Modified): the server then sends the
    rest of the same file or, if it changed, all of the new one. Without a validator it starts
    again from byte 0. Every response body is sniffed for an HTML page, `part` is never a link,
    and a transfer slower than `MIN_RATE_BYTES_S` over a `timeout` window is `Interrupted`."""
    with _open_part(part, hint) as out:
        try:
            _transfer_into(out, url, part, timeout, progress, hint)
        finally:
            if not out.closed:
                out.flush()
                if os.fstat(out.fileno()).st_size == 0:
                    discard(part)  # nothing came: no partial file to keep


def _transfer_into(
    out: BinaryIO, url: str, part: Path, timeout: float, progress: Optional["Progress"], hint: str
) -> None:
    meta_path = part.with_name(part.name + ".json")
    meta = _read_meta(meta_path)
    have = os.fstat(out.fileno()).st_size
    validator = _validator(meta.get("etag"), meta.get("last_modified")) if meta.get("url") == url else None
    if validator is None:
        have = 0  # left by another URL, a crash before its description, or not resumable safely
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
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
        served = _validator(response.headers.get("ETag"), response.headers.get("Last-Modified"))
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:  # includes a 206 at a non-zero offset to a request without Range
                discard(part)
                raise Interrupted(f"the server resumed at byte {start}, not {have}; restarting from zero")
            if have and served is not None and served != validator:
                discard(part)
                raise Interrupted("the server resumed a file that changed (another validator); restarting from zero")
        else:  # 200: the whole file (the server ignored the Range, or the file changed)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if have == 0:
            meta = {
                "url": url,
                "total": total,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
        if total is not None:
            _check_space(part.parent, total - have, hint)
        out.seek(have)
        out.truncate()
        _write_meta(meta_path, meta)
        if progress:
            progress.start(have, total)
        try:
            have = _stream(response, out, have, url, part, timeout, progress)
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


def _validator(etag: Optional[str], last_modified: Optional[str]) -> Optional[str]:
    """What `If-Range` may carry: a strong ETag, else Last-Modified, else None (a weak ETag
    cannot be used: RFC 9110 13.1.5)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified or None


def _refuse_links(part: Path, st: os.stat_result, hint: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        what = f"a symbolic link to {os.readlink(part)}"
    elif not stat.S_ISREG(st.st_mode):
        what = "not a plain file"
    elif st.st_nlink != 1:
        what = f"a file with {st.st_nlink} hard links"
    else:
        return
    raise DownloadError(
        f"{part} is {what}; refusing to write the download through it. Remove it, then run `{hint}`"
    )


def _open_part(part: Path, hint: str) -> BinaryIO:
    """`part`, created if missing, opened for writing without following a link planted there
    (`O_NOFOLLOW`) and checked once open: a plain file with no other hard link."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as err:
        if os.path.islink(part):
            _refuse_links(part, os.lstat(part), hint)
        raise err from None
    try:
        _refuse_links(part, os.fstat(fd), hint)
    except DownloadError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def _stream(
    response, out, have: int, url: str, part: Path, timeout: float, progress: Optional["Progress"]
) -> int:
    """Copy the response body into `out` as it comes; returns the bytes now in the file. The
    first `_SNIFF_BYTES` of every body (a resumed one too) are held back until they are sniffed
    for an HTML page. Every read returns what has come (`read1`), the first ones too, so the
    rate is checked after each: a server trickling bytes is stalled after `timeout` seconds,
    whether or not the sniffed bytes are complete."""
    window_start, window_have = time.monotonic(), have
    head: Optional[bytes] = b""  # the body's first bytes until sniffed, then None
    while True:
        try:
            chunk = response.read1(CHUNK_BYTES)
        except (
            http.client.IncompleteRead,
            socket.timeout,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as err:
            out.flush()
            raise Interrupted(f"the connection broke at byte {have} ({type(err).__name__})") from None
        if head is not None:
            head += chunk
            if chunk and len(head) < _SNIFF_BYTES:
                _check_rate(out, have + len(head), window_start, window_have, timeout)
                continue
            if head.lstrip()[:16].lower().startswith(_HTML_STARTS):
                discard(part)
                raise RejectedDownload(_html_message(url, "the body starts like a web page"))
            chunk, head = head, None
        if not chunk:
            return have
        try:
            out.write(chunk)
        except OSError as err:
            raise DownloadError(f"could not write {part} ({err.strerror}); {have} bytes are kept there") from None
        have += len(chunk)
        if progress:
            progress.update(have)
        if _check_rate(out, have, window_start, window_have, timeout):
            window_start, window_have = time.monotonic(), have


def _check_rate(out: BinaryIO, have: int, window_start: float, window_have: int, timeout: float) -> bool:
    """`Interrupted` when fewer than `MIN_RATE_BYTES_S` came per second over a window of
    `timeout` seconds; True when the window is over (start a new one)."""
    now = time.monotonic()
    if now - window_start < timeout:
        return False
    if have - window_have < MIN_RATE_BYTES_S * (now - window_start):
        out.flush()
        raise Interrupted(
            f"the transfer stalled: {have - window_have} bytes in the last {now - window_start:.0f} s, "
            f"less than {MIN_RATE_BYTES_S // 1000} KB/s"
        )
    return True


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
