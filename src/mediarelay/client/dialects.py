"""Client-side knowledge of each dialect: where its endpoints are, how to read its answers, and how to
build a simple submit body from (model, prompt, images, audio).

Answers are parsed with the dialects' own response models (`mediarelay.dialects.*`): the schemas that
the server renders and the relay channels read are the ones the client reads too. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import ValidationError

from mediarelay.client.errors import ProtocolError, UsageError
from mediarelay.client.results import NativeTask, Output, TaskError, TaskResult, TaskStatus
from mediarelay.dialects import avatar, faceswap, openai_videos, pika, unified_video
from mediarelay.domain import Status

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class Quick:
    """The inputs of a one-line submit; each dialect turns them into its own body."""

    model: str | None = None
    prompt: str | None = None
    images: tuple[str, ...] = ()
    audio: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


Parser = Callable[[Any, str], TaskResult]  # (decoded JSON, base URL) -> result


@dataclass(frozen=True)
class Spec:
    name: str
    aliases: tuple[str, ...]
    submit_path: str
    status_path: str  # with "{id}", or the id travels as query parameter `id_param`
    cancel_path: str
    submitted: Parser  # the submit answer
    parse: Parser  # the status (and cancel) answer
    quick_body: Callable[[Quick], dict[str, Any]]
    id_param: str | None = None
    bare_key: bool = False  # send `Authorization: <key>` without "Bearer" (as the provider documents)
    has_progress: bool = True

    def _target(self, path: str, task_id: str) -> tuple[str, dict[str, str]]:
        if self.id_param:
            return path, {self.id_param: task_id}
        return path.replace("{id}", quote(task_id, safe="")), {}

    def status_target(self, task_id: str) -> tuple[str, dict[str, str]]:
        return self._target(self.status_path, task_id)

    def cancel_target(self, task_id: str) -> tuple[str, dict[str, str]]:
        return self._target(self.cancel_path, task_id)


def _validate(model: Any, body: Any, what: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError(f"unexpected {what} answer ({where}: {first['msg']})") from None


def _from_status(status: Status | None) -> TaskStatus:
    """mediarelay's lifecycle -> the client's five values; unknown means still running."""
    if status is None or status in (Status.RUNNING, Status.FINALIZING):
        return "running"
    return status.value  # type: ignore[return-value]


def _failed_or_canceled(message: str | None) -> TaskStatus:
    return "canceled" if (message or "").lower().startswith("canceled") else "failed"


def _kind(url: str, default: str = "video") -> str:
    path = urlsplit(url).path.lower()
    if path.endswith(IMAGE_EXTENSIONS):
        return "image"
    return "video" if path.endswith(".mp4") else default


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


# -- native (/v1/tasks) ---------------------------------------------------------------------------------


def parse_native(body: Any, base_url: str) -> TaskResult:
    m: NativeTask = _validate(NativeTask, body, "native task")
    status: TaskStatus = _from_status(Status._value2member_map_.get(m.status))  # type: ignore[arg-type]
    outputs = tuple(
        Output(
            role=o.role,
            url=o.url,
            index=o.index,
            mime=o.mime,
            bytes=o.bytes,
            sha256=o.sha256,
            width=o.width,
            height=o.height,
            duration=o.duration,
        )
        for o in m.outputs
        if o.url
    )
    error = TaskError(m.error.code, m.error.message) if m.error else None
    return TaskResult(
        id=m.id,
        dialect="native",
        status=status,
        progress=max(0, min(100, m.progress)),
        outputs=outputs,
        error=error,
        raw=body,
        model=m,
        children=tuple(m.children),
    )


def native_body(q: Quick) -> dict[str, Any]:
    if not q.model:
        raise UsageError("the native API needs a model name (the routing name, e.g. sora-2)")
    fields = dict(q.fields)
    operation = fields.pop("operation", None)
    if operation is None:
        operation = "avatar" if q.audio else ("image_to_video" if q.images else "text_to_video")
    body = {"model": q.model, "operation": operation, "prompt": q.prompt, "audio_url": q.audio}
    if q.images:
        body["images"] = list(q.images)
    return _clean({**body, **fields})


# -- talking avatar ---------------------------------------------------------------------------------


def avatar_submitted(body: Any, base_url: str) -> TaskResult:
    env: avatar.AvatarEnvelope = _validate(avatar.AvatarEnvelope, body, "avatar submit")
    if not isinstance(env.data, str) or not env.data:
        raise ProtocolError("avatar submit answer without a task id in `data`")
    return TaskResult(id=env.data, dialect="avatar", status="queued", progress=None, raw=body, model=env)


def parse_avatar(body: Any, base_url: str) -> TaskResult:
    w: avatar.AvatarWork = _validate(avatar.AvatarWork, body, "avatar task")
    code = w.web_work_status
    message = (w.model_extra or {}).get("message")
    status: TaskStatus
    if code == 200:
        status = "succeeded"
    elif code < 0:
        status = _failed_or_canceled(message)
    else:
        status = "queued" if code == 0 else "running"  # clients treat any other value as running
    outputs: list[Output] = []
    if status == "succeeded":
        video = w.work_video_path or w.no_wm_work_video_path or w.wm_work_video_path
        if video:
            outputs.append(Output(role="video", url=video))
        if w.work_webp_path:
            outputs.append(Output(role="thumbnail", url=w.work_webp_path))
    error = TaskError(None, str(message or "failed")) if status in ("failed", "canceled") else None
    return TaskResult(
        id=w.animate_id,
        dialect="avatar",
        status=status,
        progress=100 if status == "succeeded" else None,
        outputs=tuple(outputs),
        error=error,
        raw=body,
        model=w,
    )


def avatar_body(q: Quick) -> dict[str, Any]:
    if not q.images or not q.audio:
        raise UsageError("a talking avatar needs an image of the face (--image) and the speech (--audio)")
    return _clean({"avatar_url": q.images[0], "audio_url": q.audio, **q.fields})


# -- pika -------------------------------------------------------------------------------------------


def pika_submitted(body: Any, base_url: str) -> TaskResult:
    m: pika.PikaSubmitted = _validate(pika.PikaSubmitted, body, "pika submit")
    return TaskResult(id=m.id, dialect="pika", status="queued", progress=0, raw=body, model=m)


def parse_pika(body: Any, base_url: str) -> TaskResult:
    feed: pika.PikaFeed = _validate(pika.PikaFeed, body, "pika feed")
    if not feed.videos:
        return TaskResult(id=feed.id, dialect="pika", status="queued", progress=0, raw=body, model=feed)
    video = feed.videos[0]
    status = _from_status(pika.to_status(video))
    outputs: list[Output] = []
    if status == "succeeded" and video.resultUrl:
        outputs.append(Output(role=_kind(video.resultUrl), url=video.resultUrl))
        if video.videoPoster and video.videoPoster != video.resultUrl:
            outputs.append(Output(role="poster", url=video.videoPoster))
        if video.imageThumb:
            outputs.append(Output(role="thumbnail", url=video.imageThumb))
    error = TaskError(None, video.error or "failed") if status in ("failed", "canceled") else None
    progress = 100 if status == "succeeded" else max(0, min(100, video.progress))
    return TaskResult(
        id=feed.id,
        dialect="pika",
        status=status,
        progress=progress,
        outputs=tuple(outputs),
        error=error,
        raw=body,
        model=feed,
    )


PIKA_OPTIONS = ("aspectRatio", "frameRate", "camera", "extend")
PIKA_PARAMETERS = ("guidanceScale", "motion", "negativePrompt")


def pika_body(q: Quick) -> dict[str, Any]:
    if not q.prompt:
        raise UsageError("pika needs a prompt")
    fields = dict(q.fields)
    options: dict[str, Any] = {
        "aspectRatio": 16 / 9,
        "frameRate": 24,
        "camera": {},
        "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
        "extend": False,
    }
    for name in PIKA_OPTIONS:
        if name in fields:
            options[name] = fields.pop(name)
    for name in PIKA_PARAMETERS:
        if name in fields:
            options["parameters"][name] = fields.pop(name)
    if options["aspectRatio"] is None:  # no aspect ratio: Pika makes an image
        del options["aspectRatio"]
    model = (q.model or "1.5").removeprefix("pika-")
    body = {"promptText": q.prompt, "model": model, "options": options}
    if q.images:
        body["image"] = q.images[0]
    return _clean({**body, **fields})


# -- unified video ------------------------------------------------------------------------------------

UNIFIED_STATUS: dict[str, TaskStatus] = {
    "pending": "queued",
    "processing": "running",
    "completed": "succeeded",
}


def unified_submitted(body: Any, base_url: str) -> TaskResult:
    m: unified_video.CreateResponse = _validate(unified_video.CreateResponse, body, "video create")
    status = UNIFIED_STATUS.get(m.status, "running") if m.status != "failed" else "failed"
    return TaskResult(id=m.id, dialect="unified_video", status=status, progress=0, raw=body, model=m)


def parse_unified(body: Any, base_url: str) -> TaskResult:
    m: unified_video.QueryResponse = _validate(unified_video.QueryResponse, body, "video query")
    progress: int | None = None
    reason: str | None = None
    detail = m.detail
    if isinstance(detail, unified_video.SoraDetail):
        info = detail.pending_info
        reason = info.failure_reason
        if info.progress_pct is not None:
            progress = round(100 * info.progress_pct)
    elif isinstance(detail, unified_video.VideoDetail):
        reason = detail.failure_reason
        progress = detail.progress
    # Clients in the wild treat unknown values as running; failed covers canceled (see the reason).
    failed = m.status == "failed"
    status = _failed_or_canceled(reason) if failed else UNIFIED_STATUS.get(m.status, "running")
    if status == "succeeded":
        progress = 100
    outputs = (Output(role="video", url=m.video_url),) if status == "succeeded" and m.video_url else ()
    error = TaskError(None, reason or "failed") if status in ("failed", "canceled") else None
    return TaskResult(
        id=m.id,
        dialect="unified_video",
        status=status,
        progress=None if progress is None else max(0, min(100, progress)),
        outputs=outputs,
        error=error,
        raw=body,
        model=m,
    )


def unified_body(q: Quick) -> dict[str, Any]:
    if not q.model or not q.prompt:
        raise UsageError("unified video needs a model (sora-2, veo3-fast, grok-video-3…) and a prompt")
    return _clean({"model": q.model, "prompt": q.prompt, "images": list(q.images), **q.fields})


# -- face swap ---------------------------------------------------------------------------------------

FACESWAP_STATE: dict[int, TaskStatus] = {10: "queued", 20: "running", 30: "succeeded"}
TASK_TYPES: dict[str, int] = {
    "faceswap": 3,
    "face_swap": 3,
    "face-swap": 3,
    "enhance": 4,
    "filter": 5,
    "upscale": 6,
    "faceswap-video": 7,
    "face_swap_video": 7,
}


def faceswap_submitted(body: Any, base_url: str) -> TaskResult:
    m: faceswap.CreateTaskResponse = _validate(faceswap.CreateTaskResponse, body, "createTask")
    if m.data is None:
        raise ProtocolError("createTask answer without data")
    return TaskResult(
        id=m.data.promptId, dialect="faceswap", status="queued", progress=None, raw=body, model=m
    )


def parse_faceswap(body: Any, base_url: str) -> TaskResult:
    m: faceswap.TaskInfoResponse = _validate(faceswap.TaskInfoResponse, body, "getTaskInfo")
    if m.data is None:
        raise ProtocolError("getTaskInfo answer without data")
    info = m.data
    status: TaskStatus
    if info.state == 2:
        status = _failed_or_canceled(info.reason)
    else:
        status = FACESWAP_STATE.get(info.state, "running")
    outputs: list[Output] = []
    for i, item in enumerate(info.imageList):
        if item.origin:
            outputs.append(Output(role=_kind(item.origin, "image"), url=item.origin, index=i))
        if item.path:
            outputs.append(Output(role="thumbnail", url=item.path, index=i))
    progress: int | None = None
    if status == "succeeded":
        progress = 100
    elif info.taskList:  # a batch: the share of finished children
        finished = sum(1 for c in info.taskList if c.state in (2, 30))
        progress = round(100 * finished / len(info.taskList))
    error = TaskError(None, info.reason or "failed") if status in ("failed", "canceled") else None
    return TaskResult(
        id=info.promptId,
        dialect="faceswap",
        status=status,
        progress=progress,
        outputs=tuple(outputs),
        error=error,
        raw=body,
        model=m,
        children=tuple(c.promptId for c in info.taskList),
    )


def faceswap_body(q: Quick) -> dict[str, Any]:
    name = (q.model or "").strip().lower()
    task_type = int(name) if name.isdigit() else TASK_TYPES.get(name)
    if task_type is None:
        raise UsageError(f"face swap model must be one of {', '.join(sorted(set(TASK_TYPES)))} (or 3-7)")
    images = list(q.images)
    body: dict[str, Any] = {"taskType": task_type}
    if task_type in (3, 7):
        if len(images) < 2:
            raise UsageError("face swap needs the face first, then at least one target (--image twice)")
        body["faceUrl"], body["targetUrls"] = images[0], images[1:]
    else:
        if not images:
            raise UsageError("give the image(s) to work on with --image")
        body["targetUrls"] = images
    return _clean({**body, **q.fields})


# -- OpenAI videos ----------------------------------------------------------------------------------

OPENAI_VARIANTS = (("video", "video"), ("thumbnail", "thumbnail"), ("spritesheet", "spritesheet"))


def parse_openai(body: Any, base_url: str) -> TaskResult:
    v: openai_videos.Video = _validate(openai_videos.Video, body, "video")
    status: TaskStatus = _from_status(openai_videos.to_status(v))
    outputs: tuple[Output, ...] = ()
    if status == "succeeded":
        base = f"{base_url}/v1/videos/{quote(v.id, safe='')}/content?variant="
        outputs = tuple(Output(role=r, url=base + q, authenticated=True) for r, q in OPENAI_VARIANTS)
    error = TaskError(v.error.code, v.error.message) if v.error and status != "succeeded" else None
    if status in ("failed", "canceled") and error is None:
        error = TaskError(None, "failed")
    return TaskResult(
        id=v.id,
        dialect="openai_videos",
        status=status,
        progress=100 if status == "succeeded" else max(0, min(100, v.progress)),
        outputs=outputs,
        error=error,
        raw=body,
        model=v,
    )


def openai_body(q: Quick) -> dict[str, Any]:
    if not q.prompt:
        raise UsageError("the OpenAI videos API needs a prompt")
    fields = dict(q.fields)
    if "seconds" in fields and fields["seconds"] is not None:
        fields["seconds"] = str(fields["seconds"])  # a string in this API ("4", "8", "12")
    body: dict[str, Any] = {"prompt": q.prompt, "model": q.model}
    if q.images:
        body["input_reference"] = {"image_url": q.images[0]}
    return _clean({**body, **fields})


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            name="native",
            aliases=("mediarelay", "tasks"),
            submit_path="/v1/tasks",
            status_path="/v1/tasks/{id}",
            cancel_path="/v1/tasks/{id}/cancel",
            submitted=parse_native,
            parse=parse_native,
            quick_body=native_body,
        ),
        Spec(
            name="openai_videos",
            aliases=("openai", "videos"),
            submit_path="/v1/videos",
            status_path="/v1/videos/{id}",
            cancel_path="/v1/videos/{id}/cancel",
            submitted=parse_openai,
            parse=parse_openai,
            quick_body=openai_body,
        ),
        Spec(
            name="pika",
            aliases=(),
            submit_path="/pika/generate",
            status_path="/pika/feed/{id}",
            cancel_path="/pika/feed/{id}/cancel",
            submitted=pika_submitted,
            parse=parse_pika,
            quick_body=pika_body,
        ),
        Spec(
            name="unified_video",
            aliases=("unified", "video", "sora", "veo", "grok"),
            submit_path="/v1/video/create",
            status_path="/v1/video/query",
            cancel_path="/v1/video/cancel",
            id_param="id",
            submitted=unified_submitted,
            parse=parse_unified,
            quick_body=unified_body,
        ),
        Spec(
            name="avatar",
            aliases=("dreamface",),
            submit_path="/avatar/generation",
            status_path="/avatar/task/{id}",
            cancel_path="/avatar/task/{id}/cancel",
            submitted=avatar_submitted,
            parse=parse_avatar,
            quick_body=avatar_body,
            has_progress=False,
        ),
        Spec(
            name="faceswap",
            aliases=("face_swap", "face-swap"),
            submit_path="/createTask",
            status_path="/getTaskInfo",
            cancel_path="/cancelTask",
            id_param="promptId",
            submitted=faceswap_submitted,
            parse=parse_faceswap,
            quick_body=faceswap_body,
            bare_key=True,
            has_progress=False,
        ),
    )
}
ALIASES: dict[str, str] = {alias: s.name for s in SPECS.values() for alias in (s.name, *s.aliases)}


def spec_for(name: str) -> Spec:
    """The dialect by its name or an alias (`openai`, `unified`, …)."""
    found = ALIASES.get(name.strip().lower())
    if found is None:
        choices = ", ".join(sorted({*SPECS, "openai", "unified"}))
        raise UsageError(f"unknown dialect {name!r}; one of {choices}")
    return SPECS[found]
