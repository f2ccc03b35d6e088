"""Dialect B: Pika (`/pika/generate`, `/pika/feed/{id}`) — seed 001, specs/dialects.md §B.

Submit answers `{"id": "<uuid4>"}`; the feed answers `{id, promptText, videos: [...]}` with one video
item whose every documented field is always present (URLs are "" until the task is finished). Errors use
an `{"error": {message, type, code}}` envelope [MR].

The response models at the end (`PikaFeed`, `PikaVideo`, `PikaSubmitted`, `PikaError`) describe the
published shapes; they are tolerant (extra fields allowed, fields the documented examples omit default)
so that a relay channel can use them to read an upstream of this dialect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.dialects.common import (
    MAX_PROMPT,
    Prompt,
    Url,
    UrlOrBase64,
    openai_style_error,
    seed_of,
    uuid_id,
)
from mediarelay.domain import MediarelayError, Operation, Status, Task, TaskSpec, invalid

NAME = "pika"
MODELS = ("1.5", "2.0")
DEFAULT_MODEL = "1.5"

# The documented effect names; matched case-insensitively and published in this spelling.
PIKAFFECTS: tuple[str, ...] = (
    "Levitate",
    "Decapitate",
    "Eye-pop",
    "Ta-da",
    "Deflate",
    "Crumble",
    "Dissolve",
    "Squish",
    "Inflate",
    "Melt",
    "Crush",
    "Cake-ify",
    "Explode",
)
_PIKAFFECT_BY_LOWER = {name.lower(): name for name in PIKAFFECTS}

# Camera moves as Pika's own API spells them; synonyms seen in Pika's bot docs map onto them.
CAMERA_MOVES: dict[str, dict[str, str]] = {
    "pan": {"left": "left", "right": "right"},
    "tilt": {"up": "up", "down": "down"},
    "rotate": {
        "cw": "cw",
        "ccw": "ccw",
        "acw": "ccw",
        "clockwise": "cw",
        "counterclockwise": "ccw",
        "anticlockwise": "ccw",
    },
    "zoom": {"in": "in", "out": "out"},
}

# Output shape [MR]: videos are 720 p high, width from the aspect ratio; Pika's clips are 5 s.
VIDEO_HEIGHT = 720
VIDEO_SECONDS = 5
MIN_RATIO, MAX_RATIO = 0.4, 2.5  # Pika's published aspect-ratio range: clamp into it
IMAGE_SIZE = 1024
MIN_FPS, MAX_FPS = 1, 60  # [MR] Pika itself renders 8..24; the sandbox can do more, nonsense is refused
MAX_GUIDANCE = 100  # [MR] Pika publishes 5..25; refuse only values no engine could mean
MAX_MOTION = 10  # [MR] Pika publishes 0..4

STATUS: dict[Status, str] = {
    Status.QUEUED: "queued",
    Status.RUNNING: "pending",
    Status.FINALIZING: "pending",
    Status.SUCCEEDED: "finished",
    Status.FAILED: "error",
    Status.CANCELED: "error",  # [MR] with error "canceled"
}

# [MR] error `type` words in the style of the OpenAI/Anthropic envelopes Pika clients already parse.


# -- the submit request -------------------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    """The provider's own example sends `"image": ""`: an empty string means "not given"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


OptionalMedia = Annotated[UrlOrBase64 | None, BeforeValidator(_blank_to_none)]


