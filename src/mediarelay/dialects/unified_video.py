"""Dialect C: unified video format ("统一视频格式": sora-2, veo, grok) — seed 003, specs/dialects.md §C.

One submit endpoint for three model families, one query shape for all of them:

- `POST /v1/video/create` → `{"id", "status": "pending", "status_update_time"}` (ms).
- `GET /v1/video/query?id=…` → `{id, status, video_url, enhanced_prompt, status_update_time, detail}`, all six
  keys always present (`video_url` null until completed, `enhanced_prompt` "" unless a veo request asked for
  prompt enhancement). `status` is pending | processing | completed | failed (a canceled task is failed).
- `POST /v1/video/cancel?id=…` [MR] → the query object after the cancel.
- Errors [MR]: `{"error": {"message", "type", "code"}}` with the HTTP status.

Id formats [EX]: `sora-2:task_<26 lowercase ULID chars>` for every sora model, `<model>:<unix s>-<10 alnum>`
for veo, `grok:<uuid4>` for grok. The public id is the whole string.

`detail` by family:
- sora: the upstream task exactly as the seed shows it: `{id: "task_…", input: {size, model, images, prompt,
  orientation}, status, pending_info: {… every key of the seed …}}`; `pending_info.progress_pct` is a fraction
  0..1, `pending_info.status` is queued | processing | succeeded | failed [MR], `generations` is [] until the
  video exists, then one `{id, url, width, height, n_frames}` [MR].
- veo and grok [MR]: `{id, input, status, progress, video_url, failure_reason}` where `id` is the part of the
  public id after `<family>:`, `input` the normalised request, `status` the top-level status, `progress` an
  integer percentage 0..100, `video_url` as at the top level and `failure_reason` null or the error message.

Sizes and lengths [MR]: sora small = 720x1280 (portrait) / 1280x720 (landscape), large = 1080x1920 /
1920x1080, 30 fps, 10 | 15 s (25 s on sora-2-pro); veo 8 s at 24 fps, 1280x720 (16:9) or 720x1280 (9:16),
1920x1080 or 1080x1920 with `enable_upsample`; grok 6 s at 24 fps, 720P or 1080P on the short side of
2:3 | 3:2 | 1:1.

Request rules [MR]: the model name is matched case-insensitively; a field of another family (e.g.
`aspect_ratio` on sora, `watermark` on veo) is a 400; defaults: sora portrait / small / 10 s / watermark on,
veo3 16:9, grok 3:2 / 720P; `duration` on veo/grok is accepted only as their fixed length; images: sora ≤ 4,
plain veo and grok ≤ 1, `*-frames` 1–2 (first/last frame), `*-components` 1–3; `character_timestamps` needs
`character_url` and reads "start,end" seconds with start < end. A query without `id` is a 400.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from ulid import ULID

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.dialects.common import Prompt, Url, openai_style_error, uuid_id
from mediarelay.domain import MediarelayError, Operation, Status, Task, TaskSpec, invalid

NAME = "unified_video"

SORA_MODELS = ("sora-2", "sora-2-all", "sora-2-pro")
VEO_MODELS = (
    "veo2",
    "veo2-fast",
    "veo2-fast-frames",
    "veo2-fast-components",
    "veo2-pro",
    "veo3",
    "veo3-fast",
    "veo3-pro",
    "veo3-pro-frames",
    "veo3-fast-frames",
    "veo3-frames",
    "veo3.1-fast",
    "veo3.1-components",
)
GROK_MODELS = ("grok-video-3",)
FAMILY: dict[str, str] = {
    **dict.fromkeys(SORA_MODELS, "sora"),
    **dict.fromkeys(VEO_MODELS, "veo"),
    **dict.fromkeys(GROK_MODELS, "grok"),
}
SUPPORTED = ", ".join(FAMILY)

# Which optional request fields each family understands; anything else given is a 400 [MR]: a field of
# another family (say `aspect_ratio` on sora) is a mistake the caller wants to hear about, not silence.
FAMILY_FIELDS: dict[str, frozenset[str]] = {
    "sora": frozenset(
        {"orientation", "size", "duration", "watermark", "private", "character_url", "character_timestamps"}
    ),
    "veo": frozenset({"enhance_prompt", "enable_upsample", "aspect_ratio", "duration"}),
    "grok": frozenset({"aspect_ratio", "size", "duration"}),
}
OPTIONAL_FIELDS = frozenset().union(*FAMILY_FIELDS.values())

MAX_IMAGES = 10  # schema bound; each family has its own, smaller limit below
SORA_MAX_IMAGES = 4  # [MR] the seed shows two reference images; the provider documents no limit
SORA_FPS = 30  # the seed: n_frames 450 for a 15 s video
SORA_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("small", "portrait"): (720, 1280),
    ("small", "landscape"): (1280, 720),
    ("large", "portrait"): (1080, 1920),
    ("large", "landscape"): (1920, 1080),
}
VEO_SECONDS = 8  # [MR]
GROK_SECONDS = 6  # [MR]
OTHER_FPS = 24  # [MR] veo and grok
VEO_SIZES: dict[tuple[str, bool], tuple[int, int]] = {
    ("16:9", False): (1280, 720),
    ("9:16", False): (720, 1280),
    ("16:9", True): (1920, 1080),
    ("9:16", True): (1080, 1920),
}
GROK_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("3:2", "720P"): (1080, 720),
    ("2:3", "720P"): (720, 1080),
    ("1:1", "720P"): (720, 720),
    ("3:2", "1080P"): (1620, 1080),
    ("2:3", "1080P"): (1080, 1620),
    ("1:1", "1080P"): (1080, 1080),
}
TIMESTAMPS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*$")
ALNUM = string.ascii_letters + string.digits

STATUS: dict[Status, str] = {
    Status.QUEUED: "pending",
    Status.RUNNING: "processing",
    Status.FINALIZING: "processing",
    Status.SUCCEEDED: "completed",
    Status.FAILED: "failed",
    Status.CANCELED: "failed",  # [MR] the dialect has no canceled status; failure_reason says why
}
SORA_STATUS: dict[Status, str] = {  # [MR] pending_info.status, the upstream's own words
    Status.QUEUED: "queued",
    Status.RUNNING: "processing",
    Status.FINALIZING: "processing",
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELED: "failed",
}


# --------------------------------------------------------------------------------------------- submit


class VideoCreateRequest(BaseModel):
    """POST /v1/video/create. The fields a model family does not know are rejected in `parse`."""

    model: str = Field(description=f"one of: {SUPPORTED}")
    prompt: Prompt
    images: list[Url] = Field(default_factory=list, max_length=MAX_IMAGES, description="reference image URLs")
    # sora
    orientation: Literal["portrait", "landscape"] | None = Field(None, description="sora; default portrait")
    size: Literal["small", "large", "720P", "1080P"] | None = Field(
        None, description="sora: small | large (default small); grok: 720P | 1080P (default 720P)"
    )
    duration: int | None = Field(None, description="seconds; sora 10 | 15 (25 on sora-2-pro), veo 8, grok 6")
    watermark: bool | None = Field(None, description="sora; default true")
    private: bool | None = Field(None, description="sora; default false")
    character_url: Url | None = Field(None, description="sora: a video of the character to cast")
    character_timestamps: str | None = Field(None, description='sora: "start,end" seconds in character_url')
    # veo
    enhance_prompt: bool | None = Field(None, description="veo; default false")
    enable_upsample: bool | None = Field(None, description="veo: 1080p instead of 720p; default false")
    # veo3 / grok
    aspect_ratio: Literal["16:9", "9:16", "2:3", "3:2", "1:1"] | None = Field(
        None, description="veo3*: 16:9 | 9:16 (default 16:9); grok: 2:3 | 3:2 | 1:1 (default 3:2)"
    )
    callback_url: Url | None = Field(None, description="[MR] webhook URL (docs/webhooks.md)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in FAMILY:
            raise ValueError(f"unsupported model {value!r}; supported models: {SUPPORTED}")
        return name


def _sora_id() -> str:
    return f"sora-2:task_{str(ULID()).lower()}"


def _veo_id(model: str) -> str:
    return f"{model}:{int(time.time())}-{''.join(secrets.choice(ALNUM) for _ in range(10))}"


def _grok_id() -> str:
    return f"grok:{uuid_id()}"


def _check_fields(body: VideoCreateRequest, family: str) -> None:
    allowed = FAMILY_FIELDS[family]
    for name in sorted(OPTIONAL_FIELDS - allowed):
        if getattr(body, name) is not None:
            raise invalid(f"{name}: not supported by model {body.model} ({family})", name)


def _check_images(body: VideoCreateRequest, limit: int, *, required: bool = False) -> None:
    if len(body.images) > limit:
        raise invalid(
            f"images: model {body.model} takes at most {limit} image(s), got {len(body.images)}", "images"
        )
    if required and not body.images:
        raise invalid(f"images: model {body.model} needs at least one image", "images")


def _sora(body: VideoCreateRequest) -> tuple[str, dict[str, Any]]:
    _check_images(body, SORA_MAX_IMAGES)
    size = body.size or "small"  # [MR] default small (≈720p)
    if size not in ("small", "large"):
        raise invalid("size: must be 'small' or 'large' for sora models", "size")
    orientation = body.orientation or "portrait"  # [MR] default portrait, as in the seed
    durations = (10, 15, 25) if body.model == "sora-2-pro" else (10, 15)
    duration = 10 if body.duration is None else body.duration  # [MR] default 10 s
    if duration not in durations:
        raise invalid(
            f"duration: must be one of {', '.join(map(str, durations))} for {body.model}", "duration"
        )
    timestamps = None
    if body.character_timestamps is not None:
        if body.character_url is None:
            raise invalid("character_timestamps: needs character_url", "character_timestamps")
        found = TIMESTAMPS.match(body.character_timestamps)
        if not found or float(found[1]) >= float(found[2]):
            raise invalid(
                'character_timestamps: must be "start,end" seconds with start < end', "character_timestamps"
            )
        timestamps = f"{found[1]},{found[2]}"
    width, height = SORA_SIZES[(size, orientation)]
    params = {
        "size": size,
        "orientation": orientation,
        "width": width,
        "height": height,
        "seconds": duration,
        "fps": SORA_FPS,
        "n_frames": SORA_FPS * duration,
        "audio": True,  # sora-2 videos carry sound
        "watermark": True if body.watermark is None else body.watermark,
        "private": bool(body.private),
        "character_url": body.character_url,
        "character_timestamps": timestamps,
    }
    return _sora_id(), params


def _veo(body: VideoCreateRequest) -> tuple[str, dict[str, Any]]:
    model = body.model
    if model.endswith("-frames"):
        _check_images(body, 2, required=True)  # [MR] first (and last) frame: a frames model needs one
    elif model.endswith("-components"):
        _check_images(body, 3, required=True)  # [MR] components are the images; at least one
    else:
        _check_images(body, 1)  # [MR] plain models: at most one starting frame
    if body.duration is not None and body.duration != VEO_SECONDS:
        raise invalid(f"duration: veo models make {VEO_SECONDS} s videos", "duration")
    if model.startswith("veo2") and body.aspect_ratio is not None:
        raise invalid(f"aspect_ratio: not supported by {model} (veo3 models only)", "aspect_ratio")
    ratio = body.aspect_ratio or "16:9"  # [MR] default landscape
    if ratio not in ("16:9", "9:16"):
        raise invalid("aspect_ratio: must be '16:9' or '9:16' for veo3 models", "aspect_ratio")
    upsample = bool(body.enable_upsample)
    width, height = VEO_SIZES[(ratio, upsample)]
    params = {
        "aspect_ratio": ratio,
        "enhance_prompt": bool(body.enhance_prompt),
        "enable_upsample": upsample,
        "width": width,
        "height": height,
        "seconds": VEO_SECONDS,
        "fps": OTHER_FPS,
        "audio": model.startswith("veo3"),  # veo3 generates sound, veo2 does not
        "watermark": False,
    }
    return _veo_id(model), params


def _grok(body: VideoCreateRequest) -> tuple[str, dict[str, Any]]:
    _check_images(body, 1)  # [MR] one starting image
    if body.duration is not None and body.duration != GROK_SECONDS:
        raise invalid(f"duration: grok makes {GROK_SECONDS} s videos", "duration")
    ratio = body.aspect_ratio or "3:2"  # [MR] default landscape
    if ratio not in ("2:3", "3:2", "1:1"):
        raise invalid("aspect_ratio: must be '2:3', '3:2' or '1:1' for grok", "aspect_ratio")
    size = body.size or "720P"  # [MR] default 720P
    if size not in ("720P", "1080P"):
        raise invalid("size: must be '720P' or '1080P' for grok", "size")
    width, height = GROK_SIZES[(ratio, size)]
    params = {
        "aspect_ratio": ratio,
        "size": size,
        "width": width,
        "height": height,
        "seconds": GROK_SECONDS,
        "fps": OTHER_FPS,
        "audio": True,
        "watermark": False,
    }
    return _grok_id(), params


BUILDERS: dict[str, Callable[[VideoCreateRequest], tuple[str, dict[str, Any]]]] = {
    "sora": _sora,
    "veo": _veo,
    "grok": _grok,
}


def parse(body: VideoCreateRequest) -> TaskSpec:
    family = FAMILY[body.model]
    _check_fields(body, family)
    public_id, params = BUILDERS[family](body)
    params = {"family": family, "prompt": body.prompt, "images": list(body.images), **params}
    if body.callback_url:
        params["webhook_url"] = body.callback_url  # checked and applied by the API layer
    return TaskSpec(
        dialect=NAME,
        model=body.model,
        operation=Operation.IMAGE_TO_VIDEO if body.images else Operation.TEXT_TO_VIDEO,
        params=params,
        request=body.model_dump(mode="json", exclude_none=True),
        public_id=public_id,
    )


def accepted(task: Task) -> dict[str, Any]:
    return {"id": task.public_id, "status": STATUS[task.status], "status_update_time": task.updated_at}


# --------------------------------------------------------------------------------------------- query


def _derived_ulid(task: Task, salt: str) -> str:
    """A lowercase ULID stable for the task (renders must be byte-identical), timestamped like the task."""
    digest = hashlib.blake2b(f"{task.id}:{salt}".encode(), digest_size=10).digest()
    return str(ULID.from_bytes(bytes(ULID.from_str(task.id))[:6] + digest)).lower()


def _user(task: Task) -> str:
    """`user-` + 24 alphanumerics derived from the owner key: stable, and reveals nothing about the key."""
    digest = hashlib.blake2b(f"user:{task.key_id}".encode(), digest_size=24).digest()
    return "user-" + "".join(ALNUM[b % len(ALNUM)] for b in digest)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _failure(task: Task) -> str | None:
    if task.status is Status.CANCELED:
        return task.error_message or "canceled"
    if task.status is Status.FAILED:
        return task.error_message or "generation failed"
    return None


def _sora_detail(task: Task, status: str, video_url: str | None) -> dict[str, Any]:
    p = task.params
    upstream_id = task.public_id.split(":", 1)[1]
    images: list[str] = list(p.get("images") or [])
    video = task.first_asset("video") if video_url else None
    generations: list[dict[str, Any]] = []
    if video is not None and video_url:
        generations.append(
            {
                "id": f"gen_{_derived_ulid(task, 'generation')}",
                "url": video_url,
                "width": video.width or p["width"],
                "height": video.height or p["height"],
                "n_frames": p["n_frames"],
            }
        )
    progress = 1.0 if task.status is Status.SUCCEEDED else task.progress / 100
    inpaint_items = [
        {
            "type": "image",
            "preset_id": None,
            "crop_bounds": None,
            "frame_index": 0,
            "cameo_file_id": None,
            "generation_id": None,
            "upload_media_id": f"media_{_derived_ulid(task, f'media-{i}')}",
            "source_end_frame": 0,
            "uploaded_file_id": None,
            "source_start_frame": 0,
        }
        for i in range(len(images))
    ]
    return {
        "id": upstream_id,
        "input": {
            "size": p["size"],
            "model": task.model,
            "images": images,
            "prompt": p["prompt"],
            "orientation": p["orientation"],
        },
        "status": status,
        "pending_info": {
            "id": upstream_id,
            "seed": None,
            "type": "video_gen",
            "user": _user(task),
            "model": task.model,
            "title": "New Video",
            "width": p["width"],
            "height": p["height"],
            "prompt": p["prompt"],
            "sdedit": None,
            "status": SORA_STATUS[task.status],
            "actions": None,
            "guidance": None,
            "n_frames": p["n_frames"],
            "priority": 2,  # [MR] the seed's value
            "operation": "simple_compose",
            "preset_id": None,
            "created_at": _iso(task.created_at),
            "n_variants": 1,
            "project_id": None,
            "request_id": None,
            "generations": generations,
            "tracking_id": None,
            "progress_pct": float(progress),
            "remix_config": None,
            "inpaint_items": inpaint_items,
            "interpolation": None,
            "is_storyboard": None,
            "failure_reason": _failure(task),
            "organization_id": None,
            "moderation_result": {
                "code": None,
                "type": "passed",
                "task_id": upstream_id,
                "is_output_rejection": False,
                "results_by_frame_index": {},
            },
            "needs_user_review": False,
            "queue_status_message": None,
            "progress_pos_in_queue": None,
            "num_unsafe_generations": 0,
            "estimated_queue_wait_time": None,
        },
    }


def _plain_detail(task: Task, status: str, video_url: str | None) -> dict[str, Any]:
    """[MR] veo and grok: a small, documented detail (see the module docstring)."""
    p = task.params
    keys = (
        ("aspect_ratio", "enhance_prompt", "enable_upsample")
        if p["family"] == "veo"
        else ("aspect_ratio", "size")
    )
    return {
        "id": task.public_id.split(":", 1)[1],
        "input": {
            "model": task.model,
            "prompt": p["prompt"],
            "images": list(p.get("images") or []),
            **{k: p[k] for k in keys},
        },
        "status": status,
        "progress": 100 if task.status is Status.SUCCEEDED else int(task.progress),
        "video_url": video_url,
        "failure_reason": _failure(task),
    }


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    status = STATUS[task.status]
    video = task.first_asset("video")
    video_url = ctx.url(video) if video is not None and task.status is Status.SUCCEEDED else None
    p = task.params
    # [MR] no upstream enhances here: an enhance_prompt request (veo) echoes the prompt it would enhance.
    enhanced = p["prompt"] if p.get("enhance_prompt") else ""
    detail = (_sora_detail if p["family"] == "sora" else _plain_detail)(task, status, video_url)
    return {
        "id": task.public_id,
        "status": status,
        "video_url": video_url,
        "enhanced_prompt": enhanced,
        "status_update_time": task.updated_at,
        "detail": detail,
    }


def error(err: MediarelayError) -> tuple[int, Any]:
    """[MR] `{"error": {message, type, code}}`; `code` is mediarelay's error kind."""
    return openai_style_error(err)


