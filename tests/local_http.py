"""A small HTTP file server on 127.0.0.1 for download tests: supports Range / If-Range, records
every request, and misbehaves on demand (cut the connection, answer with an HTML page, send a
weak or no validator, answer 206 to a request without Range, trickle the body)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>404</body></html>\n"


@dataclass
class Seen:
    path: str
    range: Optional[str]
    if_range: Optional[str]


@dataclass
class FileServer:
    """`files`: URL path -> bytes. `cut_after`: URL path -> body bytes sent before the connection
    is dropped (once). `html`: URL paths answered 200 with `Content-Type: text/html`.
    `html_body`: URL paths whose body is an HTML page sent as application/octet-stream.
    `validator`: what identifies a version of a file: "strong" (an ETag), "weak" (a `W/` ETag),
    "weak+date" (a weak ETag and Last-Modified), "date" (Last-Modified only) or "none".
    `partial_always`: URL paths answered 206 with the whole file even without Range.
    `html_on_resume`: URL paths whose Range requests get 206 with an HTML page typed
    application/octet-stream. `trickle`: URL path -> body bytes sent at once, the rest one byte
    every `trickle_every` seconds (20 ms by default; at most 10 s)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    html: set[str] = field(default_factory=set)
    html_body: set[str] = field(default_factory=set)
    validator: str = "strong"
    partial_always: set[str] = field(default_factory=set)
    html_on_resume: set[str] = field(default_factory=set)
    trickle: dict[str, int] = field(default_factory=dict)
    trickle_every: float = 0.02
    requests: list[Seen] = field(default_factory=list)

    def __enter__(self) -> "FileServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread for long

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(
                    Seen(self.path, self.headers.get("Range"), self.headers.get("If-Range"))
                )
                if self.path in server.html:
                    return self._send(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
                if self.path in server.html_body:
                    return self._send(200, HTML_PAGE, {"Content-Type": "application/octet-stream"})
                data = server.files.get(self.path)
                if data is None:
                    return self._send(404, HTML_PAGE, {"Content-Type": "text/html"})
                digest = hashlib.sha256(data).hexdigest()
                headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
                versions = {
                    "strong": {"ETag": f'"{digest[:16]}"'},
                    "weak": {"ETag": f'W/"{digest[:16]}"'},
                    "weak+date": {"ETag": f'W/"{digest[:16]}"', "Last-Modified": _date(digest)},
                    "date": {"Last-Modified": _date(digest)},
                    "none": {},
                }[server.validator]
                headers.update(versions)
                strong = versions.get("ETag") if server.validator == "strong" else versions.get("Last-Modified")
                start = _range_start(self.headers.get("Range"))
                if_range = self.headers.get("If-Range")
                if start is not None and self.path in server.html_on_resume:
                    end = start + len(HTML_PAGE) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, HTML_PAGE, headers)
                if start is None and self.path in server.partial_always:
                    headers["Content-Range"] = f"bytes 0-{len(data) - 1}/{len(data)}"
                    return self._send(206, data, headers)
                if start is not None and (if_range is None or if_range == strong):
                    if start >= len(data):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._send(206, data[start:], headers)
                self._send(200, data, headers)

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                slow = server.trickle.get(self.path)
                if slow is not None:
                    return self._trickle(body, slow)
                cut = server.cut_after.pop(self.path, None)
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _trickle(self, body: bytes, fast: int) -> None:
                try:
                    self.wfile.write(body[:fast])
                    self.wfile.flush()
                    deadline = time.monotonic() + 10
                    for i in range(fast, len(body)):
                        if time.monotonic() > deadline:
                            break
                        time.sleep(server.trickle_every)
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up early (a refused or stalled download): not news


def _range_start(value: Optional[str]) -> Optional[int]:
    if not value or not value.startswith("bytes=") or not value.endswith("-"):
        return None
    start = value[len("bytes=") : -1]
    return int(start) if start.isdigit() else None


def _date(digest: str) -> str:
    """A Last-Modified date that changes with the file's contents."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(1_600_000_000 + int(digest[:6], 16)))


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
