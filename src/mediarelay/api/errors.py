"""Errors in the caller's dialect: the path decides the envelope, wherever the error was raised."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mediarelay.dialects.base import Dialect
from mediarelay.dialects.common import openai_style_error, validation_error
from mediarelay.domain import NUL_MESSAGE, ErrorKind, MediarelayError, contains_nul, invalid

log = logging.getLogger("mediarelay.api")


HTTP_KINDS = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.INVALID_REQUEST,
    409: ErrorKind.CONFLICT,
    413: ErrorKind.TOO_LARGE,
    429: ErrorKind.RATE_LIMITED,
}


async def refuse_nul(request: Request) -> None:
    """A router dependency: no NUL character in the path, the query or a JSON body (see `contains_nul`).
    Multipart bodies are left to the route, which reads their text fields without buffering the files."""
    query = request.query_params.multi_items()
    if contains_nul(list(request.path_params.values())) or contains_nul(query):
        raise invalid(NUL_MESSAGE)
    if request.method in ("POST", "PUT", "PATCH") and "json" in request.headers.get("content-type", "json"):
        raw = await request.body()
        if b"\\u0000" in raw:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return  # the route answers "not valid JSON"
            if contains_nul(parsed):
                raise invalid(NUL_MESSAGE)


def openai_error(err: MediarelayError) -> tuple[int, Any]:
    """The envelope for paths no dialect owns: OpenAI's, with `param`."""
    return openai_style_error(err, with_param=True)


class ErrorRenderer:
    def __init__(self, dialects: Sequence[Dialect]) -> None:
        self.dialects = dialects

    def dialect_for(self, path: str) -> Dialect | None:
        return next((d for d in self.dialects if d.owns(path)), None)

    def body(self, path: str, err: MediarelayError) -> tuple[int, bytes]:
        dialect = self.dialect_for(path)
        status, payload = dialect.error(err) if dialect else openai_error(err)
        return status, orjson.dumps(payload)

    def response(self, path: str, err: MediarelayError, headers: dict[str, str] | None = None) -> Response:
        status, body = self.body(path, err)
        headers = {**err.headers, **(headers or {})}
        return Response(body, status_code=status, media_type="application/json", headers=headers or None)

    def install(self, app: FastAPI) -> None:
        async def on_mediarelay(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, MediarelayError)
            return self.response(request.url.path, exc)

        async def on_validation(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, RequestValidationError)
            return self.response(request.url.path, validation_error(list(exc.errors())))

        async def on_http(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            kind = HTTP_KINDS.get(exc.status_code, ErrorKind.INTERNAL)
            message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
            status, body = self.body(request.url.path, MediarelayError(kind, message))
            status = 405 if exc.status_code == 405 else status
            return Response(body, status_code=status, media_type="application/json", headers=exc.headers)

        async def on_crash(request: Request, exc: Exception) -> Response:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return self.response(request.url.path, MediarelayError(ErrorKind.INTERNAL, "internal error"))

        app.add_exception_handler(MediarelayError, on_mediarelay)
        app.add_exception_handler(RequestValidationError, on_validation)
        app.add_exception_handler(HTTPException, on_http)
        app.add_exception_handler(Exception, on_crash)
