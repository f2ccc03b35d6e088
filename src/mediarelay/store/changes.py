"""Task changes announced across nodes over PostgreSQL LISTEN/NOTIFY (scaled-out mode).

A worker's write must reach the API node that holds a client's long-poll, SSE stream or cached status
bytes. The store sends `pg_notify` inside the transaction of the change, so PostgreSQL delivers it on
commit and never for a rolled-back change; each API node keeps one listening connection. Notifications
are lost while that connection is down, so a (re)connect tells the node to forget what it cached.
SQLite (one process) needs none of this: the engine's listeners see every change directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection, text

log = logging.getLogger("mediarelay.changes")

CHANNEL = "mediarelay_task"
DELETED = -1  # the version announced for a deleted task


def publish(conn: Connection, task_id: str, version: int) -> None:
    """Announce `task_id` at `version` when the current transaction commits (PostgreSQL only)."""
    payload = f"{task_id} {version}"
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


def parse(payload: str) -> tuple[str, int] | None:
    task_id, _, version = payload.partition(" ")
    try:
        return task_id, int(version)
    except ValueError:
        return None


def psycopg_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (`postgresql+psycopg://…` → `postgresql://…`)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class ChangeListener:
    """Feeds every announced change to `on_change(task_id, version)`; calls `on_reset()` whenever the
    listening connection is (re)established, since changes made while it was down were not heard."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[str, int], Awaitable[None]],
        on_reset: Callable[[], None],
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self.dsn = psycopg_dsn(url)
        self.on_change = on_change
        self.on_reset = on_reset
        self.retry_seconds = retry_seconds
        self.connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="mediarelay-listen")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for handler in list(self._handlers):
            handler.cancel()

    async def _run(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.on_reset()
                    self.connected.set()
                    async for note in conn.notifies():
                        found = parse(note.payload)
                        if found is not None:
                            self._handle(*found)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change listener lost its connection (%s); reconnecting", exc)
            self.connected.clear()
            await asyncio.sleep(self.retry_seconds)

    def _handle(self, task_id: str, version: int) -> None:
        handler = asyncio.create_task(self._call(task_id, version))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _call(self, task_id: str, version: int) -> None:
        try:
            await self.on_change(task_id, version)
        except Exception:
            log.exception("handling the change of %s failed", task_id)
