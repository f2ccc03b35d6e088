"""Render on write, serve bytes on read: each task's responses are serialised once per version.

The engine calls `refresh` after every change. It renders the task in its own dialect (keyed by public
id) and in the native view (keyed by task id), wakes long-polls waiting on the task and feeds its SSE
subscribers. A status GET is then a dict lookup returning ready bytes and an ETag. A miss (after a
restart, or a task changed by another process) loads the row once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.domain import Asset, Status, Task
from mediarelay.store.changes import DELETED
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
    def __init__(
        self, dialects: Mapping[str, Dialect], repo: TaskRepo, base_url: str, native: str = "native"
    ) -> None:
        self.dialects = dialects
        self.repo = repo
        self.base_url = base_url.rstrip("/")
        self.native = native
        self._views: dict[str, View] = {}  # public id -> the task in its own dialect
        self._natives: dict[str, View] = {}  # task id -> the native view
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[View | None]]] = {}
        # Task ids deleted while this node ran (oldest first, bounded): a render that read the row just
        # before its deletion must not put the task back in the cache after `drop`.
        self._gone: dict[str, None] = {}
        self.draining = False  # shutting down: waits and streams end at once

    def url(self, asset: Asset) -> str:
        return f"{self.base_url}/files/{asset.key}"

    def render(self, task: Task, children: tuple[Task, ...] = (), dialect_name: str | None = None) -> View:
        dialect = self.dialects[dialect_name or task.dialect]
        body = orjson.dumps(dialect.render(task, RenderContext(url=self.url, children=children)))
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        extra = dialect.status_headers(task) if dialect.status_headers else {}
        return View(
            task_id=task.id,
            public_id=task.public_id,
            dialect=dialect.name,
            key_id=task.key_id,
            version=task.version,
            status=task.status,
            etag=etag,
            body=body,
            headers=tuple((k.lower().encode(), v.encode()) for k, v in extra.items()),
        )

    async def refresh(self, task: Task) -> View:
        """Re-render a task that changed (the engine's listener); returns its own-dialect view."""
        children: tuple[Task, ...] = ()
        if task.params.get("fanout"):
            children = tuple(await asyncio.to_thread(self.repo.children, task.id))
        own = self.render(task, children)
        native = own if task.dialect == self.native else self.render(task, children, self.native)
        if self._put(own, native):
            self._notify(native)
        return own

    def _put(self, own: View, native: View) -> bool:
        """Store both views unless a newer version is already there; True when stored."""
        if own.task_id in self._gone:
            return False  # deleted while this render was under way
        current = self._natives.get(own.task_id)
        if current is not None and current.version > own.version:
            return False  # a newer version won a race with this render
        if current is None and len(self._natives) >= MAX_VIEWS:
            # Evict the oldest entries; they are cheap to reload on demand.
            for task_id in list(self._natives)[: MAX_VIEWS // 10]:
                old = self._natives.pop(task_id)
                self._views.pop(old.public_id, None)
        self._views[own.public_id] = own
        self._natives[own.task_id] = native
        return True

    def _notify(self, native: View) -> None:
        for waiter in self._waiters.pop(native.task_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        for queue in self._subscribers.get(native.task_id, ()):
            queue.put_nowait(native)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, public_id: str) -> View | None:
        return self._views.get(public_id)

    def get_native(self, ident: str) -> View | None:
        """The native view by task id, or by any dialect's public id."""
        found = self._natives.get(ident)
        if found is None and (own := self._views.get(ident)) is not None:
            found = self._natives.get(own.task_id)
        return found

    async def load(self, public_id: str) -> View | None:
        """A miss: read the row once, render, cache."""
        task = await asyncio.to_thread(self.repo.by_public_id, public_id)
        if task is None:
            return None
        return await self.refresh(task)

    async def load_native(self, ident: str) -> View | None:
        task = await asyncio.to_thread(self.repo.get, ident) if len(ident) == 26 else None
        if task is None:
            task = await asyncio.to_thread(self.repo.by_public_id, ident)
        if task is None:
            return None
        await self.refresh(task)
        return self._natives.get(task.id)

    # -- changes made on other nodes (scaled-out mode, store/changes.py) ---------------------------

    async def remote_change(self, task_id: str, version: int) -> None:
        """Another node changed (or deleted) a task: re-render it if this node holds its bytes or has
        clients waiting on it; otherwise there is nothing here to update."""
        current = self._natives.get(task_id)
        if version == DELETED:
            self.drop(task_id)
            return
        if current is not None and current.version >= version:
            return  # this node made the change itself, or already rendered a newer one
        if current is None and task_id not in self._waiters and task_id not in self._subscribers:
            return
        task = await asyncio.to_thread(self.repo.get, task_id)
        if task is not None:
            await self.refresh(task)

    def forget_all(self) -> None:
        """Changes may have been missed (the listening connection was down): drop every cached view and
        let waiting clients re-read."""
        self._views.clear()
        self._natives.clear()
        for task_id in list(self._waiters):
            for waiter in self._waiters.pop(task_id, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def drain(self) -> None:
        """The node is shutting down (SIGTERM): end every long-poll and event stream now with the state
        it has, so that in-flight requests finish; clients ask again (streams with `Last-Event-ID`)."""
        self.draining = True
        for task_id in list(self._waiters):
            for waiter in self._waiters.pop(task_id, ()):
                if not waiter.done():
                    waiter.set_result(None)
        for queues in self._subscribers.values():
            for queue in queues:
                queue.put_nowait(None)

    def drop(self, task_id: str) -> None:
        """The task was deleted: forget its views, and refuse any render of it still under way."""
        native = self._natives.pop(task_id, None)
        if native is not None:
            self._views.pop(native.public_id, None)  # both views carry the task's public id
        self._gone[task_id] = None
        if len(self._gone) > MAX_VIEWS:
            del self._gone[next(iter(self._gone))]

    # -- waiting for changes ---------------------------------------------------------------------

    async def wait_change(self, task_id: str, version: int, timeout: float) -> None:
        """Return as soon as the task has a version newer than `version`, or after `timeout` seconds."""
        if self.draining:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        try:
            current = self._natives.get(task_id)
            if current is not None and current.version > version:
                return
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    self._waiters.pop(task_id, None)

    def subscribe(self, task_id: str) -> asyncio.Queue[View | None]:
        """Every later native view of the task, in version order, until `unsubscribe`; None when the
        node drains."""
        queue: asyncio.Queue[View | None] = asyncio.Queue()
        self._subscribers.setdefault(task_id, set()).add(queue)
        return queue

    def unsubscribe(self, task_id: str, queue: asyncio.Queue[View | None]) -> None:
        queues = self._subscribers.get(task_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                self._subscribers.pop(task_id, None)
