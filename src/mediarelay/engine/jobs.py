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
rows written by older versions or by hand). Cleanup (staging files of killed steps, retention) is the
periodic job `mediarelay.cleanup`: every worker's deferrer proposes each 10 s tick and procrastinate
keeps one job per tick, so exactly one live worker cleans up each time.

Webhook deliveries are jobs too (`mediarelay.webhook`, on their own queue and worker slots), one per
task with pending events (`lock = queueing_lock = "webhook:" + task id`, so a task's events go out in
order), deferred in the transaction that writes the outbox row. The outbox row stays the truth: a job
delivers the task's due event with the same lease and record as the embedded delivery loop, then defers
itself again for the next attempt or event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
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
from mediarelay.store.webhooks import WebhookRepo

log = logging.getLogger("mediarelay.jobs")

QUEUE = "mediarelay"
WEBHOOK_QUEUE = "mediarelay-webhooks"  # its own worker slots: a slow receiver never holds up a step
EARLY_MS = 50  # a job this close to its task's next_run_at runs the step
STAGING_MAX_AGE = 3600.0  # a staging file this old belongs to no running step (downloads time out sooner)
STAGING_SWEEP_SECONDS = 600.0
STEP = "mediarelay.step"
WEBHOOK = "mediarelay.webhook"
CLEANUP = "mediarelay.cleanup"
CLEANUP_TICK = 10  # seconds between cleanup jobs (one per tick deployment-wide: procrastinate periodic)
WEBHOOK_LOCK = "webhook:"  # + task id: one delivery job per task, so its events go out in order

_MOVE_EARLIER = text(
    """
    UPDATE procrastinate_jobs
       SET scheduled_at = CASE WHEN scheduled_at IS NULL OR scheduled_at <= :at THEN scheduled_at ELSE :at END
     WHERE queueing_lock = :lock AND status = 'todo'
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
_WEBHOOKS_WITHOUT_JOB = text(
    """
    SELECT e.task_id, min(e.next_attempt_at) FROM webhook_events e
     WHERE e.state = 'pending'
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.queueing_lock = 'webhook:' || e.task_id AND j.status = 'todo')
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.lock = 'webhook:' || e.task_id AND j.status = 'doing')
     GROUP BY e.task_id
     LIMIT :limit
    """
)
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
        self._defer(conn, STEP, QUEUE, task_id, task_id, at)

    def webhook_due(self, conn: Connection, task_id: str, at: int) -> None:
        self._defer(conn, WEBHOOK, WEBHOOK_QUEUE, WEBHOOK_LOCK + task_id, task_id, at)

    def _defer(self, conn: Connection, name: str, queue: str, lock: str, task_id: str, at: int) -> None:
        """Defer the job `name` for a task at `at`, or move its waiting job earlier."""
        when = _at(at)
        if conn.execute(_MOVE_EARLIER, {"at": when, "lock": lock}).rowcount:
            return
        job = Job(
            id=None,
            queue=queue,
            lock=lock,
            queueing_lock=lock,
            task_name=name,
            task_kwargs={"task_id": task_id},
            scheduled_at=when,
        )
        try:
            with conn.begin_nested():  # a savepoint: a lost race must not abort the caller's transaction
                self._manager.batch_defer_jobs([job], connection=conn.connection.driver_connection)
        except (job_errors.AlreadyEnqueued, job_errors.UniqueViolation):
            conn.execute(_MOVE_EARLIER, {"at": when, "lock": lock})

    def ensure(self, db: Database, task_id: str) -> None:
        """Give an active task with a next step a job (or move its job to that time)."""
        with db.write() as conn:
            at = conn.execute(_NEXT_RUN, {"task_id": task_id, "active": ACTIVE_STATUSES}).scalar()
            if at is not None:
                self.due(conn, task_id, int(at))

    def ensure_webhook(self, db: Database, task_id: str, at: int | None) -> None:
        """Give a task whose next webhook event is due at `at` a delivery job (None: nothing pending)."""
        if at is not None:
            with db.write() as conn:
                self.webhook_due(conn, task_id, at)

    def reconcile(self, db: Database, limit: int = 1000) -> int:
        """Jobs for active tasks, and for pending webhook events, that have none; returns how many."""
        with db.write() as conn:
            rows = conn.execute(_WITHOUT_JOB, {"limit": limit, "active": ACTIVE_STATUSES}).all()
            for task_id, at in rows:
                self.due(conn, task_id, int(at))
            hooks = conn.execute(_WEBHOOKS_WITHOUT_JOB, {"limit": limit}).all()
            for task_id, at in hooks:
                self.webhook_due(conn, task_id, int(at))
        return len(rows) + len(hooks)


def build_app(
    url: str,
    step: Callable[[str], Awaitable[None]],
    deliver: Callable[[str], Awaitable[None]],
    cleanup: Callable[[int], Awaitable[None]],
    *,
    pool_size: int = 10,
) -> App:
    """The procrastinate app of one node, with the step, webhook and cleanup tasks bound to this node."""
    connector = PsycopgConnector(
        conninfo=psycopg_dsn(url), min_size=1, max_size=pool_size, kwargs={"application_name": "mediarelay"}
    )
    app = App(connector=connector)

    @app.task(name=STEP, queue=QUEUE, pass_context=True)
    async def run_step(context: JobContext, task_id: str) -> None:
        await step(task_id)

    @app.task(name=WEBHOOK, queue=WEBHOOK_QUEUE, pass_context=True)
    async def deliver_webhook(context: JobContext, task_id: str) -> None:
        await deliver(task_id)

    # Every worker's periodic deferrer proposes each tick; procrastinate keeps one job per tick, so
    # exactly one worker cleans up each time, whichever is alive. `lock`: never two at once.
    @app.periodic(cron=f"* * * * * */{CLEANUP_TICK}", periodic_id="cleanup")
    @app.task(name=CLEANUP, queue=QUEUE, lock=CLEANUP, pass_context=True)
    async def cleanup_job(context: JobContext, timestamp: int) -> None:
        await cleanup(timestamp)

    return app


Deliver = Callable[[str], Awaitable[int | None]]
"""Delivers a task's due webhook event, if any; returns when its next event is due (None: none)."""


