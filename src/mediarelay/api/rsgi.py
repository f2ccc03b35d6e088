"""granian's native interface (RSGI) in front of the ASGI app: status GETs answered with one call.

Under ASGI every answer is two `send` messages (dicts) that granian converts back into Rust values;
on a 2-core machine that protocol alone caps a bare ASGI app well below nginx. Status queries, which
outnumber everything else by orders of magnitude, are answered here straight from the cached bytes
(`response_bytes`); every other request is handed to the ASGI app through a small adapter, so FastAPI,
the thin submit path and every middleware see plain ASGI, unchanged. The ASGI app's lifespan is run by
the caller (`serving.py`), since RSGI has none.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Protocol

from starlette.types import ASGIApp, Message

from mediarelay.api.fastpath import FastStatus
from mediarelay.api.metrics import observe
from mediarelay.logs import HEADER, new_request_id, plain_request_id, request_id

REQUEST_ID = HEADER.decode()
SMALL_BODY = 1 << 20  # bodies up to this size (by Content-Length) arrive as one ASGI message
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    """What granian passes as the RSGI scope (only what is read here)."""

    proto: str
    http_version: str
    method: str
    scheme: str
    path: str
    query_string: str
    client: str
    server: str

    @property
    def headers(self) -> Headers: ...


class RsgiFront:
    def __init__(
        self, app: ASGIApp, fast: FastStatus, series: dict[tuple[str, str, int], list[float]]
    ) -> None:
        self.app = app
        self.fast = fast
        self.series = series  # the HTTP metrics of the ASGI stack: the fast path counts into the same

    async def __call__(self, scope: Scope, proto: Any) -> None:
        if scope.proto != "http":
            proto.close(1000)  # no websocket endpoints
            return
        method = scope.method
        if method == "GET" or method == "HEAD":
            found = self.fast.match(scope.path, scope.query_string.encode("latin-1"))
            if found is not None:
                await self._status(scope, proto, method, *found)
                return
        await self._asgi(scope, proto)

    async def _status(
        self, scope: Scope, proto: Any, method: str, dialect: Any, public_id: str, wait: str | None
    ) -> None:
        """The fast path of `FastStatus`, without ASGI messages: same answer, request id and metrics."""
        start = perf_counter()
        headers = scope.headers
        rid = plain_request_id(headers.get(REQUEST_ID)) or new_request_id()
        token = request_id.set(rid)
        try:
            answer = await self.fast.status.answer(
                dialect,
                scope.path,
                public_id,
                headers.get("authorization"),
                headers.get("if-none-match"),
                wait,
            )
        finally:
            request_id.reset(token)
        out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers]
        out.append((REQUEST_ID, rid))
        # A HEAD answer keeps the body's length: hyper sends the headers only.
        proto.response_bytes(answer.status, out, b"" if answer.status == 304 else answer.body)
        observe(self.series, (method, dialect.status_path, answer.status), perf_counter() - start)

    async def _asgi(self, scope: Scope, proto: Any) -> None:
        """Run the ASGI app for this request: RSGI scope → ASGI scope, body in, answer out."""
        await AsgiExchange(scope, proto).run(self.app)


def _address(value: str) -> tuple[str, int] | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class AsgiExchange:
    """One request's ASGI `receive`/`send` over an RSGI protocol object."""

    def __init__(self, scope: Scope, proto: Any) -> None:
        self.rsgi = scope
        self.proto = proto
        self.body_done = False
        self.chunks: Any = None  # the streaming body iterator, for large or unsized bodies
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.started = False
        # A streamed answer ends when granian's transport object is freed, not when the app returns: the
        # one reference is held here and dropped as soon as the body is complete (a task of the app that
        # outlives the answer, or a reference cycle awaiting the garbage collector, would otherwise keep
        # the client waiting for the end of the body).
        self.stream: Any = None
        self.streamed = False
        self.finished = False

    def scope(self) -> dict[str, Any]:
        s = self.rsgi
        return {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": s.http_version,
            "method": s.method,
            "scheme": s.scheme,
            "path": s.path,  # percent-decoded, like ASGI's
            "raw_path": None,
            "query_string": s.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in s.headers.items()],
            "client": _address(s.client),
            "server": _address(s.server),
            "extensions": {},
            "state": {},
        }

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope(), self.receive, self.send)
        except Exception:
            if not self.started:  # what an ASGI server answers for an app that failed before answering
                self.proto.response_bytes(500, [("content-type", "text/plain")], b"Internal Server Error")
                self.finished = True
            raise
        finally:
            if self.started and not self.finished and not self.streamed:
                self.proto.response_bytes(self.status, self.headers, b"")
            self.finished = True
            self.stream = None  # ends a streamed body the app left open
        if not self.started:
            self.proto.response_bytes(500, [("content-type", "text/plain")], b"Internal Server Error")

    async def receive(self) -> Message:
        if not self.body_done:
            size = self.rsgi.headers.get("content-length")
            if self.chunks is None and size is not None and size.isdigit() and int(size) <= SMALL_BODY:
                self.body_done = True
                return {"type": "http.request", "body": await self.proto(), "more_body": False}
            if self.chunks is None:
                self.chunks = self.proto.__aiter__()
            try:
                chunk = await self.chunks.__anext__()
            except StopAsyncIteration:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": bytes(chunk), "more_body": True}
        await self.proto.client_disconnect()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response was already started")
            self.started = True
            self.status = message["status"]
            self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
            return
        if kind != "http.response.body" or self.finished:
            return
        if not self.started:
            raise RuntimeError("the response body came before its start")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not self.streamed:
            if not more:
                self.finished = True
                self.proto.response_bytes(self.status, self.headers, body)
                return
            self.stream = self.proto.response_stream(self.status, self.headers)
            self.streamed = True
        try:
            if body:
                await self.stream.send_bytes(body)
        except Exception as exc:  # granian's ProtocolClosed: the client went away
            self.finished = True
            self.stream = None
            raise OSError("the client disconnected") from exc
        if not more:
            self.finished = True
            self.stream = None  # the last reference: freeing it ends the body