# --------------------------------------------------------------------------------------------- responses
# The published response shapes, as tolerant client-side parsers (extra keys allowed; keys the seed's
# example omits have defaults). A relay channel to an upstream of this dialect parses with these.


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class CreateResponse(_Tolerant):
    id: str
    status: str
    status_update_time: int


class SoraInput(_Tolerant):
    size: str | None = None
    model: str | None = None
    images: list[str] = Field(default_factory=list)
    prompt: str | None = None
    orientation: str | None = None


class InpaintItem(_Tolerant):
    type: str = "image"
    preset_id: Any = None
    crop_bounds: Any = None
    frame_index: int = 0
    cameo_file_id: Any = None
    generation_id: Any = None
    upload_media_id: str | None = None
    source_end_frame: int = 0
    uploaded_file_id: Any = None
    source_start_frame: int = 0


class ModerationResult(_Tolerant):
    code: Any = None
    type: str = "passed"
    task_id: str | None = None
    is_output_rejection: bool = False
    results_by_frame_index: dict[str, Any] = Field(default_factory=dict)


class Generation(_Tolerant):
    id: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None


class PendingInfo(_Tolerant):
    id: str
    seed: int | None = None
    type: str = "video_gen"
    user: str | None = None
    model: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    prompt: str | None = None
    sdedit: Any = None
    status: str | None = None
    actions: Any = None
    guidance: Any = None
    n_frames: int | None = None
    priority: int | None = None
    operation: str | None = None
    preset_id: Any = None
    created_at: str | None = None
    n_variants: int | None = None
    project_id: Any = None
    request_id: Any = None
    generations: list[Generation] = Field(default_factory=list)
    tracking_id: Any = None
    progress_pct: float | None = None
    remix_config: Any = None
    inpaint_items: list[InpaintItem] = Field(default_factory=list)
    interpolation: Any = None
    is_storyboard: Any = None
    failure_reason: str | None = None
    organization_id: Any = None
    moderation_result: ModerationResult | None = None
    needs_user_review: bool = False
    queue_status_message: str | None = None
    progress_pos_in_queue: int | None = None
    num_unsafe_generations: int = 0
    estimated_queue_wait_time: Any = None


