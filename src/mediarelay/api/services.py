"""Everything a running node holds, wired from the settings in one place."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mediarelay.api.auth import Authenticator
from mediarelay.api.errors import ErrorRenderer
from mediarelay.api.status import StatusService
from mediarelay.api.views import ViewCache
from mediarelay.api.webhooks import Webhooks
from mediarelay.billing.service import Billing
from mediarelay.channels.base import ChannelDeps
from mediarelay.channels.manager import ChannelManager
from mediarelay.channels.registry import ChannelSet
from mediarelay.channels.sandbox import SANDBOX_VOICES
from mediarelay.config import ChannelSettings, Settings, config_path
from mediarelay.dialects import DIALECTS
from mediarelay.engine.inprocess import InProcessDriver
from mediarelay.engine.lifecycle import Engine
from mediarelay.engine.retention import Retention
from mediarelay.netguard import NetGuard
from mediarelay.secrets import SecretBox, open_box
from mediarelay.storage.base import Storage
from mediarelay.storage.factory import open_storage
from mediarelay.store import database
from mediarelay.store.changes import ChangeListener
from mediarelay.store.channels import ChannelRepo
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.tasks import StepQueue, TaskRepo

log = logging.getLogger("mediarelay")


class ChannelCatalog:
    """Facts the channels publish through dialect endpoints (the avatar voice list)."""

    def __init__(self, channels: ChannelSet) -> None:
        self.channels = channels

    def voices(self, language: str | None) -> list[dict[str, Any]]:
        has_sandbox = any(
            c.config.type == "sandbox" and c.config.enabled for c in self.channels.channels.values()
        )
        found = SANDBOX_VOICES if has_sandbox else []
        return [v for v in found if language is None or v["language"] == language]


def open_secrets(settings: Settings) -> SecretBox:
    """The master key (docs/security.md). Raises MasterKeyError with what to do, never a key."""
    return open_box(settings.master_key, settings.data_dir, shared=settings.uses_jobs)


def build_channels(settings: Settings, db: Database, box: SecretBox) -> tuple[ChannelSet, ChannelManager]:
    """The channels, with the one outbound fetcher (docs/channels.md), kept current by the manager.
    Stored secrets are first brought under the master key's first key (plaintext encrypted, old keys'
    tokens rotated), so a wrong key stops the start here with a clear MasterKeyError."""
    repo = ChannelRepo(db)
    if sealed := repo.seal(box):
        log.info("encrypted the stored secrets of %d channel(s) with the current master key", sealed)
    f = settings.fetch
    guard = NetGuard(
        allow_private=f.allow_private,
        allowed_hosts=f.allowed_hosts,
        timeout=f.timeout_seconds,
        max_redirects=f.max_redirects,
        user_agent="mediarelay",
    )
    channels = ChannelSet(
        [],
        ChannelDeps(
            guard=guard,
            max_result_bytes=f.max_bytes,
            fetch_timeout=f.timeout_seconds,
            data_dir=settings.data_dir.resolve(),
        ),
    )
    manager = ChannelManager(
        channels,
        repo,
        file_configs=settings.channel_configs(),
        load_file=lambda: Settings().channel_configs(),
        parse=lambda data: ChannelSettings.model_validate(data).to_config(),
        path=config_path(),
        box=box,
    )
    manager.rebuild()
    return channels, manager


@dataclass
class Services:
    settings: Settings
    db: Database
    tasks: TaskRepo
    keys: KeyRepo
    storage: Storage
    channels: ChannelSet
    engine: Engine
    driver: InProcessDriver | None
    views: ViewCache
    auth: Authenticator
    errors: ErrorRenderer
    status: StatusService
    catalog: ChannelCatalog
    webhooks: Webhooks
    billing: Billing
    channel_manager: ChannelManager
    jobs: StepQueue | None = None  # scaled-out mode: steps are procrastinate jobs (engine/jobs.py)
    run_api: bool = True  # serve clients: keep the status cache current with other nodes' changes
    run_worker: bool = True  # run background steps and webhook deliveries on this node
    job_worker: Any = None  # engine.jobs.JobWorker while running
    listener: ChangeListener | None = None
    retention: Retention | None = None  # the cleanup loop, on nodes that run background work

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        box = open_secrets(settings)  # before anything else: a missing shared key must stop the start
        database.upgrade(settings.db_url)
        db = Database(settings.db_url)
        b = settings.billing
        billing = Billing(
            db,
            settings.prices,
            b.default_price,
            default_seconds=b.default_seconds,
            idempotency_hours=b.idempotency_hours,
            currency=b.currency,
        )
        jobs: StepQueue | None = None
        if settings.uses_jobs:
            from mediarelay.engine.jobs import StepJobs  # PostgreSQL only: the `postgres` extra

            jobs = StepJobs()
        # Every task change moves its money, and (scaled out) defers its next step, in its transaction.
        tasks = TaskRepo(db, hooks=billing, queue=jobs)
        keys = KeyRepo(db)
        storage = open_storage(settings)
        channels, channel_manager = build_channels(settings, db, box)
        engine = Engine(
            tasks,
            channels,
            storage,
            finalize_concurrency=settings.finalize_concurrency,
            media_processes=settings.media_processes,
            claims=channel_manager.repo,
        )
        views = ViewCache({d.name: d for d in DIALECTS}, tasks, settings.base_url)
        engine.listeners.append(views.refresh)
        auth = Authenticator(keys)
        errors = ErrorRenderer(DIALECTS)
        webhooks = Webhooks(settings.webhooks, db, tasks, views, queue=jobs)
        engine.listeners.append(webhooks.on_change)  # after views.refresh
        return cls(
            settings=settings,
            db=db,
            tasks=tasks,
            keys=keys,
            storage=storage,
            channels=channels,
            engine=engine,
            driver=None,
            views=views,
            auth=auth,
            errors=errors,
            status=StatusService(auth, views, errors),
            catalog=ChannelCatalog(channels),
            webhooks=webhooks,
            billing=billing,
            channel_manager=channel_manager,
            jobs=jobs,
        )

    def ensure_admin_key(self) -> str | None:
        """Create the first admin key on first start; its secret is returned once and never again."""
        if self.keys.has_admin():
            return None
        _, secret = self.keys.create("admin", is_admin=True)
        return secret

    async def start(self) -> None:
        if self.jobs is None:
            # Embedded mode: this process is the only writer of staging, and nothing runs yet.
            if removed := self.storage.clear_staging():
                log.info("removed %d partial files left by an earlier run", removed)
            self.driver = InProcessDriver(self.engine, concurrency=self.settings.workers)
            self.driver.start()
        else:
            if self.run_api:
                self.listener = ChangeListener(
                    self.settings.db_url, self.views.remote_change, self.views.forget_all
                )
                self.listener.start()
            else:
                # A worker serves no status reads: do not fill a cache nobody reads.
                self.engine.listeners.remove(self.views.refresh)
            if self.run_worker:
                from mediarelay.engine.jobs import CLEANUP_TICK, JobWorker, StepJobs

                assert isinstance(self.jobs, StepJobs)
                self.webhooks.start(loop=False)  # deliveries are jobs too
                retention = self.make_retention()  # cleanup is a periodic job too
                self.job_worker = JobWorker(
                    self.settings.db_url,
                    self.engine,
                    self.jobs,
                    self.webhooks.deliver_task,
                    self.webhooks.repo,
                    concurrency=self.settings.workers,
                    webhook_concurrency=self.settings.webhooks.concurrency,
                    cleanup=lambda timestamp: retention.tick(timestamp, CLEANUP_TICK),
                )
                await self.job_worker.start()
        if self.run_worker and self.jobs is None:
            self.webhooks.start()
        if self.run_worker and self.jobs is None:
            self.retention = self.make_retention()
            self.retention.start()
        self.billing.start()
        self.channel_manager.start()

    def make_retention(self) -> Retention:
        """Retention sweeps (docs/operations.md#retention): embedded, a loop beside the driver that tells
        this node's views directly; scaled out, run by the periodic cleanup job on one worker at a time,
        and every API node hears the store's NOTIFY."""
        r = self.settings.retention
        embedded = self.jobs is None
        return Retention(
            self.tasks,
            self.storage,
            files_days=r.files_days,
            tasks_days=r.tasks_days,
            interval_seconds=r.interval_seconds,
            batch=r.batch,
            changed=self.views.refresh if embedded else None,
            removed=(lambda task: self.views.drop(task.id)) if embedded else None,
        )

    async def stop(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
        if self.driver is not None:
            await self.driver.stop()
        if self.job_worker is not None:
            await self.job_worker.stop()
        if self.listener is not None:
            await self.listener.stop()
        await self.webhooks.stop()
        await self.billing.stop()
        await self.channel_manager.stop()
        if self.channels.deps.guard is not None:
            await self.channels.deps.guard.aclose()
        self.engine.close()
        await asyncio.to_thread(self.db.dispose)
        log.info("mediarelay stopped: background steps left resumable in the database")
