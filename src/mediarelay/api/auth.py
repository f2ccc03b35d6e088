"""API-key authentication with a short-lived in-memory cache, so the status hot path never hits the database.

A revoked key stops working within `ttl` seconds on every node.
"""

from __future__ import annotations

import asyncio
import time

from mediarelay.domain import ErrorKind, MediarelayError
from mediarelay.store.keys import ApiKey, KeyRepo, hash_key

MAX_CACHED = 100_000


def extract_secret(header: str | None, *, bare_ok: bool) -> str | None:
    """The key from an Authorization header: `Bearer <key>`, or the bare key where the dialect allows it."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    if bare_ok and not rest:
        return scheme
    return None


UNAUTHORIZED = MediarelayError(ErrorKind.UNAUTHORIZED, "missing or invalid API key")


class Authenticator:
    def __init__(self, keys: KeyRepo, *, ttl: float = 5.0) -> None:
        self.keys = keys
        self.ttl = ttl
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    def cached(self, secret: str) -> ApiKey | bool | None:
        """The cached answer for a secret: a key, None (known bad), or False (not cached: ask `lookup`)."""
        hit = self._cache.get(hash_key(secret))
        if hit is None or hit[1] < time.monotonic():
            return False
        return hit[0]

    async def lookup(self, secret: str) -> ApiKey | None:
        key = await asyncio.to_thread(self.keys.by_secret, secret)
        if key is not None and not key.active:
            key = None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[hash_key(secret)] = (key, time.monotonic() + self.ttl)
        return key

    async def require(self, header: str | None, *, bare_ok: bool = False) -> ApiKey:
        secret = extract_secret(header, bare_ok=bare_ok)
        if secret is None:
            raise UNAUTHORIZED
        found = self.cached(secret)
        key = await self.lookup(secret) if found is False else found
        if not isinstance(key, ApiKey):
            raise UNAUTHORIZED
        return key

    def forget(self) -> None:
        self._cache.clear()
