"""A thin ASGI layer for JSON submits: the happy path without the framework's routing and dependencies.

Submits are the second-hottest request after status queries. Their FastAPI routes stay the documented
and authoritative ones: anything this layer is not sure about before the first side effect (not JSON,
a NUL escape, a bad key, a body the model refuses, a header the controls refuse) is handed to them with
the body replayed, so every error keeps its exact dialect answer. From admission on (rate count,
Idempotency-Key) the layer finishes the request itself, rendering errors with the same renderer the
framework's handlers use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mediarelay.api.admission import submit_admitted
from mediarelay.api.fastpath import ROUTE_KEY
from mediarelay.api.limits import replayed
from mediarelay.api.routes import sandbox_controls, webhook_controls
from mediarelay.dialects.base import Dialect
from mediarelay.domain import ErrorKind, MediarelayError, TaskSpec
from mediarelay.store.keys import ApiKey

if TYPE_CHECKING:
    from mediarelay.api.services import Services

log = logging.getLogger("mediarelay.api")

JSON = (b"content-type", b"application/json")


class FastSubmit:
    def __init__(self, app: ASGIApp, svc: Services, dialects: Sequence[Dialect]) -> None:
        self.app = app
        self.svc = svc
        self.by_path = {d.submit_path: d for d in dialects if not d.upload_fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = self.by_path.get(scope["path"]) if scope["type"] == "http" else None
        if dialect is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return  # the client went away
        replay = replayed(body, receive)
        checked = await self._check(dialect, scope, body)
        if checked is None:
            await self.app(scope, replay, send)  # the framework answers, errors included
            return
        key, spec = checked
        scope[ROUTE_KEY] = dialect.submit_path
        try:
            payload, headers = await submit_admitted(
                self.svc, dialect, Request(scope, replay), key, lambda: spec
            )
        except MediarelayError as exc:
            await _respond(send, self.svc.errors.response(scope["path"], exc))
            return
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            err = MediarelayError(ErrorKind.INTERNAL, "internal error")
            await _respond(send, self.svc.errors.response(scope["path"], err))
            return
        raw = orjson.dumps(payload)
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [JSON, (b"content-length", str(len(raw)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    async def _check(self, dialect: Dialect, scope: Scope, body: bytes) -> tuple[ApiKey, TaskSpec] | None:
        """(key, spec) when the submit is well-formed and authorised; None: let the framework
        decide (it also answers every error). Nothing here has a side effect."""
        headers = Headers(scope=scope)
        if scope.get("query_string") or not _is_json(headers.get("content-type", "")) or b"\\u0000" in body:
            return None
        try:
            key = await self.svc.auth.require(headers.get("authorization"), bare_ok=dialect.bare_key)
            parsed = dialect.submit_model.model_validate(orjson.loads(body))
            spec = sandbox_controls(dialect.parse(parsed), headers)
            spec = webhook_controls(spec, headers, self.svc.webhooks.guard)
        except Exception:
            return None
        return key, spec


def _is_json(content_type: str) -> bool:
    """FastAPI's rule for reading a body as JSON: application/json or application/*+json."""
    main, _, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def _read(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, response: Response) -> None:
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})
