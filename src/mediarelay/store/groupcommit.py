"""Group commit: the small write transactions of one process's concurrent steps, committed together.

SQLite has one writer. A step that records a poll (a new `next_run_at`, a progress point) is a tiny
transaction, but each costs a thread hop, the write lock and a commit; thousands of in-flight tasks make
hundreds a second, and they queue behind each other and behind the GIL. Here the first write starts a
drain loop; writes arriving while a batch is being committed wait for the next one, which takes them
all (up to `max_batch`). One write alone is committed at once, so a quiet node is as fast as before.
Each caller resumes only after its batch committed, so what it does next (wake clients, deliver a
webhook) never sees an uncommitted change.

A write is a function of the open connection. If the batch fails (a database error), it rolls back
as a whole and each write is retried in its own transaction, so one failing write fails alone.
PostgreSQL takes concurrent writers from its pool, so there each write simply runs in its own
transaction (no batch can deadlock another node's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from mediarelay.store.database import Database

log = logging.getLogger("mediarelay.store")

T = TypeVar("T")
Write = Callable[[Connection], Any]
Outcome = tuple[bool, Any]  # (ok, result or exception)

MAX_BATCH = 256


class GroupCommit:
    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self.batched = db.is_sqlite
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None  # held: a task nobody references may vanish

    async def run(self, write: Callable[[Connection], T]) -> T:
        """Run `write` in a write transaction (shared with concurrent ones) and return its result
        once that transaction has committed."""
        if not self.batched:
            return await asyncio.to_thread(self._alone, write)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="mediarelay-group-commit")
        return await future

    def _alone(self, write: Callable[[Connection], T]) -> T:
        with self.db.write() as conn:
            return write(conn)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                outcomes = await asyncio.to_thread(self._commit, [write for write, _ in batch])
            except BaseException as exc:  # cancelled at shutdown: nobody may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
                raise
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit(self, writes: list[Write]) -> list[Outcome]:
        if len(writes) > 1:
            try:
                with self.db.write() as conn:
                    results = [write(conn) for write in writes]
                return [(True, r) for r in results]
            except Exception:
                log.warning(
                    "a batch of %d writes failed; committing them one by one", len(writes), exc_info=True
                )
        outcomes: list[Outcome] = []
        for write in writes:
            try:
                outcomes.append((True, self._alone(write)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes
