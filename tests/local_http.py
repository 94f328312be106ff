"""A small HTTP file server on 127.0.0.1 for download tests: supports Range / If-Range, records
every request, and misbehaves on demand (cut the connection, answer with an HTML page)."""

from __future__ import annotations

import hashlib
import socket
import threading
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
    `html_body`: URL paths whose body is an HTML page sent as application/octet-stream."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    html: set[str] = field(default_factory=set)
    html_body: set[str] = field(default_factory=set)
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
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                headers = {"Content-Type": "application/octet-stream", "ETag": etag, "Accept-Ranges": "bytes"}
                start = _range_start(self.headers.get("Range"))
                if_range = self.headers.get("If-Range")
                if start is not None and (if_range is None or if_range == etag):
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
                cut = server.cut_after.pop(self.path, None)
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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


def _range_start(value: Optional[str]) -> Optional[int]:
    if not value or not value.startswith("bytes=") or not value.endswith("-"):
        return None
    start = value[len("bytes=") : -1]
    return int(start) if start.isdigit() else None


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