class Camera(BaseModel):
    """`{}` or any of pan/tilt/rotate/zoom (null = no move on that axis)."""

    pan: str | None = Field(default=None, description="left | right")
    tilt: str | None = Field(default=None, description="up | down")
    rotate: str | None = Field(default=None, description="cw | ccw")
    zoom: str | None = Field(default=None, description="in | out")

    @field_validator("pan", "tilt", "rotate", "zoom")
    @classmethod
    def _move(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Case-insensitive, synonyms folded onto Pika's own spelling."""
        if value is None:
            return None
        moves = CAMERA_MOVES[str(info.field_name)]
        found = moves.get(value.strip().lower())
        if found is None:
            raise ValueError(f"must be one of {', '.join(sorted(set(moves.values())))}")
        return found


class Parameters(BaseModel):
    guidanceScale: StrictInt = Field(ge=0, le=MAX_GUIDANCE, description="prompt adherence (Pika: 5..25)")
    motion: StrictInt = Field(ge=0, le=MAX_MOTION, description="strength of motion (Pika: 0..4)")
    negativePrompt: str = Field(max_length=MAX_PROMPT, description="what to keep out of the result")


class Options(BaseModel):
    aspectRatio: StrictFloat | None = Field(
        default=None, description="width / height, e.g. 1.7777777777777777; absent = generate an image"
    )
    frameRate: StrictInt = Field(default=24, ge=MIN_FPS, le=MAX_FPS)
    camera: Camera = Field(default_factory=Camera)
    parameters: Parameters
    extend: StrictBool = Field(description="extend the given video")

    @field_validator("aspectRatio")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:  # also refuses NaN
            raise ValueError("must be a positive number (width / height)")
        return value


class PikaRequest(BaseModel):
    """POST /pika/generate."""

    promptText: Prompt
    model: Literal["1.5", "2.0"] | None = Field(default=None, description='"1.5" (default) or "2.0"')
    pikaffect: str | None = Field(default=None, description=f"one of {', '.join(PIKAFFECTS)}, or empty")
    options: Options
    image: OptionalMedia = Field(default=None, description="URL or base64 of a start image")
    video: OptionalMedia = Field(default=None, description="URL or base64 of a video to extend or restyle")
    callbackUrl: Url | None = Field(default=None, description="[MR] webhook URL (docs/webhooks.md)")

    @field_validator("pikaffect")
    @classmethod
    def _effect(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        found = _PIKAFFECT_BY_LOWER.get(value.strip().lower())
        if found is None:
            raise ValueError(f"unknown effect; one of {', '.join(PIKAFFECTS)}")
        return found


def video_width(ratio: float) -> int:
    """Width of a 720 p frame at `ratio` (clamped to Pika's range), rounded to an even number for H.264."""
    ratio = min(MAX_RATIO, max(MIN_RATIO, ratio))
    return 2 * round(VIDEO_HEIGHT * ratio / 2)


def parse(body: PikaRequest) -> TaskSpec:
    opts = body.options
    if opts.extend and body.video is None:
        raise invalid("video: required when options.extend is true", "video")
    if body.image is not None and body.video is not None:
        # [MR] Pika starts from an image OR a video, never both.
        raise invalid("give either image or video, not both", "image")
    wants_video = body.video is not None or body.pikaffect is not None
    if opts.aspectRatio is None and wants_video:
        # [MR] without aspectRatio Pika makes an image; effects and video inputs only make videos.
        raise invalid(
            "options.aspectRatio: required with a pikaffect or a video (without it Pika generates an image)",
            "options.aspectRatio",
        )
    model = body.model or DEFAULT_MODEL
    params: dict[str, Any] = {
        "prompt": body.promptText,
        "negative_prompt": opts.parameters.negativePrompt or None,
        "images": [body.image] if body.image else [],
        "video": body.video,
        "extend": opts.extend,
        "pikaffect": body.pikaffect,
        "camera": opts.camera.model_dump(exclude_none=True),
        "guidance_scale": opts.parameters.guidanceScale,
        "motion": opts.parameters.motion,
    }
    if opts.aspectRatio is None:
        operation = Operation.TEXT_TO_IMAGE  # an image prompt ("image" given) is carried in params["images"]
        params.update(output="image", width=IMAGE_SIZE, height=IMAGE_SIZE)
    else:
        if body.video is not None:
            operation = Operation.VIDEO_TO_VIDEO  # extend, or a reference video to restyle [MR]
        elif body.image is not None:
            operation = Operation.IMAGE_TO_VIDEO
        else:
            operation = Operation.TEXT_TO_VIDEO
        params.update(
            output="video",
            width=video_width(opts.aspectRatio),
            height=VIDEO_HEIGHT,
            seconds=VIDEO_SECONDS,
            fps=opts.frameRate,
            audio=body.pikaffect is not None,  # an effect adds sound [DOC]
        )
    if body.callbackUrl:
        params["webhook_url"] = body.callbackUrl  # checked and applied by the API layer
    return TaskSpec(
        dialect=NAME,
        model=f"pika-{model}",
        operation=operation,
        params=params,
        request=body.model_dump(mode="json", exclude_none=True),
        public_id=uuid_id(),
    )


def accepted(task: Task) -> dict[str, Any]:
    return {"id": task.public_id}


# -- the feed -----------------------------------------------------------------------------------------


def _duration(task: Task) -> int:
    """Seconds of the stored video once finished (0 for an image); the requested length before that."""
    if task.status is Status.SUCCEEDED:
        video = task.first_asset("video")
        return round(video.duration) if video is not None and video.duration else 0
    return int(task.params.get("seconds") or 0)


def _error(task: Task) -> str:
    if task.status is Status.CANCELED:
        return "canceled"  # [MR] the table's canceled rendering
    if task.status is Status.FAILED:
        return task.error_message or task.error_code or "failed"
    return ""


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    result = poster = thumb = ""
    if task.status is Status.SUCCEEDED:
        video = task.first_asset("video")
        main = video or task.first_asset("image")
        # [MR] an image result is its own poster; a video's poster is the derived JPEG frame.
        cover = task.first_asset("poster") if video is not None else main
        small = task.first_asset("thumbnail")
        result = ctx.url(main) if main is not None else ""
        poster = ctx.url(cover) if cover is not None else ""
        thumb = ctx.url(small) if small is not None else ""
    item: dict[str, Any] = {
        "id": task.public_id,  # [EX] the video item carries the task's own id
        "status": STATUS[task.status],
        "seed": seed_of(task.id),
        "resultUrl": result,
        "sharingUrl": result,  # [MR] mediarelay's file URLs are already shareable
        "videoPoster": poster,
        "imageThumb": thumb,
        "duration": _duration(task),
        "error": _error(task),
        "progress": max(0, min(100, int(task.progress))),
    }
    return {"id": task.public_id, "promptText": str(task.params.get("prompt") or ""), "videos": [item]}


def error(err: MediarelayError) -> tuple[int, Any]:
    """[MR] `{"error": {message, type, code}}`; `code` is mediarelay's error kind."""
    return openai_style_error(err)


# -- response models (the published shapes; also the client-side parsers for a Pika upstream) ----------


class PikaVideo(BaseModel):
    """One item of `videos`: fields the documented examples may omit default to their empty value."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = Field(description="queued | pending | finished | error")
    seed: int = 0
    resultUrl: str = ""
    sharingUrl: str = ""
    videoPoster: str = ""
    imageThumb: str = ""
    duration: int = 0
    error: str = ""
    progress: int = 0


class PikaFeed(BaseModel):
    """GET /pika/feed/{task_id}."""

    model_config = ConfigDict(extra="allow")

    id: str
    promptText: str = ""
    videos: list[PikaVideo] = Field(default_factory=list)


class PikaSubmitted(BaseModel):
    """The answer to POST /pika/generate."""

    model_config = ConfigDict(extra="allow")

    id: str


class PikaErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str = ""
    code: str = ""


class PikaError(BaseModel):
    """mediarelay's error envelope on /pika/ paths [MR]."""

    model_config = ConfigDict(extra="allow")

    error: PikaErrorBody


UPSTREAM_STATUS: dict[str, Status] = {
    "queued": Status.QUEUED,
    "pending": Status.RUNNING,
    "finished": Status.SUCCEEDED,
}


def to_status(video: PikaVideo) -> Status | None:
    """mediarelay's status for an upstream feed item; None (keep waiting) for anything unknown or empty."""
    if video.status == "error":
        return Status.CANCELED if video.error == "canceled" else Status.FAILED
    return UPSTREAM_STATUS.get(video.status)


dialect = Dialect(
    name=NAME,
    title="Pika",
    prefixes=("/pika/",),
    submit_path="/pika/generate",
    submit_model=PikaRequest,
    parse=parse,
    accepted=accepted,
    status_path="/pika/feed/{task_id}",
    status_param="task_id",
    render=render,
    error=error,
    cancel_path="/pika/feed/{task_id}/cancel",  # [MR]
)
