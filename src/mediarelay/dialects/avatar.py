"""Dialect A: talking avatar ("数字人", DreamFace) — seed 000, specs/dialects.md §A.

Submit answers a `{code, message, data}` wrapper; the query answers the bare work object with every
field of the published table always present (URLs are "" until the task is done).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mediarelay.dialects.base import Catalog, Dialect, ExtraRoute, RenderContext
from mediarelay.dialects.common import Url, hex_id, object_id
from mediarelay.domain import ErrorKind, MediarelayError, Operation, Status, Task, TaskSpec, invalid

NAME = "avatar"
MODEL = "dreamface-avatar"
MAX_TEXT = 5000

STATUS: dict[Status, int] = {
    Status.QUEUED: 0,
    Status.RUNNING: 1,
    Status.FINALIZING: 1,
    Status.SUCCEEDED: 200,
    Status.FAILED: -1,
    Status.CANCELED: -1,
}

ERROR_CODES: dict[ErrorKind, str] = {
    ErrorKind.UNAUTHORIZED: "unauthorized",
    ErrorKind.FORBIDDEN: "unauthorized",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.INSUFFICIENT_QUOTA: "insufficient_quota",
    ErrorKind.RATE_LIMITED: "rate_limited",
    ErrorKind.INTERNAL: "internal_error",
    ErrorKind.UNAVAILABLE: "internal_error",
}


def _language(value: str) -> str:
    value = value.strip().lower()
    if value == "cn":  # seen in the provider's own example
        return "zh"
    if value not in ("zh", "en"):
        raise ValueError("must be 'zh' or 'en'")
    return value


class CreateVoice(BaseModel):
    audio_url: Url = Field(description="at least 20 s of the voice to clone")
    language: str = Field(description="zh | en (cn accepted as zh)")
    text: str = Field(min_length=1, max_length=MAX_TEXT)

    @field_validator("language")
    @classmethod
    def _lang(cls, value: str) -> str:
        return _language(value)


class UseVoice(BaseModel):
    voice_engine_id: str = Field(min_length=1, max_length=200)
    audio_id: str = Field(min_length=1, max_length=200)
    language: str = Field(description="zh | en")
    text: str = Field(min_length=1, max_length=MAX_TEXT)

    @field_validator("language")
    @classmethod
    def _lang(cls, value: str) -> str:
        return _language(value)


class AvatarRequest(BaseModel):
    """POST /avatar/generation: exactly one of audio_url, create_voice, use_voice."""

    avatar_url: Url = Field(description="image or video of the person; must contain a face")
    audio_url: Url | None = None
    create_voice: CreateVoice | None = None
    use_voice: UseVoice | None = None
    no_watermark: bool = False
    callback_url: Url | None = Field(default=None, description="[MR] webhook URL (docs/webhooks.md)")

    @model_validator(mode="after")
    def _one_voice(self) -> AvatarRequest:
        given = [n for n in ("audio_url", "create_voice", "use_voice") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of audio_url, create_voice, use_voice is required"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class AvatarExt(BaseModel):
    model_config = ConfigDict(extra="allow")

    sing_title: str = ""
    track_info: str = ""
    animate_channel: str = ""


class AvatarWork(BaseModel):
    """GET /avatar/task/{task_id}: the seed's field table. Tolerant (extra fields, defaults) so that it also
    parses an upstream's answer when mediarelay relays this dialect."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    ext: AvatarExt = AvatarExt()
    singer: str = ""
    file_type: str = ""
    work_name: str = ""
    animate_id: str = ""
    play_types: list[str] = []
    vip_enable: bool = False
    create_time: int = 0
    music_title: str = ""
    template_id: str = ""
    user_image_url: str = ""
    work_webp_path: str = ""
    web_work_status: int = 0
    work_video_path: str = ""
    share_magic_text: str = ""
    example_image_url: list[str] = []
    picture_path_list: list[str] = []
    primary_play_type: str = ""
    tmp_online_enable: bool = False
    webp_aspect_ratio: int = 1
    animate_params_str: str = ""
    video_aspect_ratio: int = 1
    wm_work_video_path: str = ""
    template_create_time: int = 0
    no_wm_work_video_path: str = ""


