"""mediarelay's own API under `/v1/tasks`: one view of ANY task, whatever dialect created it.

The view shows mediarelay's own lifecycle and every stored output with its URL, MIME type, size and
checksum. `POST /v1/tasks` submits with mediarelay's normalised parameters directly (for clients that
need no vendor dialect). Times are epoch milliseconds; errors use the OpenAI-style envelope with `param`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.dialects.common import Prompt, Url, hex_id, openai_style_error
from mediarelay.domain import MediarelayError, Operation, Task, TaskSpec

NAME = "native"

NEEDS_PROMPT = {Operation.TEXT_TO_VIDEO, Operation.TEXT_TO_IMAGE}
NEEDS_IMAGE = {Operation.IMAGE_TO_VIDEO, Operation.AVATAR}
NEEDS_TARGETS = {
    Operation.FACE_SWAP_IMAGE,
    Operation.FACE_SWAP_VIDEO,
    Operation.ENHANCE,
    Operation.FILTER,
    Operation.UPSCALE,
}


class NativeTaskRequest(BaseModel):
    """POST /v1/tasks: a task in mediarelay's own terms (the names the channels read)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=100, description="routing name, e.g. sora-2, pika-1.5")
    operation: Operation
    prompt: Prompt | None = None
    negative_prompt: str | None = Field(None, max_length=2000)
    images: list[Url] = Field(default_factory=list, max_length=8)
    video: Url | None = None
    audio_url: Url | None = None
    text: str | None = Field(None, max_length=5000)
    face_url: Url | None = None
    target_urls: list[Url] = Field(default_factory=list, max_length=10)
    filter: str | None = Field(None, max_length=50)
    scale: int | None = Field(None, ge=1, le=4)
    width: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    height: int | None = Field(None, ge=16, le=4096, multiple_of=2)
    seconds: float | None = Field(None, gt=0, le=60)
    fps: int | None = Field(None, ge=1, le=60)
    audio: bool | None = None

    @model_validator(mode="after")
    def _inputs_for_operation(self) -> NativeTaskRequest:
        op = self.operation
        if op in NEEDS_PROMPT and not self.prompt:
            raise ValueError(f"prompt is required for {op.value}")
        if op in NEEDS_IMAGE and not self.images:
            raise ValueError(f"images needs at least one URL for {op.value}")
        if op in NEEDS_TARGETS and not self.target_urls:
            raise ValueError(f"target_urls needs at least one URL for {op.value}")
        if op is Operation.VIDEO_TO_VIDEO and not self.video:
            raise ValueError("video is required for video_to_video")
        if op in (Operation.FACE_SWAP_IMAGE, Operation.FACE_SWAP_VIDEO) and not self.face_url:
            raise ValueError(f"face_url is required for {op.value}")
        return self


def parse(body: NativeTaskRequest) -> TaskSpec:
    params = body.model_dump(mode="json", exclude_none=True, exclude={"model", "operation"})
    for key in ("images", "target_urls"):
        if not params.get(key):
            params.pop(key, None)
    return TaskSpec(
        dialect=NAME,
        model=body.model,
        operation=body.operation,
        params=params,
        request=body.model_dump(mode="json", exclude_none=True),
        public_id=f"tsk_{hex_id(16)}",
    )


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    outputs = [
        {
            "role": a.role,
            "index": a.index,
            "url": ctx.url(a),
            "mime": a.mime,
            "bytes": a.bytes,
            "sha256": a.sha256,
            "width": a.width,
            "height": a.height,
            "duration": a.duration,
        }
        for a in sorted(task.assets, key=lambda a: (a.index, a.role))
    ]
    error = {"code": task.error_code, "message": task.error_message} if task.error_code else None
    return {
        "id": task.id,
        "object": "task",
        "dialect": task.dialect,
        "public_id": task.public_id,
        "model": task.model,
        "operation": task.operation.value,
        "status": task.status.value,
        "progress": task.progress,
        "outputs": outputs,
        "error": error,
        "parent_id": task.parent_id,
        "children": [c.id for c in ctx.children],
        "channel": task.channel,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "updated_at": task.updated_at,
        "version": task.version,
    }


def accepted(task: Task) -> dict[str, Any]:
    return render(task, RenderContext(url=lambda a: ""))


def error(err: MediarelayError) -> tuple[int, Any]:
    return openai_style_error(err, with_param=True)


dialect = Dialect(
    name=NAME,
    title="Native tasks",
    prefixes=("/v1/tasks",),
    submit_path="/v1/tasks",
    submit_model=NativeTaskRequest,
    parse=parse,
    accepted=accepted,
    status_path="/v1/tasks/{task_id}",
    status_param="task_id",
    render=render,
    error=error,
    cancel_path="/v1/tasks/{task_id}/cancel",
    any_task=True,
)
