"""Group commit for submits: concurrent submits of one node are stored in one transaction.

SQLite has one writer; a transaction per submit makes every request queue for the write lock (and, in
a thread pool, for the GIL while holding it). Here the first submit starts a drain loop; every submit
arriving while a batch is being written waits for the next batch, which takes them all (up to
`MAX_BATCH`). One submit alone is written at once, so a quiet node answers as fast as before; a busy
one pays one lock, one commit and one thread hop per batch. Each submit is still acknowledged only
after its batch committed: durable when answered.
"""

from __future__ import annotations

import asyncio
import logging

from mediarelay.domain import MediarelayError, Task, TaskSpec
from mediarelay.store.tasks import Idempotency, TaskRepo

log = logging.getLogger("mediarelay.submits")

MAX_BATCH = 128

Pending = tuple[TaskSpec, str, Idempotency | None, "asyncio.Future[tuple[Task, bool]]"]


class SubmitBatcher:
    def __init__(self, repo: TaskRepo, max_batch: int = MAX_BATCH) -> None:
        self.repo = repo
        self.max_batch = max_batch
        self._pending: list[Pending] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None  # held: a task nobody references may vanish

    async def create(self, spec: TaskSpec, key_id: str, idem: Idempotency | None) -> tuple[Task, bool]:
        """Store one single-task submit (with its charge); (task, False) for an idempotent replay."""
        future: asyncio.Future[tuple[Task, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((spec, key_id, idem, future))
        if not self._draining:
            self._draining = True
            self._drainer = asyncio.create_task(self._drain(), name="mediarelay-submits")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._write(batch)
        finally:
            self._draining = False

    async def _write(self, batch: list[Pending]) -> None:
        items = [(spec, key_id, idem) for spec, key_id, idem, _ in batch]
        try:
            results = await asyncio.to_thread(self.repo.create_batch, items)
        except Exception:
            # The batch rolled back (a lost idempotency race on PostgreSQL, a database error): store each
            # submit on its own, so one bad apple fails alone.
            log.warning("a submit batch of %d failed; storing them one by one", len(batch), exc_info=True)
            for spec, key_id, idem, future in batch:
                try:
                    done = await asyncio.to_thread(self.repo.create_once, spec, key_id, idem)
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(done)
            return
        for (_, _, _, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, MediarelayError):
                future.set_exception(result)
            else:
                future.set_result(result)
