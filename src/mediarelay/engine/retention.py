"""Retention: result files and task rows of finished tasks are removed once they are old enough.

Two independent sweeps, each in batches, keyed on `status` and `finished_at` only, so any number of
workers may run them at once (a row another worker already handled simply is not found again):

- files (`files_days`): a finished task's asset rows are deleted and its version bumped in one
  transaction (announced to other nodes like any change), so status answers stop listing the files;
  only then are the files removed from storage (a crash in between leaves files nobody refers to, never
  a status answer pointing at a missing file).
- tasks (`tasks_days`): finished top-level tasks go with their children, events, assets and webhook rows
  through `TaskRepo.delete` (the DELETE endpoints' path), then their files. The ledger and the tasks'
  charges stay: the books must keep adding up.

Active tasks are never touched, nor the files of a fan-out child whose batch still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, exists, select, update
from sqlalchemy.orm import aliased

from mediarelay.domain import TERMINAL, Task, now_ms
from mediarelay.storage.base import Storage
from mediarelay.store.changes import publish
from mediarelay.store.schema import assets, tasks, webhook_attempts, webhook_events
from mediarelay.store.tasks import ACTIVE_STATUSES, TaskRepo

log = logging.getLogger("mediarelay.retention")

DAY_MS = 86_400_000
FINISHED = tuple(sorted(s.value for s in TERMINAL))
FIRST_PASS_SECONDS = 60.0  # the first pass comes soon after a start (nodes that restart often still clean)


def cutoff(now: int, days: float) -> int:
    """The `finished_at` (ms) before which a task is old enough."""
    return now - int(days * DAY_MS)


@dataclass
class FileBatch:
    """One batch of the files sweep: how many tasks lost files, which tasks changed (those and their
    finished fan-out parents, whose views embed them), and the storage keys now referenced by nothing."""

    expired: int
    changed: list[Task]
    keys: list[str]


def expire_files(repo: TaskRepo, storage: Storage, *, before: int, batch: int) -> FileBatch:
    """Delete the asset rows of up to `batch` tasks finished before `before` (ms), bump those tasks'
    versions in the same transaction, then delete the files. Blocking."""
    parent = aliased(tasks)
    running_batch = exists().where(parent.c.id == tasks.c.parent_id, parent.c.status.in_(ACTIVE_STATUSES))
    query = (
        select(tasks.c.id)
        .where(
            tasks.c.status.in_(FINISHED),
            tasks.c.finished_at < before,
            exists().where(assets.c.task_id == tasks.c.id),
            ~running_batch,
        )
        .order_by(tasks.c.finished_at)
        .limit(batch)
        .with_for_update(skip_locked=True, of=tasks)  # PostgreSQL: workers take different rows
    )
    now = now_ms()
    with repo.db.write() as conn:
        ids = [r[0] for r in conn.execute(query).all()]
        if not ids:
            return FileBatch(0, [], [])
        # Only what this transaction really deleted counts: a concurrent sweep may have taken some.
        gone = conn.execute(
            delete(assets).where(assets.c.task_id.in_(ids)).returning(assets.c.task_id, assets.c.key)
        ).all()
        expired = sorted({r[0] for r in gone})
        parents = [
            r[0]
            for r in conn.execute(
                select(tasks.c.parent_id)
                .distinct()
                .where(tasks.c.id.in_(expired), tasks.c.parent_id.is_not(None))
            ).all()
        ]
        finished_parents = [
            r[0]
            for r in conn.execute(
                select(tasks.c.id).where(tasks.c.id.in_(parents), tasks.c.status.in_(FINISHED))
            ).all()
        ]
        changed_ids = expired + finished_parents
        if changed_ids:
            conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(changed_ids))
                .values(version=tasks.c.version + 1, updated_at=now)
            )
        changed = repo._load(conn, changed_ids)  # as this transaction left them
        if repo.announce:
            for task in changed:
                publish(conn, task.id, task.version)
    keys = [str(r[1]) for r in gone]
    for key in keys:
        storage.remove(key)
    return FileBatch(len(expired), changed, keys)


def expire_tasks(repo: TaskRepo, storage: Storage, *, before: int, batch: int) -> list[Task]:
    """Delete up to `batch` top-level tasks finished before `before` (ms), with their children and every
    row of theirs (ledger and charges excepted), then their files. Returns the removed tasks. Blocking."""
    child = aliased(tasks)
    running_child = exists().where(child.c.parent_id == tasks.c.id, child.c.status.in_(ACTIVE_STATUSES))
    query = (
        select(tasks.c.id)
        .where(
            tasks.c.parent_id.is_(None),
            tasks.c.status.in_(FINISHED),
            tasks.c.finished_at < before,
            ~running_child,
        )
        .order_by(tasks.c.finished_at)
        .limit(batch)
    )
    with repo.db.read() as conn:
        ids = [r[0] for r in conn.execute(query).all()]
        candidates = repo._load(conn, ids)
        kids = [r[0] for r in conn.execute(select(tasks.c.id).where(tasks.c.parent_id.in_(ids))).all()]
    if not candidates:
        return []
    # Webhook rows refer to tasks without a foreign key (the DELETE endpoints keep them); here they go
    # first, so a crash before the tasks' own deletion leaves nothing that the next pass would not redo.
    with repo.db.write() as conn:
        _delete_webhook_rows(conn, ids + kids)
    removed: list[Task] = []
    for task in candidates:
        removed.extend(repo.delete(task))  # [] when another worker was first
    for gone in removed:
        storage.remove_tree(gone.id)
        for key in gone.params.get("uploads") or ():
            storage.remove(str(key))
    return removed


def _delete_webhook_rows(conn: Connection, task_ids: Sequence[str]) -> None:
    seqs = select(webhook_events.c.seq).where(webhook_events.c.task_id.in_(task_ids))
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_seq.in_(seqs)))
    conn.execute(delete(webhook_events).where(webhook_events.c.task_id.in_(task_ids)))


Changed = Callable[[Task], Awaitable[object]]
Removed = Callable[[Task], None]


class Retention:
    """Runs both sweeps every `interval_seconds` (jittered, so workers spread out) in the background,
    off the request path; `changed`/`removed` tell this node's status cache (other nodes hear the
    store's NOTIFY)."""

    def __init__(
        self,
        repo: TaskRepo,
        storage: Storage,
        *,
        files_days: float | None,
        tasks_days: float | None,
        interval_seconds: float = 3600.0,
        batch: int = 500,
        changed: Changed | None = None,
        removed: Removed | None = None,
    ) -> None:
        self.repo = repo
        self.storage = storage
        self.files_days = files_days
        self.tasks_days = tasks_days
        self.interval_seconds = interval_seconds
        self.batch = batch
        self.changed = changed
        self.removed = removed
        self._runner: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.files_days is not None or self.tasks_days is not None

    async def run_once(self, now: int | None = None) -> tuple[int, int]:
        """One pass of both sweeps, batch after batch until done; returns (tasks that lost their files,
        tasks deleted, children included)."""
        now = now_ms() if now is None else now
        expired = deleted = 0
        if self.tasks_days is not None:  # first: files of tasks about to go need no separate pass
            before = cutoff(now, self.tasks_days)
            while True:
                removed = await asyncio.to_thread(
                    expire_tasks, self.repo, self.storage, before=before, batch=self.batch
                )
                for task in removed:
                    if self.removed is not None:
                        self.removed(task)
                deleted += len(removed)
                if not removed:  # (a batch removes its tasks' children too: count no batch sizes)
                    break
        if self.files_days is not None:
            before = cutoff(now, self.files_days)
            while True:
                done = await asyncio.to_thread(
                    expire_files, self.repo, self.storage, before=before, batch=self.batch
                )
                if self.changed is not None:
                    for task in done.changed:
                        await self.changed(task)
                expired += done.expired
                if done.expired < self.batch:
                    break
        if expired or deleted:
            log.info("retention: removed the files of %d tasks and deleted %d tasks", expired, deleted)
        return expired, deleted

    async def tick(self, timestamp: int, every: int) -> None:
        """Scaled out: the periodic cleanup job calls this every `every` seconds on one worker; a pass
        runs on the ticks that cross an `interval_seconds` boundary (every tick if shorter)."""
        interval = max(1, int(self.interval_seconds))
        if self.enabled and (interval <= every or timestamp % interval < every):
            await self.run_once(timestamp * 1000)

    def start(self) -> None:
        if self.enabled:
            self._runner = asyncio.create_task(self._loop(), name="mediarelay-retention")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    async def _loop(self) -> None:
        interval = self.interval_seconds
        await asyncio.sleep(min(interval, FIRST_PASS_SECONDS) * random.uniform(0.5, 1.0))
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