class AvatarEnvelope(BaseModel):
    """The `{code, message, data}` wrapper of submit, voice list and errors."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str = ""
    data: Any = None


def parse(body: AvatarRequest) -> TaskSpec:
    voice = body.create_voice or body.use_voice
    text = voice.text if voice else None
    # Sandbox/local length: speech at ~6 characters a second, 3..20 s; an audio file is taken as 6 s.
    seconds = min(20, max(3, round(len(text) / 6))) if text else 6
    params: dict[str, Any] = {
        "images": [body.avatar_url],
        "audio_url": body.audio_url or (body.create_voice.audio_url if body.create_voice else None),
        "text": text,
        "language": voice.language if voice else None,
        "voice_id": body.use_voice.audio_id if body.use_voice else None,
        "voice_engine_id": body.use_voice.voice_engine_id if body.use_voice else None,
        "clone_voice": body.create_voice is not None,
        # [MR] One file serves all three URL fields (work/wm/no_wm), so it is never watermarked: a
        # "no watermark" URL must not point at a watermarked video. `no_watermark` stays in the request.
        "watermark": False,
        "width": 512,
        "height": 512,
        "seconds": seconds,
        "fps": 25,
        "audio": True,
    }
    if body.callback_url:
        params["webhook_url"] = body.callback_url  # checked and applied by the API layer
    return TaskSpec(
        dialect=NAME,
        model=MODEL,
        operation=Operation.AVATAR,
        params=params,
        request=body.model_dump(mode="json", exclude_none=True),
        public_id=hex_id(16),
    )


def accepted(task: Task) -> dict[str, Any]:
    return {"code": "success", "message": "", "data": task.public_id}


def _ratio(width: int | None, height: int | None) -> int:
    if not width or not height:
        return 1
    return max(1, round(width / height))


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    video = task.first_asset("video")
    thumb = task.first_asset("thumbnail")
    video_url = ctx.url(video) if video and task.status is Status.SUCCEEDED else ""
    thumb_url = ctx.url(thumb) if thumb and task.status is Status.SUCCEEDED else ""
    p = task.params
    title = f"{task.created_at}.mp3"
    pt_info = {
        "context": p.get("text"),
        "audio_url": quote(p["audio_url"], safe="") if p.get("audio_url") else None,
        "voice_engine_id": p.get("voice_engine_id"),
        "audio_id": p.get("voice_id"),
        "video_url": quote(p["images"][0], safe="") if p.get("images") else None,
        "video_pattern_url": None,
        "lan": p.get("language"),
        "character_id": None,
        "pag_img_urls": None,
        "video_img_urls": None,
    }
    view: dict[str, Any] = {
        "id": object_id(task.id),
        "ext": {"sing_title": title, "track_info": "{}", "animate_channel": "dynamic"},
        "singer": "DreamFace",
        "file_type": "VIDEO",
        "work_name": title,
        "animate_id": task.public_id,
        "play_types": ["PT", "", "ANIMATE"],
        "vip_enable": False,
        "create_time": task.created_at,
        "music_title": "Talking avatar",
        "template_id": object_id(task.id)[:8] + "0" * 16,
        "user_image_url": "",
        "work_webp_path": thumb_url,
        "web_work_status": STATUS[task.status],
        "work_video_path": video_url,
        "share_magic_text": "",
        "example_image_url": [],
        "picture_path_list": [],
        "primary_play_type": "ANIMATE",
        "tmp_online_enable": False,
        "webp_aspect_ratio": _ratio(thumb.width, thumb.height) if thumb else 1,
        "animate_params_str": orjson.dumps({"pt_infos": [pt_info]}).decode(),
        "video_aspect_ratio": _ratio(video.width, video.height) if video else 1,
        "wm_work_video_path": video_url,
        "template_create_time": task.created_at,
        "no_wm_work_video_path": video_url,
    }
    if task.status in (Status.FAILED, Status.CANCELED):
        # [MR] the page has no error field; clients test web_work_status < 0 and may show this.
        view["message"] = task.error_message or ("canceled" if task.status is Status.CANCELED else "failed")
    return view


def error(err: MediarelayError) -> tuple[int, Any]:
    code = ERROR_CODES.get(err.kind, "invalid_request")
    return err.http_status, {"code": code, "message": err.message, "data": None}


def voices(query: Mapping[str, str], catalog: Catalog) -> dict[str, Any]:
    language = query.get("language")
    if language is not None:
        try:
            language = _language(language)
        except ValueError:
            raise invalid("language: must be 'zh' or 'en'", "language") from None
    return {"code": "success", "message": "", "data": {"audio_list": catalog.voices(language)}}


dialect = Dialect(
    name=NAME,
    title="Talking avatar",
    prefixes=("/avatar/",),
    submit_path="/avatar/generation",
    submit_model=AvatarRequest,
    parse=parse,
    accepted=accepted,
    status_path="/avatar/task/{task_id}",
    status_param="task_id",
    render=render,
    error=error,
    cancel_path="/avatar/task/{task_id}/cancel",
    extra_routes=(ExtraRoute("GET", "/avatar/voice", "List the voices usable with use_voice", voices),),
)
