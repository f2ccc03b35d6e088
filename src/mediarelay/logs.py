"""Log lines as text or as one JSON object per line, carrying the request and task they belong to.

`configure(format)` runs once per process (`mediarelay serve`, `mediarelay worker`) and routes the HTTP
servers' own loggers (uvicorn, granian) through the same handler, so with `log_format = "json"` every
line a process writes is JSON. Two context variables say what the code is working for:

- `request_id`: set by the `RequestId` ASGI layer for each HTTP request, from the client's
  `X-Request-ID` (when it is short and plain) or a new one, and echoed in the answer's `X-Request-ID`;
- `task_id`: set while the engine steps a task or delivers its webhook.

The layer sits in front of the status fast path (~20k answers a second), so it does as little as it can
when nothing is logged: one header scan, one context-variable set, one header appended; ids are a
per-process random prefix plus a counter, formatted only then. The JSON encoding happens only for
lines actually written.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import sys
import time
from typing import Any, Literal

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mediarelay_request_id", default=None)
task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mediarelay_task_id", default=None)

HEADER = b"x-request-id"
# Printable, no spaces or quotes: the id goes into headers and log lines as it is.
_PLAIN = re.compile(rb"[A-Za-z0-9._:@+=/-]{1,128}")
_PREFIX = os.urandom(5).hex()
_counter = itertools.count(1)


def plain_request_id(value: str | None) -> str | None:
    """A client's X-Request-Id when it is plain enough to log and echo as it is, else None."""
    return value if value is not None and _PLAIN.fullmatch(value.encode("latin-1", "replace")) else None


def new_request_id() -> str:
    """Unique per process start and request: 10 random hex digits, then a counter."""
    return f"{_PREFIX}-{next(_counter):x}"


class RequestId:
    """ASGI layer (pure ASGI: no BaseHTTPMiddleware, no copy of the request): request id in, out, and
    in the context of everything the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == HEADER:
                raw = value if _PLAIN.fullmatch(value) else None
                break
        rid = raw.decode() if raw is not None else new_request_id()
        header = (HEADER, raw if raw is not None else rid.encode())
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class ContextFilter(logging.Filter):
    """Stamps each record with the request and task of the code that made it (an explicit
    `extra={"task_id": …}` wins: a line about a task written outside its step)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with ms), level, logger, message, request_id and
    task_id when known, exc (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "task_id"):
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The HTTP servers' loggers: they bring handlers of their own, which must not write text in JSON mode.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "_granian", "granian", "granian.access")


def configure(fmt: Literal["text", "json"], level: int = logging.INFO) -> logging.Handler:
    """Install the one handler (stderr) on the root logger; idempotent per process."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_mediarelay", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler._mediarelay = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    if fmt == "json":
        route_server_loggers()
    return handler


def route_server_loggers() -> None:
    """Make the HTTP servers' loggers write through the root handler (call again after a server
    configured its own logging)."""
    for name in SERVER_LOGGERS:
        found = logging.getLogger(name)
        found.handlers.clear()
        found.propagate = True


# granian configures its loggers when it starts (logging.config.dictConfig): in JSON mode it is given
# this, so its lines reach the root handler instead of its own text handlers.
GRANIAN_JSON_CONFIG: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "level": "INFO", "propagate": True},
        "granian.access": {"handlers": [], "level": "INFO", "propagate": True},
    }
}
