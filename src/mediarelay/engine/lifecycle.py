"""The task lifecycle: dispatch, poll, finalize, fail, cancel, aggregate fan-out parents.

Each step reads the task, does its outside work, then writes the result as a compare-and-set on the
version it read. A step may be run again after a crash (the driver re-runs whatever is due), so every
outside effect is idempotent: a submit is recorded as attempted before it is sent and never blindly
repeated (`engine/dispatch.py`), files are written under deterministic keys, and only the final CAS makes
a result visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mediarelay import logs, media
from mediarelay.channels.base import Channel, Output, PollResult
from mediarelay.channels.registry import ChannelSet
from mediarelay.domain import MediarelayError, Status, Task, TaskError, TaskSpec, now_ms
from mediarelay.engine.cadence import BLIND, ENDGAME_PROGRESS, FAST, next_poll_delay, retry_backoff
from mediarelay.engine.dispatch import Dispatcher
from mediarelay.processing.pool import BrokenProcessPool, WorkerPool
from mediarelay.storage.base import Storage
from mediarelay.store.channels import ChannelRepo
from mediarelay.store.groupcommit import GroupCommit
from mediarelay.store.tasks import Idempotency, NewAsset, TaskRepo

log = logging.getLogger("mediarelay.engine")

MAX_FETCH_ATTEMPTS = 4  # downloads of a finished task's results before it fails
PROGRESS_STEP = 10  # progress points that are worth a new version of the task
PROGRESS_EVERY_MS = 5000  # …or any progress after this long
MAIN_ROLES = ("video", "image")
# The previews every dialect may publish, derived here unless the upstream provides them (mediarelay):
# (role, extension) per kind of result.
PREVIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    "video": (("poster", "jpg"), ("thumbnail", "webp"), ("spritesheet", "jpg")),
    "image": (("thumbnail", "jpg"),),
}
# A video's stills, both of the frame a third in: (format, longest side or None for full size).
VIDEO_STILLS: dict[str, tuple[str, int | None]] = {"poster": ("JPEG", None), "thumbnail": ("WEBP", 480)}
# A video's sprite sheet: 4 x 4 frames at evenly spaced times, 240 px wide tiles (JPEG), for scrubbers.
SPRITESHEET = {"columns": 4, "rows": 4, "tile_width": 240}
Listener = Callable[[Task], Awaitable[object]]


class Engine:
    def __init__(
        self,
        repo: TaskRepo,
        channels: ChannelSet,
        storage: Storage,
        *,
        finalize_concurrency: int = 2,
        media_processes: int = 1,
        claims: ChannelRepo | None = None,
    ) -> None:
        self.repo = repo
        self.channels = channels
        self.storage = storage
        self.claims = claims or ChannelRepo(repo.db)
        self.dispatcher = Dispatcher(self)
        self._background: set[asyncio.Task[None]] = set()  # upstream cancels under way
        self.listeners: list[Listener] = []
        self.commits = GroupCommit(repo.db)  # submits, claims and the steps' writes, committed together
        self.wakers: list[Callable[[], None]] = []
        self._finalize_slots = asyncio.Semaphore(finalize_concurrency)
        # Probing and previews decode untrusted media: in worker processes (started on first use), they
        # neither hold this process's GIL (status answers and polls go on) nor take it down if they crash.
        # At the server's priority: how soon a finished task is visible depends on them.
        self.media_pool = WorkerPool(media_processes, nice=0) if media_processes > 0 else None
        self._media: media.Runner = self.media_pool.run if self.media_pool is not None else asyncio.to_thread

    def _media_slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Bound media work in this process's threads; worker processes bound it themselves (their queue)."""
        return self._finalize_slots if self.media_pool is None else contextlib.nullcontext()

    def close(self) -> None:
        """Stop the media worker processes (steps under way are resumed after a restart)."""
        if self.media_pool is not None:
            self.media_pool.shutdown()

    # -- plumbing -----------------------------------------------------------------------------

    async def _emit(self, task: Task) -> None:
        for listener in self.listeners:
            try:
                await listener(task)
            except Exception:  # a broken listener must never break the lifecycle
                log.exception("task listener failed for %s", task.id)

    async def _write(self, task: Task, **changes: Any) -> Task | None:
        new = await self.commits.run(lambda conn: self.repo.update_in(conn, task, **changes))
        if new is not None:
            if new.status is Status.FAILED and task.status is not Status.FAILED:
                log.info("task failed: %s: %s", new.error_code, new.error_message, extra={"task_id": new.id})
            await self._emit(new)
            if new.parent_id is not None:
                await self._child_changed(new.parent_id)
        return new

    async def _schedule(self, task: Task, next_run_at: int) -> None:
        await self.commits.run(lambda conn: self.repo.schedule_in(conn, task, next_run_at))

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

    async def submit(self, spec: TaskSpec, key_id: str, *, idempotency: Idempotency | None = None) -> Task:
        """Store the task durably (and charge it, in the same transaction), then let the driver take it;
        returns the stored task, or the original one for a repeated `Idempotency-Key`."""
        if spec.children or not self.commits.batched:
            # PostgreSQL takes concurrent writers (and resolves a twin Idempotency-Key's race here).
            task, created = await asyncio.to_thread(self.repo.create_once, spec, key_id, idempotency)
        else:
            made = await self.commits.run(
                lambda conn: self.repo.create_in(conn, spec, key_id, idempotency, now_ms())
            )
            if isinstance(made, MediarelayError):
                raise made
            task, created = made
        if not created:
            return task
        log.info("task accepted: %s %s", task.operation.value, task.model, extra={"task_id": task.id})
        await self._emit(task)
        if spec.children:
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
            # In the background: the client's cancel must not wait for a slow upstream.
            job = asyncio.create_task(self._cancel_upstream(channel, task))
            self._background.add(job)
            job.add_done_callback(self._background.discard)

    async def _cancel_upstream(self, channel: Channel, task: Task) -> None:
        try:
            await channel.cancel(task)
        except Exception:
            log.warning("upstream cancel failed for %s", task.id, exc_info=True)

    # -- the step the driver runs -------------------------------------------------------------

    async def step(self, task_id: str, task: Task | None = None) -> None:
        """Run the task's next step. `task` is the row as the caller has just read it (the embedded driver
        loads the due tasks in its scan); without it the step reads the row itself."""
        token = logs.task_id.set(task_id)  # every log line of this step names the task
        try:
            await self._step(task_id, task)
        finally:
            logs.task_id.reset(token)

    async def _step(self, task_id: str, task: Task | None) -> None:
        if task is None:
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
            await self._schedule(task, now_ms() + int(retry_backoff(3) * 1000))

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
        await self.dispatcher.dispatch(task)

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
        health = self.channels.health_of(channel.config.name)
        health.polls += 1  # exported by GET /metrics
        try:
            result = await channel.poll(task)
        except TaskError as exc:
            if not exc.retryable:
                await self._fail(task, exc.code, exc.message)
                return
            # Keep waiting; while the upstream keeps failing, wait longer (1, 2, 4 … 30 s).
            result = PollResult(
                status=None, retry_after=max(exc.retry_after or 0.0, health.poll_backoff()) or None
            )
        now = now_ms()
        if result.status in (Status.FAILED, Status.CANCELED):
            await self._fail(
                task,
                result.error_code or "upstream_failed",
                result.error_message or "upstream failed",
                result.raw,
            )
            return
        if result.status is Status.SUCCEEDED:
            health.durations.add((now - (task.started_at or task.created_at)) / 1000)
            finalizing = await self._write(
                task,
                status=Status.FINALIZING,
                progress=99,
                upstream={
                    **(task.upstream or {}),
                    "payload": result.raw,
                    "outputs": [o.to_json() for o in result.outputs],
                },
                next_run_at=now,
            )
            if finalizing is not None:
                # Fetch the result now, in this step: no round trip through the table and the driver. The
                # row is due already, so a crash before the result is stored simply redoes this.
                try:
                    await self._finalize(finalizing)
                except Exception:
                    log.exception("finalize failed for task %s; retrying later", task.id)
                    later = now_ms() + int(retry_backoff(3) * 1000)
                    await self._schedule(finalizing, later)
            return
        fast = float(channel.config.options.get("poll_fast_seconds", FAST))
        blind = float(channel.config.options.get("poll_blind_seconds", BLIND))
        delay = next_poll_delay(task, result, now, durations=health.durations, fast=fast, blind=blind)
        next_at = now + int(delay * 1000)
        if (deadline := self._deadline_at(task)) is not None:
            next_at = min(next_at, deadline + 1)  # a stuck task fails on time, not a poll interval late
        # Unknown status: keep waiting with what we have. Known: record status/progress if they moved.
        status = result.status or task.status
        if status is Status.QUEUED and task.status is Status.RUNNING:
            status = Status.RUNNING  # never back to queued once started (some upstreams flicker)
        progress = max(task.progress, min(99, result.progress if result.progress is not None else 0))
        # [MR] progress is published in steps (every PROGRESS_STEP points, or after PROGRESS_EVERY_MS, and
        # on reaching 99 %: the cadence's last stretch is timed from that write): each publication is a
        # write, a re-render and a wake-up of every waiting client.
        moved = progress - task.progress
        if (
            status != task.status
            or moved >= PROGRESS_STEP
            or (moved > 0 and now - task.updated_at >= PROGRESS_EVERY_MS)
            or (moved > 0 and progress >= ENDGAME_PROGRESS)
        ):
            await self._write(task, status=status, progress=progress, next_run_at=next_at)
        else:
            await self._schedule(task, next_at)

    async def _finalize(self, task: Task) -> None:
        try:
            channel = self._channel(task)
        except TaskError as exc:
            await self._fail(task, exc.code, exc.message)
            return
        outputs = [Output.from_json(o) for o in (task.upstream or {}).get("outputs", [])]
        if not outputs:
            await self._fail(task, "no_output", "the upstream finished without a result")
            return
        provided = {(o.role, o.index): o for o in outputs if o.role not in MAIN_ROLES}
        try:
            stored: list[NewAsset] = []
            for output in outputs:
                if output.role in MAIN_ROLES:
                    stored.extend(await self._store_output(task, channel, output, provided))
        except TaskError as exc:
            await self._fetch_failed(task, channel, exc)
            return
        except BrokenProcessPool:  # this result (or another one in the pool with it) crashed the decoder
            crash = TaskError("bad_output", "a media worker crashed reading the result", retryable=True)
            await self._fetch_failed(task, channel, crash)
            return
        await self._write(
            task,
            new_assets=stored,
            status=Status.SUCCEEDED,
            progress=100,
            finished_at=now_ms(),
            next_run_at=None,
        )

    async def _fetch_failed(self, task: Task, channel: Channel, exc: TaskError) -> None:
        """A result could not be stored. Retried a few times with backoff; an expired URL (403/404/410)
        makes the next try ask the upstream again, since many hand out fresh signed URLs on each query."""
        failures = int((task.upstream or {}).get("fetch_failures", 0)) + 1
        if not exc.retryable or failures >= MAX_FETCH_ATTEMPTS:
            tries = f" (after {failures} tries)" if exc.retryable else ""
            await self._fail(task, exc.code, f"{exc.message}{tries}")
            return
        upstream = {**(task.upstream or {}), "fetch_failures": failures, "fetch_error": exc.message[:500]}
        if exc.code in ("result_expired", "result_empty", "bad_output"):
            try:
                fresh = await channel.poll(task)
            except TaskError:
                fresh = PollResult(status=None)
            if fresh.status is Status.SUCCEEDED and fresh.outputs:
                upstream["outputs"] = [o.to_json() for o in fresh.outputs]
        delay = retry_backoff(failures, base=1.0, cap=60.0)
        await self._write(task, upstream=upstream, next_run_at=now_ms() + int(delay * 1000))

    async def _store_output(
        self, task: Task, channel: Channel, output: Output, provided: dict[tuple[str, int], Output]
    ) -> list[NewAsset]:
        """Fetch one output into storage and derive the previews the dialects publish (poster, thumbnail…).

        What the file is comes from its bytes (not the upstream's name or Content-Type): its extension,
        role (video or image) and MIME type follow the content; anything else is refused. A download
        waits for nothing. Making the sandbox's media takes one of the `finalize_concurrency` slots;
        probing and previews queue at the media worker processes (or, without them, take a slot too:
        they then run on this process's CPU). Holding a slot across the whole media stage would
        serialise its thread hops and storage writes as well: with 2 slots that, not the CPU, was the
        bottleneck at 3,000 concurrent tasks (docs/benchmarks.md)."""
        staging = self.storage.new_staging_path(f".{output.ext}")
        try:
            if getattr(channel, "generates_outputs", False):
                async with self._finalize_slots:
                    await channel.fetch_output(task, output, staging)
            else:
                await channel.fetch_output(task, output, staging)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        # Previews are made from the staging file, before it is stored (a remote store keeps no local copy).
        try:
            previews: dict[str, NewAsset] = {}
            async with self._media_slot():
                main = await self._process_output(task, output, staging)
                if not any((role, main.index) in provided for role, _ in PREVIEWS[main.role]):
                    # Nothing to copy (every upstream but mediarelay): all previews in the same slot.
                    wanted = list(PREVIEWS[main.role])
                    previews = {a.role: a for a in await self._derive_previews(task, main, wanted, staging)}
            for role, ext in PREVIEWS[main.role]:
                copy = provided.get((role, main.index))
                found = await self._copy_preview(task, channel, copy, ext) if copy is not None else None
                if found is not None:
                    previews[role] = found
            missing = [(role, ext) for role, ext in PREVIEWS[main.role] if role not in previews]
            if missing:
                async with self._media_slot():
                    for found in await self._derive_previews(task, main, missing, staging):
                        previews[found.role] = found
            size, sha = await asyncio.to_thread(self.storage.put, main.key, staging)
        finally:
            staging.unlink(missing_ok=True)
        ordered = [previews[role] for role, _ in PREVIEWS[main.role]]
        return [dataclasses.replace(main, bytes=size, sha256=sha), *ordered]

    async def _copy_preview(self, task: Task, channel: Channel, output: Output, ext: str) -> NewAsset | None:
        """A preview the upstream made (another mediarelay publishes them with checksums): stored as it
        is when it is the expected kind of image, else None (derived here instead)."""
        staging = self.storage.new_staging_path(f".{ext}")
        try:
            try:
                await channel.fetch_output(task, output, staging)
            except TaskError:
                return None
            with staging.open("rb") as fh:
                if media.sniff(fh.read(64)) != ("image", ext):
                    return None
            info = await self._media(media.probe, staging)
            key = f"{task.id}/{output.role}-{output.index}.{ext}"
            size, sha = await asyncio.to_thread(self.storage.put, key, staging)
        except ValueError:
            return None
        finally:
            staging.unlink(missing_ok=True)
        return NewAsset(
            role=output.role,
            key=key,
            mime=media.MIME[ext],
            bytes=size,
            sha256=sha,
            width=info.width,
            height=info.height,
            index=output.index,
        )

    async def _process_output(self, task: Task, output: Output, staging: Path) -> NewAsset:
        """What the fetched file is (its size and checksum are filled in when `_store_output` stores it)."""
        with staging.open("rb") as fh:
            sniffed = media.sniff(fh.read(64))
        if sniffed is None:
            raise TaskError(
                "bad_output",
                f"result {output.url or output.index}: not an image or a video",
                retryable=True,
            )
        kind, ext = sniffed
        output = Output(
            role=kind, mime=output.mime, ext=ext, index=output.index, url=output.url, spec=output.spec
        )
        try:
            info = await self._media(media.probe, staging)
        except ValueError as exc:
            raise TaskError(
                "bad_output",
                f"result {output.url or output.index}: unreadable {ext} ({exc})",
                retryable=True,
            ) from None
        key = f"{task.id}/{output.role}-{output.index}.{output.ext}"
        return NewAsset(
            role=output.role,
            key=key,
            mime=info.mime,
            bytes=0,
            sha256="",
            width=info.width,
            height=info.height,
            duration=info.duration,
            index=output.index,
        )

    async def _derive_previews(
        self, task: Task, main: NewAsset, wanted: list[tuple[str, str]], source: Path
    ) -> list[NewAsset]:
        """The previews `wanted` ((role, extension) pairs) of the main file `source` (its staging file):
        a video's poster (JPEG frame), thumbnail (WebP frame) and sprite sheet all come from one decode
        (`media.make_video_previews`); an image's thumbnail is a JPEG."""
        staged = {role: self.storage.new_staging_path(f".{ext}") for role, ext in wanted}
        try:
            if main.role == "image":
                sizes = {
                    "thumbnail": await media.make_thumbnail(
                        source, staged["thumbnail"], fmt="JPEG", run=self._media
                    )
                }
            else:
                roles = [role for role in VIDEO_STILLS if role in staged]
                stills = [media.Still(staged[role], *VIDEO_STILLS[role]) for role in roles]
                sheet = None
                if "spritesheet" in staged:
                    sheet = media.Sheet(staged["spritesheet"], **SPRITESHEET)
                    roles.append("spritesheet")
                made = await media.make_video_previews(source, stills=stills, sheet=sheet, run=self._media)
                sizes = dict(zip(roles, made, strict=True))
            keys = {role: f"{task.id}/{role}-{main.index}.{ext}" for role, ext in wanted}
            stored = await asyncio.to_thread(
                lambda: {role: self.storage.put(keys[role], staged[role]) for role, _ in wanted}
            )
            derived = [
                NewAsset(
                    role=role,
                    key=keys[role],
                    mime=media.MIME[ext],
                    bytes=stored[role][0],
                    sha256=stored[role][1],
                    width=sizes[role][0],
                    height=sizes[role][1],
                    index=main.index,
                )
                for role, ext in wanted
            ]
        finally:
            for path in staged.values():
                path.unlink(missing_ok=True)
        return derived

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
                await self._schedule(new, now_ms())
