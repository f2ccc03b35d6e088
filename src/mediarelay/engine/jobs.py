"""Scaled-out mode: every background step is a procrastinate job on PostgreSQL.

Why procrastinate: durable delayed jobs, workers on any number of machines, and stalled-job recovery,
all inside the database that already holds the tasks — PostgreSQL stays the only shared component.
The task row's `next_run_at` stays the truth; jobs are how workers learn of it.

One job per task at a time:
- `queueing_lock = task id`: at most one waiting job per task. Asking for a step again moves that job
  earlier, never later.
- `lock = task id`: a task's next job waits while its current one runs, so two workers never step the
  same task at once (procrastinate allows one `doing` job per lock; a unique index enforces it).

`StepJobs.due` is called by the task store inside the transaction of the change that makes a step due,
so a commit makes both the change and its job and a rollback neither. Each worker also runs a small
maintenance loop: jobs of a worker that stopped sending heartbeats (killed, or its machine lost) are
failed and their tasks given a fresh job, and any active task without a job gets one (a safety net for
rows written by older versions or by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector, SyncPsycopgConnector
from procrastinate import exceptions as job_errors
from procrastinate.jobs import Job
from procrastinate.jobs import Status as JobStatus
from procrastinate.manager import JobManager
from sqlalchemy import Connection, bindparam, text

from mediarelay.domain import now_ms
from mediarelay.engine.lifecycle import Engine
from mediarelay.store.changes import psycopg_dsn
from mediarelay.store.database import Database
from mediarelay.store.tasks import ACTIVE_STATUSES

log = logging.getLogger("mediarelay.jobs")

QUEUE = "mediarelay"
EARLY_MS = 50  # a job this close to its task's next_run_at runs the step
STAGING_MAX_AGE = 3600.0  # a staging file this old belongs to no running step (downloads time out sooner)
STAGING_SWEEP_SECONDS = 600.0
STEP = "mediarelay.step"

_MOVE_EARLIER = text(
    """
    UPDATE procrastinate_jobs
       SET scheduled_at = CASE WHEN scheduled_at IS NULL OR scheduled_at <= :at THEN scheduled_at ELSE :at END
     WHERE queueing_lock = :task_id AND status = 'todo'
    """
)
_WITHOUT_JOB = text(
    """
    SELECT t.id, t.next_run_at FROM tasks t
     WHERE t.status IN :active AND t.next_run_at IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.queueing_lock = t.id AND j.status = 'todo')
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.lock = t.id AND j.status = 'doing')
     ORDER BY t.next_run_at
     LIMIT :limit
    """
).bindparams(bindparam("active", expanding=True))
_NEXT_RUN = text("SELECT next_run_at FROM tasks WHERE id = :task_id AND status IN :active").bindparams(
    bindparam("active", expanding=True)
)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class StepJobs:
    """The task store's `StepQueue` on procrastinate: defer (or move earlier) a task's step job in the
    caller's transaction."""

    def __init__(self) -> None:
        # Only ever used with the caller's connection: never opened, holds no pool.
        self._manager = JobManager(SyncPsycopgConnector())

    def due(self, conn: Connection, task_id: str, at: int) -> None:
        when = _at(at)
        if conn.execute(_MOVE_EARLIER, {"at": when, "task_id": task_id}).rowcount:
            return
        job = Job(
            id=None,
            queue=QUEUE,
            lock=task_id,
            queueing_lock=task_id,
            task_name=STEP,
            task_kwargs={"task_id": task_id},
            scheduled_at=when,
        )
        try:
            with conn.begin_nested():  # a savepoint: a lost race must not abort the caller's transaction
                self._manager.batch_defer_jobs([job], connection=conn.connection.driver_connection)
        except (job_errors.AlreadyEnqueued, job_errors.UniqueViolation):
            conn.execute(_MOVE_EARLIER, {"at": when, "task_id": task_id})

    def ensure(self, db: Database, task_id: str) -> None:
        """Give an active task with a next step a job (or move its job to that time)."""
        with db.write() as conn:
            at = conn.execute(_NEXT_RUN, {"task_id": task_id, "active": ACTIVE_STATUSES}).scalar()
            if at is not None:
                self.due(conn, task_id, int(at))

    def reconcile(self, db: Database, limit: int = 1000) -> int:
        """Jobs for active tasks that have none; returns how many were made."""
        with db.write() as conn:
            rows = conn.execute(_WITHOUT_JOB, {"limit": limit, "active": ACTIVE_STATUSES}).all()
            for task_id, at in rows:
                self.due(conn, task_id, int(at))
        return len(rows)


