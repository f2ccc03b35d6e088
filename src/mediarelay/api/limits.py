"""Request body limits: an oversized body gets 413 in the caller's dialect before any handler runs."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediarelay.api.errors import ErrorRenderer
from mediarelay.domain import ErrorKind, MediarelayError


class BodyLimit:
    def __init__(self, app: ASGIApp, errors: ErrorRenderer, max_bytes: int) -> None:
        self.app = app
        self.errors = errors
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, send: Send) -> None:
        err = MediarelayError(ErrorKind.TOO_LARGE, f"request body larger than {self.max_bytes} bytes")
        _, body = self.errors.body(scope["path"], err)
        await send(
            {
                "type": "http.response.start",
                "status": 413,  # whatever the dialect does for other errors
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, send)
                return
        # Buffer the (bounded) body so a lying or absent Content-Length cannot get past the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(_json_by_default(scope, body), replayed(body, receive), send)


def replayed(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the inner app a body already read, then passes on what follows."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _json_by_default(scope: Scope, body: bytes) -> Scope:
    """Treat a JSON-looking body as JSON when the client sent no (or a form) content type.

    The providers accept `curl -d '{...}'` (which says x-www-form-urlencoded); so must we.
    """
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    if body.lstrip()[:1] in (b"{", b"[") and (
        not ctype or ctype.startswith(b"application/x-www-form-urlencoded")
    ):
        return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
    return scope
