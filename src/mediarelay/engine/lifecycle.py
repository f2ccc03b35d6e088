"""The task lifecycle: dispatch, poll, finalize, fail, cancel, aggregate fan-out parents.

Each step reads the task, does its outside work, then writes the result as a compare-and-set on the
version it read. A step may be run again after a crash (the driver re-runs whatever is due), so every
outside effect is idempotent: channels submit with the task id as idempotency key, files are written
under deterministic keys, and only the final CAS makes a result visible.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mediarelay import media
from mediarelay.channels.base import Channel, Output, PollResult
from mediarelay.channels.registry import ChannelSet
from mediarelay.domain import Status, Task, TaskError, TaskSpec, now_ms
from mediarelay.engine.cadence import next_poll_delay, retry_backoff
from mediarelay.storage.local import LocalStorage
from mediarelay.store.tasks import NewAsset, TaskRepo

log = logging.getLogger("mediarelay.engine")

MAX_DISPATCH_ATTEMPTS = 8
# A video's sprite sheet: 4 x 4 frames at evenly spaced times, 240 px wide tiles (JPEG), for scrubbers.
SPRITESHEET = {"columns": 4, "rows": 4, "tile_width": 240}
Listener = Callable[[Task], Awaitable[object]]


class Engine:
    def __init__(
        self,
        repo: TaskRepo,
        channels: ChannelSet,
        storage: LocalStorage,
        *,
        finalize_concurrency: int = 2,
    ) -> None:
        self.repo = repo
        self.channels = channels
        self.storage = storage
        self.listeners: list[Listener] = []
        self.wakers: list[Callable[[], None]] = []
        self._finalize_slots = asyncio.Semaphore(finalize_concurrency)

    # -- plumbing -----------------------------------------------------------------------------

    async def _emit(self, task: Task) -> None:
        for listener in self.listeners:
            try:
                await listener(task)
            except Exception:  # a broken listener must never break the lifecycle
                log.exception("task listener failed for %s", task.id)

    async def _write(self, task: Task, **changes: Any) -> Task | None:
        new = await asyncio.to_thread(self.repo.update, task, **changes)
        if new is not None:
            await self._emit(new)
            if new.parent_id is not None:
                await self._child_changed(new.parent_id)
        return new

    async def _child_changed(self, parent_id: str) -> None:
        """An active parent is re-aggregated by the driver (the update woke it); a finished one only
        needs its view redrawn, since that view embeds its children's states and files."""
        parent = await asyncio.to_thread(self.repo.get, parent_id)
        if parent is not None and parent.status.terminal:
            await self._emit(parent)
        else:
            self._wake()

    def _wake(self) -> None:
        for wake in self.wakers:
            wake()

    # -- client-facing ------------------------------------------------------------------------

    async def submit(self, spec: TaskSpec, key_id: str) -> Task:
        """Store the task durably, then let the driver take it; returns the stored task."""
        task = await asyncio.to_thread(self.repo.create, spec, key_id)
        await self._emit(task)
        for child in await asyncio.to_thread(self.repo.children, task.id):
            await self._emit(child)
        self._wake()
        return task

    async def cancel(self, task: Task) -> Task:
        """Cancel a task that is not finished; a finished task is returned unchanged."""
        current: Task | None = task
        if task.status.terminal and task.params.get("fanout"):
            # A failed batch may still have children running: cancelling it stops them.
            await self._after_cancel(task)
        while current is not None and not current.status.terminal:
            new = await self._write(
                current,
                status=Status.CANCELED,
                error_code="canceled",
                error_message="canceled by the client",
                finished_at=now_ms(),
                next_run_at=None,
                event_detail="cancel",
            )
            if new is not None:
                await self._after_cancel(new)
                return new
            current = await asyncio.to_thread(self.repo.get, task.id)
        return current or task

    async def _after_cancel(self, task: Task) -> None:
        if task.params.get("fanout"):
            for child in await asyncio.to_thread(self.repo.children, task.id):
                await self.cancel(child)
        channel = self.channels.get(task.channel) if task.channel else None
        if channel is not None and task.upstream_id is not None:
            try:
                await channel.cancel(task)
            except Exception:
                log.warning("upstream cancel failed for %s", task.id, exc_info=True)

    # -- the step the driver runs -------------------------------------------------------------

    async def step(self, task_id: str) -> None:
        task = await asyncio.to_thread(self.repo.get, task_id)
        if task is None or task.status.terminal:
            return
        try:
            if task.params.get("fanout"):
                await self._aggregate(task)
            elif self._past_deadline(task):
                await self._fail(task, "timeout", "the task did not finish before the channel's deadline")
            elif task.upstream_id is None:
                await self._dispatch(task)
            elif task.status is Status.FINALIZING:
                await self._finalize(task)
            else:
                await self._poll(task)
        except Exception:
            log.exception("step failed for task %s; retrying later", task.id)
            await asyncio.to_thread(self.repo.schedule, task, now_ms() + int(retry_backoff(3) * 1000))

    def _deadline_at(self, task: Task) -> int | None:
        channel = self.channels.get(task.channel) if task.channel else None
        if channel is None:
            return None
        return task.created_at + int(channel.config.deadline_seconds * 1000)

    def _past_deadline(self, task: Task) -> bool:
        deadline = self._deadline_at(task)
        return deadline is not None and now_ms() > deadline

    async def _fail(self, task: Task, code: str, message: str, raw: dict[str, Any] | None = None) -> None:
        changes: dict[str, Any] = {}
        if raw is not None:
            changes["upstream"] = {**(task.upstream or {}), "payload": raw}
        await self._write(
            task,
            status=Status.FAILED,
            error_code=code,
            error_message=message,
            finished_at=now_ms(),
            next_run_at=None,
            event_detail=code,
            **changes,
        )

    async def _dispatch(self, task: Task) -> None:
        candidates = self.channels.candidates(task.model, task.operation)
        if not candidates:
            await self._fail(
                task, "no_channel", f"no channel serves model {task.model!r} ({task.operation.value})"
            )
            return
        # Fail over: each retry starts one channel further along the list.
        start = task.attempt % len(candidates)
        last: TaskError | None = None
        for channel in candidates[start:] + candidates[:start]:
            try:
                submitted = await channel.submit(task)
            except TaskError as exc:
                if not exc.retryable:
                    await self._fail(task, exc.code, exc.message)
                    return
                last = exc
                continue
            now = now_ms()
            await self._write(
                task,
                channel=channel.config.name,
                upstream_id=submitted.upstream_id,
                status=submitted.status,
                started_at=now,
                upstream={"payload": submitted.raw} if submitted.raw else None,
                next_run_at=now + 200,
                event_detail=f"dispatched to {channel.config.name}",
            )
            return
        if task.attempt + 1 >= MAX_DISPATCH_ATTEMPTS:
            await self._fail(
                task, last.code if last else "unavailable", last.message if last else "no channel took it"
            )
            return
        delay = last.retry_after if last and last.retry_after else retry_backoff(task.attempt)
        await self._write(task, attempt=task.attempt + 1, next_run_at=now_ms() + int(delay * 1000))

    def _channel(self, task: Task) -> Channel:
        channel = self.channels.get(task.channel or "")
        if channel is None:
            raise TaskError("channel_gone", f"channel {task.channel!r} is no longer configured")
        return channel

    async def _poll(self, task: Task) -> None:
        try:
            channel = self._channel(task)
        except TaskError as exc:
            await self._fail(task, exc.code, exc.message)
            return
        try:
            result = await channel.poll(task)
        except TaskError as exc:
            if not exc.retryable:
                await self._fail(task, exc.code, exc.message)
                return
            result = PollResult(status=None, retry_after=exc.retry_after)
        now = now_ms()
        if result.status is Status.FAILED:
            await self._fail(
                task,
                result.error_code or "upstream_failed",
                result.error_message or "upstream failed",
                result.raw,
            )
            return
        if result.status is Status.SUCCEEDED:
            await self._write(
                task,
                status=Status.FINALIZING,
                progress=99,
                upstream={"payload": result.raw, "outputs": [o.to_json() for o in result.outputs]},
                next_run_at=now,
            )
            return
        next_at = now + int(next_poll_delay(task, result, now) * 1000)
        if (deadline := self._deadline_at(task)) is not None:
            next_at = min(next_at, deadline + 1)  # a stuck task fails on time, not a poll interval late
        # Unknown status: keep waiting with what we have. Known: record status/progress if they moved.
        status = result.status or task.status
        progress = max(task.progress, min(99, result.progress if result.progress is not None else 0))
        if status != task.status or progress != task.progress:
            await self._write(task, status=status, progress=progress, next_run_at=next_at)
        else:
            await asyncio.to_thread(self.repo.schedule, task, next_at)

    async def _finalize(self, task: Task) -> None:
        channel = self._channel(task)
        outputs = [Output.from_json(o) for o in (task.upstream or {}).get("outputs", [])]
        if not outputs:
            await self._fail(task, "no_output", "the upstream finished without a result")
            return
        async with self._finalize_slots:
            stored: list[NewAsset] = []
            for output in outputs:
                stored.extend(await self._store_output(task, channel, output))
        await self._write(
            task,
            new_assets=stored,
            status=Status.SUCCEEDED,
            progress=100,
            finished_at=now_ms(),
            next_run_at=None,
        )

    async def _store_output(self, task: Task, channel: Channel, output: Output) -> list[NewAsset]:
        """Fetch one output into storage and derive the previews the dialects publish (poster, thumbnail…)."""
        staging = self.storage.new_staging_path(f".{output.ext}")
        try:
            await channel.fetch_output(task, output, staging)
            info = await asyncio.to_thread(media.probe, staging)
            key = f"{task.id}/{output.role}-{output.index}.{output.ext}"
            size, sha = await asyncio.to_thread(self.storage.put, key, staging)
        finally:
            staging.unlink(missing_ok=True)
        main = NewAsset(
            role=output.role,
            key=key,
            mime=info.mime,
            bytes=size,
            sha256=sha,
            width=info.width,
            height=info.height,
            duration=info.duration,
            index=output.index,
        )
        source = self.storage.path(key)
        if output.role == "video":
            derived = [
                await self._derive(
                    task, "poster", output.index, "jpg", lambda d: media.make_poster(source, d, fmt="JPEG")
                ),
                await self._derive(
                    task,
                    "thumbnail",
                    output.index,
                    "webp",
                    lambda d: media.make_poster(source, d, fmt="WEBP", max_side=480),
                ),
                await self._derive(
                    task,
                    "spritesheet",
                    output.index,
                    "jpg",
                    lambda d: media.make_spritesheet(source, d, **SPRITESHEET),
                ),
            ]
        else:
            derived = [
                await self._derive(
                    task,
                    "thumbnail",
                    output.index,
                    "jpg",
                    lambda d: media.make_thumbnail(source, d, fmt="JPEG"),
                )
            ]
        return [main, *derived]

    async def _derive(
        self, task: Task, role: str, index: int, ext: str, make: Callable[[Path], Awaitable[tuple[int, int]]]
    ) -> NewAsset:
        staging = self.storage.new_staging_path(f".{ext}")
        try:
            width, height = await make(staging)
            key = f"{task.id}/{role}-{index}.{ext}"
            size, sha = await asyncio.to_thread(self.storage.put, key, staging)
        finally:
            staging.unlink(missing_ok=True)
        return NewAsset(
            role=role,
            key=key,
            mime=media.MIME[ext],
            bytes=size,
            sha256=sha,
            width=width,
            height=height,
            index=index,
        )

    async def _aggregate(self, parent: Task) -> None:
        """A fan-out parent mirrors its children: done when all are, failed when any failed."""
        kids = await asyncio.to_thread(self.repo.children, parent.id)
        statuses = [k.status for k in kids]
        changes: dict[str, Any] = {"next_run_at": None}
        if kids and all(s is Status.SUCCEEDED for s in statuses):
            changes.update(status=Status.SUCCEEDED, progress=100, finished_at=now_ms())
        elif failed := next((k for k in kids if k.status is Status.FAILED), None):
            changes.update(
                status=Status.FAILED,
                error_code=failed.error_code,
                error_message=failed.error_message,
                finished_at=now_ms(),
            )
        elif kids and all(s.terminal for s in statuses):
            changes.update(status=Status.CANCELED, error_code="canceled", finished_at=now_ms())
        else:
            started = any(s is not Status.QUEUED for s in statuses)
            changes.update(
                status=Status.RUNNING if started else Status.QUEUED,
                progress=min(99, sum(k.progress for k in kids) // max(1, len(kids))),
            )
            if parent.started_at is None and started:
                changes["started_at"] = now_ms()
        # Always bump the version: the parent's published view embeds its children.
        new = await self._write(parent, **changes)
        if new is not None and not new.status.terminal:
            # A child that changed after `kids` was read woke the parent (next_run_at) before this write
            # cleared it again, and that wake does not bump the version: look again so it is not lost.
            again = await asyncio.to_thread(self.repo.children, parent.id)
            if [(k.id, k.version) for k in again] != [(k.id, k.version) for k in kids]:
                await asyncio.to_thread(self.repo.schedule, new, now_ms())
