"""Channel type `gptbest`: an aggregator speaking the talking-avatar and Pika dialects (specs §A, §B).

Avatar tasks go to `POST /avatar/generation` + `GET /avatar/task/{id}`, every other operation it can run
(Pika's text/image/video to video, text to image) to `POST /pika/generate` + `GET /pika/feed/{id}`. The
answers are read with the dialects' own response models. Neither API has an idempotency key nor a way
to find a task by anything but its id: a submit whose outcome is unknown is not repeated (the task
fails with `submit_unknown`, see docs/channels.md). Cancel uses mediarelay's cancel extension of the
two dialects when the upstream has it; elsewhere it is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from mediarelay.channels import translate
from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, Submitted
from mediarelay.channels.upstream import NOT_FOUND, Upstream, lost, sandbox_headers
from mediarelay.dialects import avatar, pika
from mediarelay.domain import Operation, Status, Task, TaskError

PIKA_OPS = frozenset(
    {Operation.TEXT_TO_VIDEO, Operation.IMAGE_TO_VIDEO, Operation.VIDEO_TO_VIDEO, Operation.TEXT_TO_IMAGE}
)
AVATAR_STATUS = {0: Status.QUEUED, 1: Status.RUNNING, 200: Status.SUCCEEDED}


def avatar_status(work: avatar.AvatarWork) -> Status | None:
    """`web_work_status`: 200 done, negative failed, 0/1 waiting/running; anything else: keep waiting."""
    if work.web_work_status < 0:
        return Status.FAILED
    return AVATAR_STATUS.get(work.web_work_status)


class GptBestChannel:
    operations = frozenset({Operation.AVATAR}) | PIKA_OPS
    idempotent_submit = False

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        self.config = config
        self.http = Upstream(config, deps)

    @staticmethod
    def _is_avatar(task: Task) -> bool:
        return task.operation is Operation.AVATAR

    async def submit(self, task: Task) -> Submitted:
        model = self.config.upstream_model(task.model)
        if self._is_avatar(task):
            body = translate.to_avatar(task)
            reply = await self.http.call(
                "submit", "POST", "/avatar/generation", task=task, json=body, headers=sandbox_headers(task)
            )
            envelope = self.http.parse(avatar.AvatarEnvelope, reply, kind="submit")
            if envelope.code != "success" or not isinstance(envelope.data, str) or not envelope.data:
                raise TaskError(
                    "upstream_rejected", f"channel {self.config.name}: {envelope.message or envelope.code}"
                )
            return Submitted(upstream_id=envelope.data, status=Status.QUEUED, raw=envelope.model_dump())
        body = translate.to_pika(task, model)
        reply = await self.http.call(
            "submit", "POST", "/pika/generate", task=task, json=body, headers=sandbox_headers(task)
        )
        done = self.http.parse(pika.PikaSubmitted, reply, kind="submit")
        return Submitted(upstream_id=done.id, status=Status.QUEUED, raw=done.model_dump())

    async def poll(self, task: Task) -> PollResult:
        upstream_id = quote(task.upstream_id or "", safe="")
        if self._is_avatar(task):
            reply = await self.http.call(
                "poll", "GET", f"/avatar/task/{upstream_id}", task=task, accept=NOT_FOUND
            )
            if reply.status == 404:
                return lost(task, self.config.name)
            work = self.http.parse(avatar.AvatarWork, reply, kind="poll")
            status = avatar_status(work)
            raw = work.model_dump()
            if status is Status.FAILED:
                message = str(raw.get("message") or "the upstream reported a failure")
                return PollResult(status=status, raw=raw, error_code="upstream_failed", error_message=message)
            url = work.no_wm_work_video_path or work.work_video_path or work.wm_work_video_path
            if status is Status.SUCCEEDED and not url:
                status = None  # done but no file yet: keep waiting for it
            outputs = (
                (Output(role="video", mime="video/mp4", ext="mp4", url=url),)
                if status is Status.SUCCEEDED
                else ()
            )
            return PollResult(status=status, raw=raw, outputs=outputs)
        reply = await self.http.call("poll", "GET", f"/pika/feed/{upstream_id}", task=task, accept=NOT_FOUND)
        if reply.status == 404:
            return lost(task, self.config.name)
        feed = self.http.parse(pika.PikaFeed, reply, kind="poll")
        if not feed.videos:
            return PollResult(status=None, raw=feed.model_dump())  # nothing to go by: keep waiting
        video = feed.videos[0]
        status = pika.to_status(video)
        raw = feed.model_dump()
        if status in (Status.FAILED, Status.CANCELED):
            return PollResult(
                status=Status.FAILED,
                raw=raw,
                error_code="upstream_failed" if status is Status.FAILED else "upstream_canceled",
                error_message=video.error or "the upstream reported an error",
            )
        if status is Status.SUCCEEDED and not video.resultUrl:
            status = None
        found: tuple[Output, ...] = ()
        if status is Status.SUCCEEDED:
            image = task.params.get("output") == "image" or task.operation is Operation.TEXT_TO_IMAGE
            role, mime, ext = ("image", "image/png", "png") if image else ("video", "video/mp4", "mp4")
            found = (Output(role=role, mime=mime, ext=ext, url=video.resultUrl),)
        return PollResult(status=status, progress=video.progress, raw=raw, outputs=found)

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        await self.http.download(task, output, dest)

    async def cancel(self, task: Task) -> None:
        upstream_id = quote(task.upstream_id or "", safe="")
        path = (
            f"/avatar/task/{upstream_id}/cancel"
            if self._is_avatar(task)
            else f"/pika/feed/{upstream_id}/cancel"
        )
        await self.http.call("cancel", "POST", path, task=task, accept=frozenset({404, 405}))
