"""Admin sessions: log in once with an admin key, then an HTTP-only cookie carries a random session id.

The key itself never leaves the login request: the server keeps `sha256(session id) -> session` in
memory (a restart logs everyone out; several API nodes need sticky sessions: see docs/admin-ui.md).
Each session has a CSRF token that every POST must echo (a hidden form field, or the `X-CSRF-Token`
header htmx sends); the login form itself is protected by a double-submit cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from mediarelay.web.queries import AdminQueries

COOKIE = "mr_admin"
LOGIN_COOKIE = "mr_admin_login"
COOKIE_PATH = "/admin"
LIFETIME = 12 * 3600.0  # seconds a session lives after login
IDLE = 2 * 3600.0  # seconds without a request that end a session
RECHECK = 5.0  # seconds a session trusts its key is still active (like the API's key cache)
MAX_SESSIONS = 10_000
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Session:
    key_id: str
    key_name: str
    csrf: str
    created: float
    seen: float
    checked: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) shown once
    secret_once: tuple[str, str] | None = None  # (key id, secret) of a key just created: shown once


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, queries: AdminQueries) -> None:
        self.queries = queries
        self._by_digest: dict[str, Session] = {}

    def create(self, key_id: str, key_name: str) -> tuple[str, Session]:
        """A new session for an admin key; returns the cookie value (never stored) and the session."""
        self._expire()
        if len(self._by_digest) >= MAX_SESSIONS:
            oldest = sorted(self._by_digest.items(), key=lambda kv: kv[1].seen)[: MAX_SESSIONS // 10]
            for digest, _ in oldest:
                self._by_digest.pop(digest, None)
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(key_id, key_name, secrets.token_urlsafe(32), now, now, now)
        self._by_digest[_digest(token)] = session
        return token, session

    async def get(self, token: str | None) -> Session | None:
        """The live session for a cookie value: not expired, and its key still an active admin key."""
        if not token:
            return None
        digest = _digest(token)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.created > LIFETIME or now - session.seen > IDLE:
            self._by_digest.pop(digest, None)
            return None
        if now - session.checked > RECHECK:
            row = await asyncio.to_thread(self.queries.key_row, session.key_id)
            if row is None or row["revoked_at"] is not None or not row["is_admin"]:
                self._by_digest.pop(digest, None)
                return None
            session.checked = now
        session.seen = now
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._by_digest.pop(_digest(token), None)

    def end_key(self, key_id: str) -> None:
        """Log out every session of a revoked key at once."""
        for digest, session in list(self._by_digest.items()):
            if session.key_id == key_id:
                self._by_digest.pop(digest, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for digest, s in list(self._by_digest.items()):
            if now - s.created > LIFETIME or now - s.seen > IDLE:
                self._by_digest.pop(digest, None)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def cookie_options(request: Request) -> dict[str, Any]:
    """HTTP-only, SameSite=Strict, scoped to /admin; Secure when the page was served over HTTPS
    (directly, or behind a proxy that says so)."""
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return {
        "httponly": True,
        "samesite": "strict",
        "path": COOKIE_PATH,
        "secure": proto == "https",
    }
