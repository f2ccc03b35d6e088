"""Submitting through servers that are being killed: the client of both crash tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx


async def post_until_accepted(
    client: httpx.AsyncClient,
    url: Callable[[int], str],
    body: Any,
    headers: dict[str, str],
    *,
    attempts: int,
    pause: float,
) -> tuple[int, httpx.Response]:
    """POST `body` to `url(attempt)` until a server answers below 500: a refused connection or a 5xx is
    retried after `pause` with the same headers (the same Idempotency-Key, so an attempt that reached
    the database is not made twice). Returns the attempt that got through and its 200 answer."""
    for attempt in range(attempts):
        try:
            r = await client.post(url(attempt), json=body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(pause)
            continue
        if r.status_code >= 500:
            await asyncio.sleep(pause)
            continue
        assert r.status_code == 200, r.text
        return attempt, r
    raise AssertionError(f"never accepted after {attempts} attempts: {body!r}")
