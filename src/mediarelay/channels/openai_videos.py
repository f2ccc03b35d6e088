"""Channel type `openai_videos`: any `/v1/videos`-compatible upstream (§E; OpenAI's own shape).

Submit is `POST /v1/videos` (JSON, `input_reference.image_url` for an image) with an `Idempotency-Key`
(the mediarelay task id): OpenAI's API and mediarelay honour it, so after a submit whose outcome is
unknown the same request is sent again with the same key and the upstream answers with the video it
already has (docs/channels.md). Set `options.idempotency = false` for an upstream known to ignore the
header: unknown outcomes then fail the task instead. Polls read the Video object and honour
`openai-poll-after-ms`; the file comes from `GET /v1/videos/{id}/content` (with the credential, which the
fetcher drops if the upstream redirects to another origin). Cancel is `DELETE /v1/videos/{id}`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from mediarelay.channels import translate
from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, Submitted
from mediarelay.channels.upstream import NOT_FOUND, Upstream, lost, sandbox_headers
from mediarelay.dialects import openai_videos as dialect
from mediarelay.domain import Operation, Status, Task


class OpenAIVideosChannel:
    operations = frozenset({Operation.TEXT_TO_VIDEO, Operation.IMAGE_TO_VIDEO})

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        self.config = config
        self.http = Upstream(config, deps)
        self.idempotent_submit = bool(config.options.get("idempotency", True))

    async def submit(self, task: Task) -> Submitted:
        body = translate.to_openai(task, self.config.upstream_model(task.model))
        headers = sandbox_headers(task)
        if self.idempotent_submit:
            headers["Idempotency-Key"] = f"mediarelay-{task.id}"
        reply = await self.http.call("submit", "POST", "/v1/videos", task=task, json=body, headers=headers)
        video = self.http.parse(dialect.Video, reply, kind="submit")
        status = dialect.to_status(video)
        if status not in (Status.QUEUED, Status.RUNNING):
            status = Status.QUEUED  # the next poll tells
        return Submitted(upstream_id=video.id, status=status, raw=video.model_dump(mode="json"))

    async def poll(self, task: Task) -> PollResult:
        video_id = quote(task.upstream_id or "", safe="")
        reply = await self.http.call("poll", "GET", f"/v1/videos/{video_id}", task=task, accept=NOT_FOUND)
        if reply.status == 404:
            return lost(task, self.config.name)
        video = self.http.parse(dialect.Video, reply, kind="poll")
        raw = video.model_dump(mode="json")
        wait = _poll_after(reply.headers.get("openai-poll-after-ms"))
        status = dialect.to_status(video)
        if status in (Status.FAILED, Status.CANCELED):
            error = video.error
            return PollResult(
                status=Status.FAILED,
                raw=raw,
                error_code="upstream_canceled" if status is Status.CANCELED else "upstream_failed",
                error_message=(error.message if error else None) or "the upstream reported a failure",
            )
        outputs: tuple[Output, ...] = ()
        if status is Status.SUCCEEDED:
            url = self.http.url(f"/v1/videos/{video_id}/content?variant=video")
            outputs = (Output(role="video", mime="video/mp4", ext="mp4", url=url),)
        return PollResult(status=status, progress=video.progress, raw=raw, outputs=outputs, retry_after=wait)

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        await self.http.download(task, output, dest)

    async def cancel(self, task: Task) -> None:
        video_id = quote(task.upstream_id or "", safe="")
        await self.http.call(
            "cancel", "DELETE", f"/v1/videos/{video_id}", task=task, accept=frozenset({404, 405})
        )


def _poll_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(60.0, float(value) / 1000))
    except ValueError:
        return None