class JobWorker:
    """Runs step jobs (`concurrency` at once), webhook delivery jobs (`webhook_concurrency` at once) and
    the maintenance loop until stopped."""

    def __init__(
        self,
        url: str,
        engine: Engine,
        jobs: StepJobs,
        deliver: Deliver,
        webhook_repo: WebhookRepo,
        *,
        cleanup: Callable[[int], Awaitable[None]] | None = None,
        concurrency: int = 32,
        webhook_concurrency: int = 16,
        poll_seconds: float = 0.25,
        heartbeat_seconds: float = 5.0,
        stalled_seconds: float = 15.0,
        maintenance_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.db = engine.repo.db
        self.jobs = jobs
        self._deliver = deliver
        self.webhook_repo = webhook_repo
        self._retention = cleanup
        self.app = build_app(url, self.step, self.deliver, self.cleanup, pool_size=10)
        self.concurrency = concurrency
        self.webhook_concurrency = webhook_concurrency
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stalled_seconds = stalled_seconds
        self.maintenance_seconds = maintenance_seconds
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await self.app.open_async()
        self._tasks = [
            asyncio.create_task(self._supervise(QUEUE, self.concurrency), name="mediarelay-jobs"),
            asyncio.create_task(
                self._supervise(WEBHOOK_QUEUE, self.webhook_concurrency), name="mediarelay-webhook-jobs"
            ),
            asyncio.create_task(self._maintain(), name="mediarelay-jobs-maintenance"),
        ]

    async def _supervise(self, queue: str, concurrency: int) -> None:
        """Run the procrastinate worker, and run it again whenever it stops: it stops when it loses the
        database (a restart, a failover). The new run registers as a new worker; jobs the old one could
        not finish are then stalled, and recovered by the maintenance loop."""
        while True:
            try:
                await self.app.run_worker_async(
                    queues=[queue],
                    concurrency=concurrency,
                    name=f"mediarelay-{queue}",
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

    async def cleanup(self, timestamp: int) -> None:
        """The periodic cleanup job (`timestamp`: its tick, epoch seconds): staging files of killed
        steps every STAGING_SWEEP_SECONDS, then retention (which decides itself whether it is due)."""
        if timestamp % int(STAGING_SWEEP_SECONDS) < CLEANUP_TICK:
            removed = await asyncio.to_thread(self.engine.storage.clear_staging, STAGING_MAX_AGE)
            if removed:
                log.info("removed %d partial files of stopped steps", removed)
        if self._retention is not None:
            await self._retention(timestamp)

    async def deliver(self, task_id: str) -> None:
        """One webhook job: the task's due event, then a job for its next one (a retry, or the next
        status change) whatever the attempt did."""
        next_at = await self._deliver(task_id)
        await asyncio.to_thread(self.jobs.ensure_webhook, self.db, task_id, next_at)

    async def _maintain(self) -> None:
        while True:
            try:
                await self.recover_stalled()
                made = await asyncio.to_thread(self.jobs.reconcile, self.db)
                if made:
                    log.info("gave %d active tasks without a job a new one", made)
            except Exception:
                log.exception("job maintenance failed")
            await asyncio.sleep(self.maintenance_seconds * random.uniform(0.8, 1.2))

    async def recover_stalled(self) -> int:
        """Jobs of workers that stopped sending heartbeats: fail them, and give their tasks new ones.
        (A webhook attempt cut short keeps its lease: the new job runs when that lease ends.)"""
        recovered = 0
        for queue, name in ((QUEUE, STEP), (WEBHOOK_QUEUE, WEBHOOK)):
            stalled = list(
                await self.app.job_manager.get_stalled_jobs(
                    queue=queue, task_name=name, seconds_since_heartbeat=self.stalled_seconds
                )
            )
            for job in stalled:
                assert job.id is not None
                await self.app.job_manager.finish_job_by_id_async(job.id, JobStatus.FAILED, delete_job=True)
                task_id = str(job.task_kwargs["task_id"])
                if name == STEP:
                    await asyncio.to_thread(self.jobs.ensure, self.db, task_id)
                else:
                    await self.deliver_later(task_id)
            recovered += len(stalled)
        if recovered:
            log.warning("recovered %d jobs of a stalled worker", recovered)
        return recovered

    async def deliver_later(self, task_id: str) -> None:
        """A delivery job for the task's next pending event, when it is due."""
        at = await asyncio.to_thread(self.webhook_repo.next_due_at, task_id)
        await asyncio.to_thread(self.jobs.ensure_webhook, self.db, task_id, at)
