"""The translation table: a task's normalised params → the request body of each upstream dialect.

One function per upstream dialect. A task submitted in the same dialect as the upstream's passes its
original request through (minus mediarelay's own fields such as callback URLs, with the model mapped);
any other task is rebuilt from its normalised params (`domain.TaskSpec`). A task the upstream cannot
express raises `Unsupported` (the engine then tries the next channel). docs/channels.md has the table.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mediarelay.channels.base import Unsupported
from mediarelay.dialects import avatar, native, openai_videos, pika, unified_video
from mediarelay.dialects.common import describe
from mediarelay.domain import Operation, Task

CALLBACK_FIELDS = ("callback_url", "callbackUrl")
PIKA_MODELS = pika.MODELS
OPENAI_SECONDS = (4, 8, 12)
SORA_SECONDS = {"sora-2-pro": (10, 15, 25)}
SORA_DEFAULT_SECONDS = (10, 15)
GROK_RATIOS = {"2:3": 2 / 3, "3:2": 3 / 2, "1:1": 1.0}


def _own_request(task: Task) -> dict[str, Any]:
    return {k: v for k, v in task.request.items() if k not in CALLBACK_FIELDS}


def _size(task: Task) -> tuple[int | None, int | None]:
    p = task.params
    w, h = p.get("width"), p.get("height")
    return (int(w) if w else None, int(h) if h else None)


def _at_least(value: float | None, allowed: tuple[int, ...], default: int) -> int:
    """The smallest allowed length that is at least `value` (else the longest); `default` when unset."""
    if value is None:
        return default
    return next((a for a in allowed if a >= value), allowed[-1])


def _prompt(task: Task, upstream: str) -> str:
    prompt = task.params.get("prompt") or task.params.get("text")
    if not prompt:
        raise Unsupported(f"{upstream} needs a prompt and this task has none")
    return str(prompt)


# -- avatar (gptbest: POST /avatar/generation) -------------------------------------------------------


def to_avatar(task: Task) -> dict[str, Any]:
    if task.dialect == avatar.NAME:
        return _own_request(task)
    p = task.params
    images = p.get("images") or []
    face = images[0] if images else p.get("face_url")
    if not face:
        raise Unsupported("the avatar upstream needs an image of the person (images[0])")
    body: dict[str, Any] = {"avatar_url": face, "no_watermark": not p.get("watermark", False)}
    language = str(p.get("language") or "en")
    text = p.get("text")
    if p.get("voice_id") and p.get("voice_engine_id") and text:
        body["use_voice"] = {
            "voice_engine_id": p["voice_engine_id"],
            "audio_id": p["voice_id"],
            "language": language,
            "text": text,
        }
    elif p.get("clone_voice") and p.get("audio_url") and text:
        body["create_voice"] = {"audio_url": p["audio_url"], "language": language, "text": text}
    elif p.get("audio_url"):
        body["audio_url"] = p["audio_url"]
    else:
        raise Unsupported(
            "the avatar upstream needs audio_url, or text with a voice (voice_id or a cloned one)"
        )
    return body


# -- pika (gptbest: POST /pika/generate) --------------------------------------------------------------


def to_pika(task: Task, model: str) -> dict[str, Any]:
    upstream_model = model.removeprefix("pika-")
    if task.dialect == pika.NAME:
        body = _own_request(task)
        if upstream_model in PIKA_MODELS:
            body["model"] = upstream_model
        return body
    p = task.params
    images = p.get("images") or []
    body = {"promptText": _prompt(task, "pika"), "pikaffect": p.get("pikaffect") or ""}
    if upstream_model in PIKA_MODELS:
        body["model"] = upstream_model  # [MR] any other name: the upstream's default model
    options: dict[str, Any] = {
        "frameRate": min(60, max(1, int(p.get("fps") or 24))),
        "camera": p.get("camera") or {},
        "parameters": {
            "guidanceScale": int(p.get("guidance_scale", 12)),
            "motion": int(p.get("motion", 1)),
            "negativePrompt": str(p.get("negative_prompt") or ""),
        },
        "extend": bool(p.get("extend", False)),
    }
    image_out = p.get("output") == "image" or task.operation is Operation.TEXT_TO_IMAGE
    if not image_out:
        w, h = _size(task)
        options["aspectRatio"] = (w / h) if w and h else 16 / 9
    body["options"] = options
    if p.get("video"):
        body["video"] = p["video"]
    elif images:
        body["image"] = images[0]
    return body


# -- unified video (POST /v1/video/create) -------------------------------------------------------------


def to_unified(task: Task, model: str) -> dict[str, Any]:
    model = model.strip().lower()
    family = unified_video.FAMILY.get(model)
    if task.dialect == unified_video.NAME and family == task.params.get("family"):
        return {**_own_request(task), "model": model}
    p = task.params
    images = list(p.get("images") or [])
    body: dict[str, Any] = {
        "model": model,
        "prompt": _prompt(task, "the unified-video upstream"),
        "images": images,
    }
    w, h = _size(task)
    portrait = bool(w and h and h > w)
    big = bool(w and h and min(w, h) >= 1080)
    if family == "sora":
        _max_images(images, unified_video.SORA_MAX_IMAGES, model)
        allowed = SORA_SECONDS.get(model, SORA_DEFAULT_SECONDS)
        body.update(
            orientation="portrait" if portrait or not (w and h) else "landscape",
            size="large" if big else "small",
            duration=_at_least(p.get("seconds"), allowed, allowed[0]),
            watermark=bool(p.get("watermark", False)),
        )
        for key in ("private", "character_url", "character_timestamps"):
            if p.get(key):
                body[key] = p[key]
    elif family == "veo":
        limit = 2 if model.endswith("-frames") else 3 if model.endswith("-components") else 1
        _max_images(images, limit, model)
        if limit > 1 and not images:
            raise Unsupported(f"model {model} needs at least one image")
        if model.startswith("veo3"):
            body["aspect_ratio"] = "9:16" if portrait else "16:9"
        body["enable_upsample"] = big
        body["enhance_prompt"] = bool(p.get("enhance_prompt", False))
    elif family == "grok":
        _max_images(images, 1, model)
        ratio = (w / h) if w and h else 3 / 2
        body["aspect_ratio"] = min(GROK_RATIOS, key=lambda r: abs(GROK_RATIOS[r] - ratio))
        body["size"] = "1080P" if big else "720P"
    return body  # [MR] a model of no known family: prompt and images only


def _max_images(images: list[str], limit: int, model: str) -> None:
    if len(images) > limit:
        raise Unsupported(f"model {model} takes at most {limit} image(s); this task has {len(images)}")


# -- OpenAI videos (POST /v1/videos) -------------------------------------------------------------------


def to_openai(task: Task, model: str) -> dict[str, Any]:
    p = task.params
    if task.operation not in (Operation.TEXT_TO_VIDEO, Operation.IMAGE_TO_VIDEO):
        raise Unsupported(f"an OpenAI-videos upstream cannot run {task.operation.value}")
    images = p.get("images") or []
    body: dict[str, Any] = {"prompt": _prompt(task, "the OpenAI-videos upstream"), "model": model}
    if task.dialect == openai_videos.NAME:
        body["seconds"] = task.request.get("seconds", "4")
        body["size"] = task.request.get("size", "720x1280")
    else:
        w, h = _size(task)
        body["seconds"] = str(_at_least(p.get("seconds"), OPENAI_SECONDS, 4))
        landscape = bool(w and h and w > h)
        if model.startswith("sora-2-pro") and w and h and max(w, h) > 1280:
            body["size"] = "1792x1024" if landscape else "1024x1792"
        else:
            body["size"] = "1280x720" if landscape else "720x1280"
    if images:
        body["input_reference"] = {"image_url": images[0]}
    return body


# -- another mediarelay (POST /v1/tasks) ---------------------------------------------------------------

NATIVE_FIELDS = tuple(n for n in native.NativeTaskRequest.model_fields if n not in ("model", "operation"))


def to_native(task: Task, model: str) -> dict[str, Any]:
    """mediarelay's own normalised fields, checked with the native request model."""
    p = task.params
    body: dict[str, Any] = {"model": model, "operation": task.operation.value}
    for name in NATIVE_FIELDS:
        value = p.get(name)
        if value is not None and value != []:
            body[name] = value
    try:
        native.NativeTaskRequest.model_validate(body)
    except ValidationError as exc:
        raise Unsupported(f"the mediarelay upstream would refuse this task: {describe(exc)[0]}") from None
    return body
