"""Dialect E: the OpenAI Videos API (`/v1/videos`) — specs/dialects.md §E.

The shape of OpenAI's (retired) Sora API as the official `openai` Python SDK speaks it (`client.videos`,
from openai 2.2.0 on): create (JSON, or multipart/form-data when a file is attached — SDK 3.x sends
multipart always, with `input_reference[image_url]` style fields), retrieve (with the
`openai-poll-after-ms` header the SDK's `poll()` sleeps for), list (cursor pages), delete, download
content (video / thumbnail / spritesheet) and remix. Every answer is the Video object with every key of
the SDK's `Video` type (null when unset); times are epoch SECONDS.

The response models at the end (`Video`, `VideoList`, `VideoDeleted`, `OpenAIError`) are the published
shapes, tolerant so that a relay channel can read an upstream of this dialect with them.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mediarelay.dialects.base import (
    ContentRoute,
    DeleteRoute,
    Dialect,
    ListQuery,
    ListRoute,
    RemixRoute,
    RenderContext,
    Upload,
)
from mediarelay.dialects.common import Prompt, UrlOrBase64, openai_style_error
from mediarelay.domain import ErrorKind, MediarelayError, Operation, Status, Task, TaskSpec, invalid

NAME = "openai_videos"
PATH = "/v1/videos"
DEFAULT_MODEL = "sora-2"
# Model names the SDKs send (3.x adds dated snapshots) -> the family routed on and whose rules apply.
MODELS: dict[str, str] = {
    "sora-2": "sora-2",
    "sora-2-pro": "sora-2-pro",
    "sora-2-2025-10-06": "sora-2",
    "sora-2-2025-12-08": "sora-2",
    "sora-2-pro-2025-10-06": "sora-2-pro",
}
SIZES: dict[str, tuple[int, int]] = {
    "720x1280": (720, 1280),
    "1280x720": (1280, 720),
    "1024x1792": (1024, 1792),
    "1792x1024": (1792, 1024),
}
PRO_SIZES = frozenset({"1024x1792", "1792x1024"})  # OpenAI: only sora-2-pro renders these
FPS = 30  # [MR] sora's frame rate, as in the unified dialect
LIST_LIMIT, MAX_LIST_LIMIT = 20, 100  # OpenAI's list endpoints: default 20, 1..100

STATUS: dict[Status, str] = {
    Status.QUEUED: "queued",
    Status.RUNNING: "in_progress",
    Status.FINALIZING: "in_progress",
    Status.SUCCEEDED: "completed",
    Status.FAILED: "failed",
    Status.CANCELED: "failed",  # [MR] with error code "canceled"
}

# Content variants -> the asset role the engine stores (thumbnail: WebP, spritesheet: JPEG, as OpenAI).
VARIANTS: dict[str, str] = {"video": "video", "thumbnail": "thumbnail", "spritesheet": "spritesheet"}

# What an `input_reference` upload may be (OpenAI: JPEG, PNG or WebP), by its first bytes.
IMAGE_MAGIC: tuple[tuple[bytes, int], ...] = ((b"\x89PNG\r\n\x1a\n", 0), (b"\xff\xd8\xff", 0), (b"WEBP", 8))

# Poll pacing published in `openai-poll-after-ms` (the SDK's poll() sleeps exactly this long).
POLL_MIN_MS, POLL_MAX_MS, POLL_DEFAULT_MS = 500, 5000, 1000


def new_video_id() -> str:
    """`video_` + 32 hex like OpenAI's (`video_69b131ea03548190925a6a06febf993b`): the first 8 are the
    creation time in seconds, the other 24 random."""
    return f"video_{int(time.time()) & 0xFFFFFFFF:08x}{secrets.token_hex(12)}"


# -- requests -----------------------------------------------------------------------------------------


class InputReference(BaseModel):
    """The JSON form of `input_reference` (SDK 3.x `ImageInputReferenceParam`): exactly one of the two."""

    image_url: UrlOrBase64 | None = Field(default=None, description="http(s) URL or base64 data URL")
    file_id: str | None = Field(default=None, max_length=200, description="an OpenAI file id (refused)")

    @model_validator(mode="after")
    def _one(self) -> InputReference:
        if (self.image_url is None) == (self.file_id is None):
            raise ValueError("give exactly one of image_url, file_id")
        return self


class VideoCreate(BaseModel):
    """POST /v1/videos (JSON, or multipart/form-data with `input_reference` as a file)."""

    prompt: Prompt
    model: str = Field(default=DEFAULT_MODEL, description="sora-2 (default) or sora-2-pro")
    seconds: Literal["4", "8", "12"] = Field(default="4", description='clip length, a string: "4", "8", "12"')
    size: Literal["720x1280", "1280x720", "1024x1792", "1792x1024"] = Field(
        default="720x1280", description="width x height; 1024x1792 and 1792x1024 need sora-2-pro"
    )
    input_reference: InputReference | None = Field(
        default=None, description="an image guiding the video: a file upload (multipart) or {image_url}"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"must be one of {', '.join(MODELS)}")
        return value


class VideoRemix(BaseModel):
    """POST /v1/videos/{video_id}/remix."""

    prompt: Prompt


def parse(body: VideoCreate) -> TaskSpec:
    family = MODELS[body.model]
    if body.size in PRO_SIZES and family != "sora-2-pro":
        raise invalid(
            f"size: {body.size} needs model sora-2-pro ({body.model} renders 720x1280 or 1280x720)", "size"
        )
    ref = body.input_reference
    if ref is not None and ref.file_id is not None:
        # [MR] mediarelay has no Files API, so it knows no file ids.
        raise invalid(
            "input_reference.file_id: file ids are not supported; upload the image or give image_url",
            "input_reference",
        )
    images = [ref.image_url] if ref is not None and ref.image_url else []
    width, height = SIZES[body.size]
    params: dict[str, Any] = {
        "prompt": body.prompt,
        "images": images,
        "width": width,
        "height": height,
        "seconds": int(body.seconds),
        "fps": FPS,
        "audio": True,  # sora clips carry sound
        "watermark": False,
        "output": "video",
        "requested_model": body.model,
    }
    return TaskSpec(
        dialect=NAME,
        model=family,
        operation=Operation.IMAGE_TO_VIDEO if images else Operation.TEXT_TO_VIDEO,
        params=params,
        request=body.model_dump(mode="json", exclude_none=True),
        public_id=new_video_id(),
    )


def _is_image(head: bytes) -> bool:
    return any(head[at : at + len(magic)] == magic for magic, at in IMAGE_MAGIC)


def attach_uploads(spec: TaskSpec, uploads: Sequence[Upload]) -> TaskSpec:
    """An `input_reference` file becomes the image reference (mediarelay's own URL of the stored file)."""
    if not uploads:
        return spec
    upload = uploads[0]
    if spec.params["images"]:
        raise invalid("input_reference: give a file or an image_url, not both", "input_reference")
    if upload.size == 0:
        raise invalid("input_reference: the uploaded file is empty", "input_reference")
    if not _is_image(upload.head):
        raise invalid("input_reference: must be a JPEG, PNG or WebP image", "input_reference")
    request = {
        **spec.request,
        "input_reference": {
            "filename": upload.filename,
            "content_type": upload.content_type,
            "bytes": upload.size,
        },
    }
    return dataclasses.replace(
        spec,
        operation=Operation.IMAGE_TO_VIDEO,
        params={**spec.params, "images": [upload.url]},
        request=request,
    )


def parse_remix(body: VideoRemix, source: Task, ctx: RenderContext) -> TaskSpec:
    """A new video from a completed one: same model, size and length; the source video is the input."""
    video = source.first_asset("video")
    if source.status is not Status.SUCCEEDED or video is None:
        raise invalid(
            f"video {source.public_id} is {STATUS[source.status]}: only a completed video can be remixed",
            "video_id",
        )
    p = source.params
    params: dict[str, Any] = {
        "prompt": body.prompt,
        "images": [],
        "video": ctx.url(video),
        "width": p["width"],
        "height": p["height"],
        "seconds": p["seconds"],
        "fps": p.get("fps", FPS),
        "audio": True,
        "watermark": False,
        "output": "video",
        "requested_model": p.get("requested_model", source.model),
        "remixed_from_video_id": source.public_id,
    }
    return TaskSpec(
        dialect=NAME,
        model=source.model,
        operation=Operation.VIDEO_TO_VIDEO,
        params=params,
        request={**body.model_dump(mode="json"), "remix_of": source.public_id},
        public_id=new_video_id(),
    )


# -- the Video object ---------------------------------------------------------------------------------


def _seconds(ms: int | None) -> int | None:
    return ms // 1000 if ms is not None else None


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    p = task.params
    finished = task.status.terminal
    failed = task.status in (Status.FAILED, Status.CANCELED)
    error: dict[str, str] | None = None
    if failed:
        code = "canceled" if task.status is Status.CANCELED else (task.error_code or "failed")
        error = {"code": code, "message": task.error_message or code}
    return {
        "id": task.public_id,
        "object": "video",
        "model": str(p.get("requested_model") or task.model),
        "status": STATUS[task.status],
        "progress": 100 if task.status is Status.SUCCEEDED else max(0, min(100, int(task.progress))),
        "created_at": task.created_at // 1000,
        # [MR] set once the job is finished, completed or failed ("when the job completed, if finished")
        "completed_at": _seconds(task.finished_at) if finished else None,
        # [MR] mediarelay keeps results until the video is deleted: nothing expires
        "expires_at": None,
        "prompt": str(p.get("prompt") or ""),
        "remixed_from_video_id": p.get("remixed_from_video_id"),
        "seconds": str(p.get("seconds", 4)),
        "size": f"{p.get('width', 720)}x{p.get('height', 1280)}",
        "error": error,
    }


def accepted(task: Task) -> dict[str, Any]:
    """The create/remix answer: the Video object (queued); it carries no URLs."""
    return render(task, RenderContext(url=lambda _asset: ""))


def poll_after_ms(task: Task) -> int:
    """[MR] How long the SDK's poll() should wait: a quarter of the remaining time estimated from the
    progress rate so far (queued, or no progress yet: 1 s), kept within 0.5..5 s."""
    if task.status is Status.QUEUED or task.progress <= 0:
        return POLL_DEFAULT_MS
    elapsed = task.updated_at - (task.started_at or task.created_at)
    if elapsed <= 0:
        return POLL_DEFAULT_MS
    remaining = elapsed * (100 - min(99, task.progress)) / task.progress
    return max(POLL_MIN_MS, min(POLL_MAX_MS, round(remaining / 4)))


def status_headers(task: Task) -> dict[str, str]:
    if task.status.terminal:
        return {}
    return {"openai-poll-after-ms": str(poll_after_ms(task))}


def error(err: MediarelayError) -> tuple[int, Any]:
    """OpenAI's envelope: `{"error": {message, type, param, code}}`; `code` is mediarelay's error kind."""
    return openai_style_error(err, with_param=True)


# -- list, delete, content ----------------------------------------------------------------------------


def parse_list(query: Mapping[str, str]) -> ListQuery:
    raw_limit = query.get("limit")
    limit = LIST_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise invalid(f"limit: must be an integer from 1 to {MAX_LIST_LIMIT}", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("order: must be 'asc' or 'desc'", "order")
    return ListQuery(limit=limit, after=query.get("after") or None, descending=order == "desc")


def render_list(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def render_deleted(task: Task) -> dict[str, Any]:
    return {"id": task.public_id, "object": "video.deleted", "deleted": True}


def content_not_ready(task: Task) -> MediarelayError:
    """OpenAI answers 404 while the video is not completed (checked against the live API by others)."""
    if task.status in (Status.FAILED, Status.CANCELED):
        return MediarelayError(ErrorKind.NOT_FOUND, f"Video {task.public_id} failed: it has no content.")
    return MediarelayError(
        ErrorKind.NOT_FOUND, f"Video is not ready yet, use GET /v1/videos/{task.public_id} to check status."
    )


# -- response models (the published shapes; also the client-side parsers for an upstream) -------------


class VideoError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class Video(BaseModel):
    """The Video object: every key of the SDK's `Video` type (2.2.0 and current)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str | None = None
    remixed_from_video_id: str | None = None
    seconds: str
    size: str
    error: VideoError | None = None


class VideoList(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    data: list[Video] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class OpenAIErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str = ""
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    model_config = ConfigDict(extra="allow")

    error: OpenAIErrorBody


UPSTREAM_STATUS: dict[str, Status] = {
    "queued": Status.QUEUED,
    "in_progress": Status.RUNNING,
    "completed": Status.SUCCEEDED,
}


def to_status(video: Video) -> Status | None:
    """mediarelay's status for an upstream Video; None (keep waiting) for anything unknown."""
    if video.status == "failed":
        return (
            Status.CANCELED if video.error is not None and video.error.code == "canceled" else Status.FAILED
        )
    return UPSTREAM_STATUS.get(video.status)


dialect = Dialect(
    name=NAME,
    title="OpenAI videos",
    prefixes=(PATH + "/",),
    submit_path=PATH,
    submit_model=VideoCreate,
    parse=parse,
    accepted=accepted,
    status_path=PATH + "/{video_id}",
    status_param="video_id",
    render=render,
    error=error,
    cancel_path=PATH + "/{video_id}/cancel",  # [MR] OpenAI has none (DELETE stops a running job too)
    status_headers=status_headers,
    list_route=ListRoute(path=PATH, parse=parse_list, render=render_list),
    delete_route=DeleteRoute(path=PATH + "/{video_id}", render=render_deleted),
    content_route=ContentRoute(
        path=PATH + "/{video_id}/content", variants=VARIANTS, default="video", not_ready=content_not_ready
    ),
    remix_route=RemixRoute(path=PATH + "/{video_id}/remix", body_model=VideoRemix, parse=parse_remix),
    upload_fields=("input_reference",),
    attach_uploads=attach_uploads,
)
