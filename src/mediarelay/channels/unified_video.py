"""Channel type `unified_video`: an upstream of the unified video format (`/v1/video/create|query`, §C).

Answers are read with the dialect's tolerant `CreateResponse` / `QueryResponse`. Status words:
pending → queued, processing → running, completed → done, failed → failed; any other word (or none)
means "keep waiting". Progress comes from `detail.pending_info.progress_pct` (sora, a fraction) or
`detail.progress` (others, a percentage). No idempotency key and no list endpoint: a submit whose
outcome is unknown is not repeated (docs/channels.md). Cancel: mediarelay's `POST /v1/video/cancel?id=`
extension where the upstream has it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from mediarelay.channels import translate
from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, Submitted
from mediarelay.channels.upstream import NOT_FOUND, Upstream, lost, sandbox_headers
from mediarelay.dialects import unified_video as dialect
from mediarelay.domain import Operation, Status, Task

STATUS = {"pending": Status.QUEUED, "processing": Status.RUNNING, "completed": Status.SUCCEEDED}


def progress_of(answer: dialect.QueryResponse) -> int | None:
    detail = answer.detail
    if isinstance(detail, dialect.SoraDetail):
        pct = detail.pending_info.progress_pct
        return None if pct is None else round(pct * 100)
    if isinstance(detail, dialect.VideoDetail):
        return detail.progress
    return None


def video_url_of(answer: dialect.QueryResponse) -> str | None:
    if answer.video_url:
        return answer.video_url
    detail = answer.detail
    if isinstance(detail, dialect.SoraDetail):
        return next((g.url for g in detail.pending_info.generations if g.url), None)
    if isinstance(detail, dialect.VideoDetail):
        return detail.video_url
    return None


def failure_of(answer: dialect.QueryResponse) -> str | None:
    detail = answer.detail
    if isinstance(detail, dialect.SoraDetail):
        return detail.pending_info.failure_reason
    if isinstance(detail, dialect.VideoDetail):
        return detail.failure_reason
    return None


class UnifiedVideoChannel:
    operations = frozenset({Operation.TEXT_TO_VIDEO, Operation.IMAGE_TO_VIDEO})
    idempotent_submit = False

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        self.config = config
        self.http = Upstream(config, deps)

    async def submit(self, task: Task) -> Submitted:
        body = translate.to_unified(task, self.config.upstream_model(task.model))
        reply = await self.http.call(
            "submit", "POST", "/v1/video/create", task=task, json=body, headers=sandbox_headers(task)
        )
        created = self.http.parse(dialect.CreateResponse, reply, kind="submit")
        status = STATUS.get(created.status, Status.QUEUED)
        if status not in (Status.QUEUED, Status.RUNNING):
            status = Status.QUEUED  # whatever it says at once, the next poll tells
        return Submitted(upstream_id=created.id, status=status, raw=created.model_dump())

    async def poll(self, task: Task) -> PollResult:
        path = f"/v1/video/query?id={quote(task.upstream_id or '', safe='')}"
        reply = await self.http.call("poll", "GET", path, task=task, accept=NOT_FOUND)
        if reply.status == 404:
            return lost(task, self.config.name)
        answer = self.http.parse(dialect.QueryResponse, reply, kind="poll")
        raw = answer.model_dump(mode="json")
        if answer.status == "failed":
            reason = failure_of(answer) or "the upstream reported a failure"
            code = "upstream_canceled" if reason == "canceled" else "upstream_failed"
            return PollResult(status=Status.FAILED, raw=raw, error_code=code, error_message=reason)
        status = STATUS.get(answer.status)
        url = video_url_of(answer)
        if status is Status.SUCCEEDED and not url:
            status = None  # completed without a URL yet: keep waiting for it
        outputs = (
            (Output(role="video", mime="video/mp4", ext="mp4", url=url),)
            if status is Status.SUCCEEDED
            else ()
        )
        return PollResult(status=status, progress=progress_of(answer), raw=raw, outputs=outputs)

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        await self.http.download(task, output, dest)

    async def cancel(self, task: Task) -> None:
        path = f"/v1/video/cancel?id={quote(task.upstream_id or '', safe='')}"
        await self.http.call("cancel", "POST", path, task=task, accept=frozenset({404, 405}))
