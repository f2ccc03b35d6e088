"""A thin ASGI layer in front of FastAPI for status GETs: no routing, no validation, no encoding.

Status queries outnumber everything else by orders of magnitude; they are answered from pre-rendered
bytes here and never reach the framework. Everything else passes through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from mediarelay.api.status import StatusService
from mediarelay.dialects.base import Dialect

ROUTE_KEY = "mediarelay.route"  # scope key: the route template of a request answered here (for /metrics)


class FastStatus:
    def __init__(self, app: ASGIApp, status: StatusService, dialects: Sequence[Dialect]) -> None:
        self.app = app
        self.status = status
        # "/avatar/task/{task_id}" -> prefix "/avatar/task/"; query-style paths match exactly.
        self.by_prefix: list[tuple[str, Dialect]] = []
        self.by_path: dict[str, Dialect] = {}
        for d in dialects:
            if d.status_in_path:
                prefix = d.status_path.split("{", 1)[0]
                self.by_prefix.append((prefix, d))
            else:
                self.by_path[d.status_path] = d

    def match(self, path: str, query: bytes) -> tuple[Dialect, str, str | None] | None:
        """(dialect, task id, wait) for a status GET, or None for anything else."""
        dialect = self.by_path.get(path)
        if dialect is not None:
            params = parse_qs(query.decode("latin-1"), keep_blank_values=True) if query else {}
            ids = params.get(dialect.status_param)
            return dialect, (ids[0] if ids else ""), _first(params.get("wait"))
        for prefix, dialect in self.by_prefix:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                if rest and "/" not in rest:
                    wait = _first(parse_qs(query.decode("latin-1")).get("wait")) if query else None
                    return dialect, rest, wait  # ASGI paths arrive percent-decoded
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        found = self.match(scope["path"], scope.get("query_string", b""))
        if found is None:
            await self.app(scope, receive, send)
            return
        dialect, public_id, wait = found
        scope[ROUTE_KEY] = dialect.status_path
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        answer = await self.status.answer(
            dialect, scope["path"], public_id, authorization, if_none_match, wait
        )
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" or answer.status == 304 else answer.body
        await send({"type": "http.response.body", "body": body})


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None
