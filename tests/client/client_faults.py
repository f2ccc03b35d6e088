"""A transparent HTTP relay on 127.0.0.1 in front of a real mediarelay, for faults a real server won't make.

It forwards every request unchanged and can (a) cut file answers short — send the headers with the full
Content-Length, part of the body, then drop the connection — and (b) hide the `x-mediarelay-version`
header, so the server looks like a plain aggregator of the same dialects. It logs what it relayed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "proxy-connection"}
DROP_OUT = HOP | {"content-length", "date", "server"}


@dataclass
class Relayed:
    method: str
    path: str
    headers: dict[str, str]
    status: int
    sent: int  # body bytes actually sent
    cut: bool


class FaultProxy:
    def __init__(
        self, upstream: str, *, cut_after: int | None = None, cuts: int = 1, hide_server: bool = False
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.cut_after = cut_after
        self.cuts_left = cuts if cut_after is not None else 0
        self.hide_server = hide_server
        self.log: list[Relayed] = []
        self.lock = threading.Lock()
        self.http = httpx.Client(base_url=self.upstream, timeout=90)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def relay(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def requests(self, path_part: str) -> list[Relayed]:
        return [r for r in self.log if path_part in r.path]

    def _should_cut(self, method: str, path: str, status: int, size: int) -> bool:
        is_file = path.startswith("/files/") or "/content" in path
        with self.lock:
            wanted = method == "GET" and is_file and status in (200, 206) and self.cuts_left > 0
            if wanted and self.cut_after is not None and size > self.cut_after:
                self.cuts_left -= 1
                return True
        return False

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
        request = self.http.build_request(h.command, h.path, headers=headers, content=body)
        response = self.http.send(request, stream=True)
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        out_headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in DROP_OUT]
        if self.hide_server:
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "x-mediarelay-version"]
        cut = self._should_cut(h.command, h.path, response.status_code, len(raw))
        h.send_response(response.status_code)
        for k, v in out_headers:
            h.send_header(k, v)
        h.send_header("content-length", str(len(raw)))
        h.end_headers()
        sent = 0
        if h.command != "HEAD":
            part = raw[: self.cut_after] if cut and self.cut_after is not None else raw
            h.wfile.write(part)
            h.wfile.flush()
            sent = len(part)
        self.log.append(
            Relayed(
                h.command, h.path, {k.lower(): v for k, v in headers.items()}, response.status_code, sent, cut
            )
        )
        if cut:  # drop the connection mid-body
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
