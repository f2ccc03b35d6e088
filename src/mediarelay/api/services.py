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
from mediarelay.channels.registry import ChannelSet
from mediarelay.channels.sandbox import SANDBOX_VOICES
from mediarelay.config import Settings
from mediarelay.dialects import DIALECTS
from mediarelay.engine.inprocess import InProcessDriver
from mediarelay.engine.lifecycle import Engine
from mediarelay.storage.local import LocalStorage
from mediarelay.store import database
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.tasks import TaskRepo

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


@dataclass
class Services:
    settings: Settings
    db: Database
    tasks: TaskRepo
    keys: KeyRepo
    storage: LocalStorage
    channels: ChannelSet
    engine: Engine
    driver: InProcessDriver | None
    views: ViewCache
    auth: Authenticator
    errors: ErrorRenderer
    status: StatusService
    catalog: ChannelCatalog
    webhooks: Webhooks

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database.upgrade(settings.db_url)
        db = Database(settings.db_url)
        tasks = TaskRepo(db)
        keys = KeyRepo(db)
        storage = LocalStorage(settings.files_dir)
        channels = ChannelSet(settings.channel_configs())
        engine = Engine(tasks, channels, storage, finalize_concurrency=settings.finalize_concurrency)
        views = ViewCache({d.name: d for d in DIALECTS}, tasks, settings.base_url)
        engine.listeners.append(views.refresh)
        auth = Authenticator(keys)
        errors = ErrorRenderer(DIALECTS)
        webhooks = Webhooks(settings.webhooks, db, tasks, views)
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
        )

    def ensure_admin_key(self) -> str | None:
        """Create the first admin key on first start; its secret is returned once and never again."""
        if self.keys.has_admin():
            return None
        _, secret = self.keys.create("admin", is_admin=True)
        return secret

    async def start(self) -> None:
        # Embedded mode: this process is the only writer of staging, and nothing runs yet.
        if removed := self.storage.clear_staging():
            log.info("removed %d partial files left by an earlier run", removed)
        self.driver = InProcessDriver(self.engine, concurrency=self.settings.workers)
        self.driver.start()
        self.webhooks.start()

    async def stop(self) -> None:
        if self.driver is not None:
            await self.driver.stop()
        await self.webhooks.stop()
        await asyncio.to_thread(self.db.dispose)