def build_app(url: str, step: Callable[[str], Awaitable[None]], *, pool_size: int = 10) -> App:
    """The procrastinate app of one node, with the step task bound to this node's engine."""
    connector = PsycopgConnector(
        conninfo=psycopg_dsn(url), min_size=1, max_size=pool_size, kwargs={"application_name": "mediarelay"}
    )
    app = App(connector=connector)

    @app.task(name=STEP, queue=QUEUE, pass_context=True)
    async def run_step(context: JobContext, task_id: str) -> None:
        await step(task_id)

    return app


class JobWorker:
    """Runs step jobs (`concurrency` at once) and the maintenance loop until stopped."""

    def __init__(
        self,
        url: str,
        engine: Engine,
        jobs: StepJobs,
        *,
        concurrency: int = 32,
        poll_seconds: float = 0.25,
        heartbeat_seconds: float = 5.0,
        stalled_seconds: float = 15.0,
        maintenance_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.db = engine.repo.db
        self.jobs = jobs
        self.app = build_app(url, self.step, pool_size=10)
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stalled_seconds = stalled_seconds
        self.maintenance_seconds = maintenance_seconds
        self._tasks: list[asyncio.Task[Any]] = []
        self._next_cleanup = 0.0

    async def start(self) -> None:
        await self.app.open_async()
        self._tasks = [
            asyncio.create_task(self._supervise(), name="mediarelay-jobs"),
            asyncio.create_task(self._maintain(), name="mediarelay-jobs-maintenance"),
        ]

    async def _supervise(self) -> None:
        """Run the procrastinate worker, and run it again whenever it stops: it stops when it loses the
        database (a restart, a failover). The new run registers as a new worker; jobs the old one could
        not finish are then stalled, and recovered by the maintenance loop."""
        while True:
            try:
                await self.app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=self.concurrency,
                    fetch_job_polling_interval=self.poll_seconds,
                    delete_jobs="always",  # the task's own event rows are its history
                    install_signal_handlers=False,  # the node owns signals
                    update_heartbeat_interval=self.heartbeat_seconds,
                    stalled_worker_timeout=self.stalled_seconds,
                    shutdown_graceful_timeout=5,
                )
                log.warning("the job worker stopped; starting it again")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the job worker failed; starting it again")
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.app.close_async()

    async def step(self, task_id: str) -> None:
        """One job: the task's step if it is due (a job may run early after being moved), then make
        sure the task has a job for its next step, whatever the step did."""
        task = await asyncio.to_thread(self.engine.repo.get, task_id)
        if task is None or task.status.terminal or task.next_run_at is None:
            return
        if task.next_run_at <= now_ms() + EARLY_MS:
            await self.engine.step(task_id)
        await asyncio.to_thread(self.jobs.ensure, self.db, task_id)

    async def _maintain(self) -> None:
        while True:
            try:
                await self.recover_stalled()
                made = await asyncio.to_thread(self.jobs.reconcile, self.db)
                if made:
                    log.info("gave %d active tasks without a job a new one", made)
                if time.monotonic() >= self._next_cleanup:  # staging files of killed steps
                    self._next_cleanup = time.monotonic() + STAGING_SWEEP_SECONDS
                    await asyncio.to_thread(self.engine.storage.clear_staging, STAGING_MAX_AGE)
            except Exception:
                log.exception("job maintenance failed")
            await asyncio.sleep(self.maintenance_seconds * random.uniform(0.8, 1.2))

    async def recover_stalled(self) -> int:
        """Steps of workers that stopped sending heartbeats: fail those jobs, re-defer their tasks."""
        stalled = list(
            await self.app.job_manager.get_stalled_jobs(
                queue=QUEUE, task_name=STEP, seconds_since_heartbeat=self.stalled_seconds
            )
        )
        for job in stalled:
            assert job.id is not None
            await self.app.job_manager.finish_job_by_id_async(job.id, JobStatus.FAILED, delete_job=True)
            await asyncio.to_thread(self.jobs.ensure, self.db, str(job.task_kwargs["task_id"]))
        if stalled:
            log.warning("recovered %d steps of a stalled worker", len(stalled))
        return len(stalled)
