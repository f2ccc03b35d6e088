"""The status query, shared by the fast ASGI path and the documented FastAPI routes.

key check → cached view → owner check → ready bytes (or 304). Unknown and foreign tasks get the very
same not-found answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediarelay.api.auth import UNAUTHORIZED, Authenticator, extract_secret
from mediarelay.api.errors import ErrorRenderer
from mediarelay.api.views import ViewCache
from mediarelay.dialects.base import Dialect
from mediarelay.domain import MediarelayError, invalid, not_found
from mediarelay.store.keys import ApiKey

JSON = b"application/json"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class StatusService:
    def __init__(self, auth: Authenticator, views: ViewCache, errors: ErrorRenderer) -> None:
        self.auth = auth
        self.views = views
        self.errors = errors

    def _error(self, path: str, err: MediarelayError) -> Answer:
        status, body = self.errors.body(path, err)
        return Answer(status, [(b"content-type", JSON)], body)

    async def answer(
        self,
        dialect: Dialect,
        path: str,
        public_id: str,
        authorization: str | None,
        if_none_match: str | None,
    ) -> Answer:
        secret = extract_secret(authorization, bare_ok=dialect.bare_key)
        if secret is None:
            return self._error(path, UNAUTHORIZED)
        key = self.auth.cached(secret)
        if key is False:
            key = await self.auth.lookup(secret)
        if not isinstance(key, ApiKey):
            return self._error(path, UNAUTHORIZED)
        if not public_id:  # only query-style ids can be missing: a parameter error, not "no such task"
            return self._error(path, invalid(f"{dialect.status_param} is required", dialect.status_param))
        view = self.views.get(public_id) or await self.views.load(public_id)
        if view is None or view.dialect != dialect.name or (view.key_id != key.id and not key.is_admin):
            return self._error(path, not_found())
        headers = [(b"etag", view.etag.encode()), (b"cache-control", b"no-cache"), *view.headers]
        if if_none_match and view.etag in if_none_match:
            return Answer(304, headers, b"")
        return Answer(200, [(b"content-type", JSON), *headers], view.body)
