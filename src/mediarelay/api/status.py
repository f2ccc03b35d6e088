"""The status query, shared by the fast ASGI path and the documented FastAPI routes.

key check → cached view → owner check → ready bytes (or 304). Unknown and foreign tasks get the very
same not-found answer. With `wait=N` the answer is held until it changes (or N seconds pass): relative
to the client's `If-None-Match` when it sends one, else to the answer current at arrival.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mediarelay.api.auth import UNAUTHORIZED, Authenticator, extract_secret
from mediarelay.api.errors import ErrorRenderer
from mediarelay.api.views import View, ViewCache
from mediarelay.dialects.base import Dialect
from mediarelay.domain import MediarelayError, invalid, not_found
from mediarelay.store.keys import ApiKey

JSON = b"application/json"
MAX_WAIT = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def parse_wait(value: str | None) -> float | None:
    """`wait` in seconds: a number ≥ 0; more than MAX_WAIT is capped. Raises on anything else."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise invalid("wait must be a number of seconds (0-60)", "wait") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise invalid("wait must be a number of seconds (0-60)", "wait")
    return min(seconds, MAX_WAIT)


class StatusService:
    def __init__(self, auth: Authenticator, views: ViewCache, errors: ErrorRenderer) -> None:
        self.auth = auth
        self.views = views
        self.errors = errors

    def _error(self, path: str, err: MediarelayError) -> Answer:
        status, body = self.errors.body(path, err)
        return Answer(status, [(b"content-type", JSON)], body)

    async def _lookup(self, dialect: Dialect, public_id: str) -> View | None:
        if dialect.any_task:
            return self.views.get_native(public_id) or await self.views.load_native(public_id)
        view = self.views.get(public_id) or await self.views.load(public_id)
        return view if view is not None and view.dialect == dialect.name else None

    def _current(self, dialect: Dialect, view: View) -> View:
        newer = self.views.get_native(view.task_id) if dialect.any_task else self.views.get(view.public_id)
        return newer or view

    async def _wait(self, dialect: Dialect, view: View, reference: str, seconds: float) -> View:
        """Hold until this dialect's answer differs from `reference` (an ETag) or time runs out.

        A new version can leave a dialect's answer unchanged (e.g. a dispatch while still queued);
        that is no news to this client, so it keeps waiting.
        """
        deadline = time.monotonic() + seconds
        while not view.status.terminal and view.etag in reference:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.views.draining:
                break
            await self.views.wait_change(view.task_id, view.version, remaining)
            newer = self._current(dialect, view)
            if newer is view and self.views.get_native(view.task_id) is None:
                # The cache was dropped (changes may have been missed on another node): read again.
                ident = view.task_id if dialect.any_task else view.public_id
                reread = await self._lookup(dialect, ident)
                if reread is None:
                    break  # deleted meanwhile
                newer = reread
            view = newer
        return view

    async def answer(
        self,
        dialect: Dialect,
        path: str,
        public_id: str,
        authorization: str | None,
        if_none_match: str | None,
        wait: str | None = None,
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
        try:
            wait_s = parse_wait(wait)
        except MediarelayError as err:
            return self._error(path, err)
        view = await self._lookup(dialect, public_id)
        if view is None or (view.key_id != key.id and not key.is_admin):
            return self._error(path, not_found())
        if wait_s:
            view = await self._wait(dialect, view, if_none_match or view.etag, wait_s)
        headers = [(b"etag", view.etag.encode()), (b"cache-control", b"no-cache"), *view.headers]
        if if_none_match and view.etag in if_none_match:
            return Answer(304, headers, b"")
        return Answer(200, [(b"content-type", JSON), *headers], view.body)