class SoraDetail(_Tolerant):
    id: str
    input: SoraInput | None = None
    status: str | None = None
    pending_info: PendingInfo


class VideoDetail(_Tolerant):
    """[MR] The veo/grok detail mediarelay publishes (any other family's detail parses as this too)."""

    id: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    status: str | None = None
    progress: int | None = None
    video_url: str | None = None
    failure_reason: str | None = None


def _detail_kind(value: Any) -> str:
    data = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    return "sora" if "pending_info" in data else "other"


Detail = Annotated[
    Annotated[SoraDetail, Tag("sora")] | Annotated[VideoDetail, Tag("other")],
    Discriminator(_detail_kind),
]


class QueryResponse(_Tolerant):
    id: str
    status: str
    video_url: str | None = None
    enhanced_prompt: str | None = ""
    status_update_time: int
    detail: Detail | None = None


class ErrorBody(_Tolerant):
    message: str
    type: str | None = None
    code: str | None = None


class ErrorResponse(_Tolerant):
    """[MR] `{"error": {"message", "type", "code"}}`, sent with the HTTP status."""

    error: ErrorBody


dialect = Dialect(
    name=NAME,
    title="Unified video",
    prefixes=("/v1/video/",),
    submit_path="/v1/video/create",
    submit_model=VideoCreateRequest,
    parse=parse,
    accepted=accepted,
    status_path="/v1/video/query",
    status_param="id",
    render=render,
    error=error,
    cancel_path="/v1/video/cancel",  # [MR]
)
