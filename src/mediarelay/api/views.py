"""Render on write, serve bytes on read: each task's dialect response is serialised once per version.

The engine calls `refresh` after every change; a status GET is a dict lookup returning ready bytes and
an ETag. A miss (after a restart, or a task changed by another process) loads the row once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.domain import Asset, Status, Task
from mediarelay.store.tasks import TaskRepo

MAX_VIEWS = 200_000


@dataclass(frozen=True)
class View:
    task_id: str
    public_id: str
    dialect: str
    key_id: str
    version: int
    status: Status
    etag: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class ViewCache:
    def __init__(self, dialects: Mapping[str, Dialect], repo: TaskRepo, base_url: str) -> None:
        self.dialects = dialects
        self.repo = repo
        self.base_url = base_url.rstrip("/")
        self._views: dict[str, View] = {}

    def url(self, asset: Asset) -> str:
        return f"{self.base_url}/files/{asset.key}"

    def render(self, task: Task, children: tuple[Task, ...] = ()) -> View:
        dialect = self.dialects[task.dialect]
        body = orjson.dumps(dialect.render(task, RenderContext(url=self.url, children=children)))
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        extra = dialect.status_headers(task) if dialect.status_headers else {}
        return View(
            task_id=task.id,
            public_id=task.public_id,
            dialect=task.dialect,
            key_id=task.key_id,
            version=task.version,
            status=task.status,
            etag=etag,
            body=body,
            headers=tuple((k.lower().encode(), v.encode()) for k, v in extra.items()),
        )

    async def refresh(self, task: Task) -> View:
        """Re-render a task that changed (the engine's listener)."""
        children: tuple[Task, ...] = ()
        if task.params.get("fanout"):
            children = tuple(await asyncio.to_thread(self.repo.children, task.id))
        view = self.render(task, children)
        self._put(view)
        return view

    def _put(self, view: View) -> None:
        current = self._views.get(view.public_id)
        if current is not None and current.version > view.version:
            return  # a newer version won a race with this render
        if current is None and len(self._views) >= MAX_VIEWS:
            # Evict the oldest finished entries first; they are cheap to reload on demand.
            for public_id in list(self._views)[: MAX_VIEWS // 10]:
                self._views.pop(public_id, None)
        self._views[view.public_id] = view

    def get(self, public_id: str) -> View | None:
        return self._views.get(public_id)

    async def load(self, public_id: str) -> View | None:
        """A miss: read the row once, render, cache."""
        task = await asyncio.to_thread(self.repo.by_public_id, public_id)
        if task is None:
            return None
        return await self.refresh(task)

    def drop(self, public_id: str) -> None:
        self._views.pop(public_id, None)
