"""Channel type `mediarelay`: another mediarelay, through its native API (`/v1/tasks`).

Submit is `POST /v1/tasks` with mediarelay's normalised fields and an `Idempotency-Key` (the task id):
after a submit whose outcome is unknown the same request is sent again with the same key and the
upstream answers with the task it already has, so nothing runs twice. Polls are batched: the polls due
at about the same time share one `GET /v1/tasks?id=…&id=…` (up to 100 ids); an upstream that does not
know the `id` filter answers with other tasks, and the channel falls back to one
`GET /v1/tasks/{id}` per task. Every output (`video`/`image`; posters and thumbnails are derived
again here) is downloaded from the upstream's file URL and checked against the SHA-256 it publishes.
Previews the upstream made (poster, thumbnail, sprite sheet) are copied too, checksums checked, so the
whole result is byte-identical and no CPU is spent redrawing them. Any dialect's operation can run on
it, face swap included.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field

from mediarelay.channels import translate
from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, Submitted
from mediarelay.channels.upstream import Upstream, lost, sandbox_headers
from mediarelay.domain import Operation, Status, Task

MAIN_ROLES = ("video", "image")
PREVIEW_ROLES = ("poster", "thumbnail", "spritesheet")  # copied as they are (byte-identical), not redrawn
EXT = {
    "video/mp4": "mp4",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/webm": "webm",
}
BATCH_MAX = 100
BATCH_WINDOW = 0.02  # seconds a poll waits for others to share its request
STATUS = {s.value: s for s in Status}
NOT_FOUND = frozenset({404})


class NativeOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    index: int = 0
    url: str | None = None
    mime: str | None = None
    bytes: int | None = None
    sha256: str | None = None


class NativeError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str | None = None
    message: str | None = None


class NativeTask(BaseModel):
    """The native task view (dialects/native.py `render`), read tolerantly."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = ""
    progress: int | None = None
    outputs: list[NativeOutput] = Field(default_factory=list)
    error: NativeError | None = None


class NativeList(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: list[NativeTask] = Field(default_factory=list)


def to_result(view: NativeTask) -> PollResult:
    raw = view.model_dump(mode="json")
    status = STATUS.get(view.status)
    if status is Status.FINALIZING:
        status = Status.RUNNING  # the upstream is storing its files: not ready for us yet
    if status in (Status.FAILED, Status.CANCELED):
        err = view.error or NativeError()
        return PollResult(
            status=Status.FAILED,
            raw=raw,
            error_code="upstream_canceled" if status is Status.CANCELED else (err.code or "upstream_failed"),
            error_message=err.message or "the upstream reported a failure",
        )
    outputs: tuple[Output, ...] = ()
    if status is Status.SUCCEEDED:
        files = [o for o in view.outputs if o.url and o.role in MAIN_ROLES + PREVIEW_ROLES]
        if not any(o.role in MAIN_ROLES for o in files):
            return PollResult(status=None, raw=raw)  # succeeded without files: nothing to take yet
        outputs = tuple(
            Output(
                role=o.role,
                mime=o.mime or "application/octet-stream",
                ext=EXT.get(o.mime or "", "bin"),
                index=o.index,
                url=o.url,
                spec={"sha256": o.sha256, "bytes": o.bytes} if o.sha256 else {},
            )
            for o in files
        )
    return PollResult(status=status, progress=view.progress, raw=raw, outputs=outputs)


class MediarelayChannel:
    operations = frozenset(Operation)
    idempotent_submit = True

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        self.config = config
        self.http = Upstream(config, deps)
        self.batching = bool(config.options.get("batch_polls", True))
        # credential ref -> pending polls (upstream id, future) waiting for the next batch request
        self._pending: dict[str, list[tuple[Task, asyncio.Future[PollResult]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def submit(self, task: Task) -> Submitted:
        body = translate.to_native(task, self.config.upstream_model(task.model))
        headers = {"Idempotency-Key": f"mediarelay-{task.id}", **sandbox_headers(task)}
        reply = await self.http.call("submit", "POST", "/v1/tasks", task=task, json=body, headers=headers)
        view = self.http.parse(NativeTask, reply, kind="submit")
        status = STATUS.get(view.status, Status.QUEUED)
        if status not in (Status.QUEUED, Status.RUNNING):
            status = Status.QUEUED  # whatever it is (even done already), the next poll takes it from there
        return Submitted(upstream_id=view.id, status=status, raw=view.model_dump(mode="json"))

    async def poll(self, task: Task) -> PollResult:
        if not self.batching:
            return await self._poll_one(task)
        ref = str((task.upstream or {}).get("credential") or "")
        future: asyncio.Future[PollResult] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(ref, []).append((task, future))
        if ref not in self._flushers or self._flushers[ref].done():
            self._flushers[ref] = asyncio.create_task(self._flush(ref))
        return await future

    async def _poll_one(self, task: Task) -> PollResult:
        path = f"/v1/tasks/{quote(task.upstream_id or '', safe='')}"
        reply = await self.http.call("poll", "GET", path, task=task, accept=NOT_FOUND)
        if reply.status == 404:
            return lost(task, self.config.name)
        return to_result(self.http.parse(NativeTask, reply, kind="poll"))

    async def _flush(self, ref: str) -> None:
        """Send the waiting polls of one credential in batches, until none is left."""
        await asyncio.sleep(BATCH_WINDOW)
        while batch := self._take(ref):
            try:
                results = await self._poll_many([t for t, _ in batch])
            except Exception as exc:  # TaskError and bugs alike go to every waiting poll
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for task, future in batch:
                if future.done():
                    continue
                found = results.get(task.upstream_id or "")
                if found is not None:
                    future.set_result(found)
                else:  # not in the answer (the filter is unsupported, or a list quirk): ask for it alone
                    fallback = asyncio.ensure_future(self._poll_one(task))
                    fallback.add_done_callback(functools.partial(_forward, target=future))

    def _take(self, ref: str) -> list[tuple[Task, asyncio.Future[PollResult]]]:
        waiting = self._pending.get(ref) or []
        batch, self._pending[ref] = waiting[:BATCH_MAX], waiting[BATCH_MAX:]
        return [(t, f) for t, f in batch if not f.cancelled()]

    async def _poll_many(self, tasks: list[Task]) -> dict[str, PollResult]:
        if len(tasks) == 1:
            return {tasks[0].upstream_id or "": await self._poll_one(tasks[0])}
        ids = [t.upstream_id or "" for t in tasks]
        query = urlencode([("limit", str(BATCH_MAX)), *(("id", i) for i in ids)])
        reply = await self.http.call("poll", "GET", f"/v1/tasks?{query}", task=tasks[0])
        page = self.http.parse(NativeList, reply, kind="poll")
        wanted = set(ids)
        found = {v.id: to_result(v) for v in page.data if v.id in wanted}
        if len(page.data) > len(found):
            self.batching = False  # the upstream ignored the filter: one request per task from now on
        return found

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        await self.http.download(task, output, dest)

    async def cancel(self, task: Task) -> None:
        path = f"/v1/tasks/{quote(task.upstream_id or '', safe='')}/cancel"
        await self.http.call("cancel", "POST", path, task=task, accept=frozenset({404}))


def _forward(source: asyncio.Future[PollResult], target: asyncio.Future[PollResult]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
