"""Dialect D: face swap / enhance / filter / upscale — seed 002, specs/dialects.md §D.

Every answer is wrapped `{code, msg, data}` (success `code: 200, msg: "SUCCESS"`). Request-level errors
keep HTTP 200 with the documented code in the body (800 parameter error, 900 no data, 510 system error);
authentication failures are HTTP 401 with `code: 401` [MR]. The key comes as `Authorization: <key>` or
`Authorization: Bearer <key>` [MR].

taskType 3/4/5/6 (image face swap, enhance, filter, upscale) run as ONE task that yields one image per
target URL. taskType 7 (face swap on video) always fans out into one child task per target video [MR],
so `taskList` has the same shape for one video as for several (the seed shows it for several); the
parent's `imageList` is the union of its children's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from mediarelay.dialects.base import Dialect, RenderContext
from mediarelay.dialects.common import Url, hex_id
from mediarelay.domain import ErrorKind, MediarelayError, Operation, Status, Task, TaskSpec

NAME = "faceswap"
MAX_TARGETS = 10  # [MR] the provider publishes no cap; ten keeps one submission bounded
IMAGE_SIDE = 512  # sandbox/local base size of image results; the upscale factor multiplies it
VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_SECONDS, VIDEO_FPS = 640, 360, 3, 25  # [MR] cheap video results

# [MR] the provider documents no filter names: a small named set every channel can map onto its own.
FILTERS = ("cartoon", "sketch", "vintage", "noir", "warm", "cool", "vivid", "oil")

# taskType -> (operation, model name used for channel routing [MR])
TASK_TYPES: dict[int, tuple[Operation, str]] = {
    3: (Operation.FACE_SWAP_IMAGE, "faceswap"),
    4: (Operation.ENHANCE, "enhance"),
    5: (Operation.FILTER, "filter"),
    6: (Operation.UPSCALE, "upscale"),
    7: (Operation.FACE_SWAP_VIDEO, "faceswap-video"),  # [MR] type 7 = face swap on video
}

STATE: dict[Status, int] = {
    Status.QUEUED: 10,
    Status.RUNNING: 20,
    Status.FINALIZING: 20,  # finalizing is still "running" for the client
    Status.SUCCEEDED: 30,
    Status.FAILED: 2,
    Status.CANCELED: 2,  # [MR] with reason "canceled"
}

CODE_OK = 200
CODE_SYSTEM = 510
CODE_PARAM = 800
CODE_NO_DATA = 900

# [MR] errors about the request itself are HTTP 200 with a documented body code; errors about the
# caller (authentication, quota, rate) keep their HTTP status and repeat it as the body code.
ERRORS: dict[ErrorKind, tuple[int, int]] = {
    ErrorKind.INVALID_REQUEST: (200, CODE_PARAM),
    ErrorKind.CONFLICT: (200, CODE_PARAM),
    ErrorKind.TOO_LARGE: (413, CODE_PARAM),  # the API layer forces HTTP 413 anyway
    ErrorKind.NOT_FOUND: (200, CODE_NO_DATA),
    ErrorKind.UNAUTHORIZED: (401, 401),
    ErrorKind.FORBIDDEN: (401, 401),
    ErrorKind.INSUFFICIENT_QUOTA: (402, 402),
    ErrorKind.RATE_LIMITED: (429, 429),
    ErrorKind.UNAVAILABLE: (200, CODE_SYSTEM),
    ErrorKind.INTERNAL: (200, CODE_SYSTEM),
}


# -- submit ---------------------------------------------------------------------------------------


class CreateTaskRequest(BaseModel):
    """POST /createTask [MR — the provider's submit API is not public]."""

    taskType: Literal[3, 4, 5, 6, 7] = Field(
        description="3 face swap (image), 4 enhance, 5 filter, 6 upscale, 7 face swap on video"
    )
    faceUrl: Url | None = Field(default=None, description="the face to put in; required for taskType 3 and 7")
    targetUrls: list[Url] = Field(
        min_length=1,
        max_length=MAX_TARGETS,
        description=f"images (videos for taskType 7) to work on, 1..{MAX_TARGETS}; one result each",
    )
    filter: str | None = Field(
        default=None, description=f"required for taskType 5: one of {', '.join(FILTERS)}"
    )
    scale: Literal[2, 4] | None = Field(default=None, description="upscale factor for taskType 6 (default 2)")
    callbackUrl: Url | None = Field(default=None, description="[MR] webhook URL (docs/webhooks.md)")

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower()
        if name not in FILTERS:
            raise ValueError(f"must be one of {', '.join(FILTERS)}")
        return name

    @model_validator(mode="after")
    def _per_type(self) -> CreateTaskRequest:
        if self.taskType in (3, 7) and self.faceUrl is None:
            raise ValueError(f"faceUrl is required for taskType {self.taskType}")
        if self.taskType == 5 and self.filter is None:
            raise ValueError("filter is required for taskType 5")
        # [MR] fields that do not apply to the taskType are accepted and ignored.
        return self


def _image_params(body: CreateTaskRequest) -> dict[str, Any]:
    """One task, one image result per target; the channel multiplies the base size by `scale`."""
    params: dict[str, Any] = {
        "task_type": body.taskType,
        "target_urls": list(body.targetUrls),
        "width": IMAGE_SIDE,
        "height": IMAGE_SIDE,
        "output": "image",
    }
    if body.taskType == 3:
        params["face_url"] = body.faceUrl
    elif body.taskType == 5:
        params["filter"] = body.filter
    elif body.taskType == 6:
        params["scale"] = body.scale or 2  # [MR] the usual upscaler default
    return params


def _video_child(body: CreateTaskRequest, target: str) -> TaskSpec:
    """One face-swapped video per target video, with its own promptId and its own slice of the request."""
    operation, model = TASK_TYPES[7]
    return TaskSpec(
        dialect=NAME,
        model=model,
        operation=operation,
        params={
            "task_type": 7,
            "face_url": body.faceUrl,
            "target_urls": [target],
            "width": VIDEO_WIDTH,
            "height": VIDEO_HEIGHT,
            "seconds": VIDEO_SECONDS,
            "fps": VIDEO_FPS,
            "audio": False,
            "output": "video",
        },
        request={"taskType": 7, "faceUrl": body.faceUrl, "targetUrls": [target]},
        public_id=hex_id(16),
    )


def parse(body: CreateTaskRequest) -> TaskSpec:
    operation, model = TASK_TYPES[body.taskType]
    request = body.model_dump(mode="json", exclude_none=True)
    # [MR] the webhook URL rides on the top-level task; the API layer checks it and copies it to children
    hook = {"webhook_url": body.callbackUrl} if body.callbackUrl else {}
    if body.taskType != 7:
        return TaskSpec(
            dialect=NAME,
            model=model,
            operation=operation,
            params={**_image_params(body), **hook},
            request=request,
            public_id=hex_id(16),
        )
    # [MR] type 7 always fans out, even for a single video: `taskList` then always lists the videos.
    children = tuple(_video_child(body, target) for target in body.targetUrls)
    return TaskSpec(
        dialect=NAME,
        model=model,
        operation=operation,
        params={
            "task_type": 7,
            "face_url": body.faceUrl,
            "target_urls": list(body.targetUrls),
            "fanout": len(children),
            **hook,
        },
        request=request,
        public_id=hex_id(16),
        children=children,
    )


def accepted(task: Task) -> dict[str, Any]:
    return {"code": CODE_OK, "msg": "SUCCESS", "data": {"promptId": task.public_id, "taskId": task.seq}}


# -- response models (also the client-side parsers when relaying to an upstream of this dialect) ----

UInt = NonNegativeInt


class ImageItem(BaseModel):
    """`imageList[]`: one result file; `path` the thumbnail, `origin` the full result."""

    model_config = ConfigDict(extra="allow")

    id: int
    taskId: UInt
    path: str = ""
    origin: str = ""


class TaskItem(BaseModel):
    """A task as `taskList[]` shows it: the top-level object minus `taskList`."""

    model_config = ConfigDict(extra="allow")

    taskId: UInt
    promptId: str
    taskType: int
    thumbFileUrl: str = ""
    state: int
    reason: str = ""
    imageList: list[ImageItem] = Field(default_factory=list)


class TaskInfo(TaskItem):
    """`data` of GET /getTaskInfo."""

    taskList: list[TaskItem] = Field(default_factory=list)


class TaskInfoResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: int
    msg: str = ""
    data: TaskInfo | None = None


class CreatedTask(BaseModel):
    model_config = ConfigDict(extra="allow")

    promptId: str
    taskId: UInt


class CreateTaskResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: int
    msg: str = ""
    data: CreatedTask | None = None


IMAGE_FIELDS = tuple(ImageItem.model_fields)
TASK_FIELDS = tuple(TaskItem.model_fields)
INFO_FIELDS = tuple(TaskInfo.model_fields)

# -- status ---------------------------------------------------------------------------------------


def _reason(task: Task) -> str:
    if task.status is Status.CANCELED:
        return "canceled"  # [MR]
    if task.status is Status.FAILED:
        return task.error_message or task.error_code or "failed"
    return ""


def _images(task: Task, ctx: RenderContext) -> list[dict[str, Any]]:
    """A finished leaf task's results; nothing before it is done."""
    if task.status is not Status.SUCCEEDED:
        return []
    items = []
    results = task.assets_with("video") if task.operation is Operation.FACE_SWAP_VIDEO else []
    results = results or task.assets_with("image")
    # `path` is the small thumbnail; a video's full-size poster only stands in when there is none.
    thumbs = {a.index: a for role in ("poster", "thumbnail") for a in task.assets_with(role)}
    for result in results:
        thumb = thumbs.get(result.index)
        items.append(
            {
                "id": result.id,
                "taskId": task.seq,
                "path": ctx.url(thumb) if thumb else "",
                "origin": ctx.url(result),
            }
        )
    return items


def _item(task: Task, images: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "taskId": task.seq,
        "promptId": task.public_id,
        "taskType": int(task.params["task_type"]),
        "thumbFileUrl": next((i["path"] for i in images if i["path"]), ""),
        "state": STATE[task.status],
        "reason": _reason(task),
        "imageList": images,
    }


def render(task: Task, ctx: RenderContext) -> dict[str, Any]:
    if task.params.get("fanout"):
        children = [_item(child, _images(child, ctx)) for child in ctx.children]
        # [MR] the union of the children's results, also partial ones of a failed parent.
        data = _item(task, [image for child in children for image in child["imageList"]])
        data["taskList"] = children
    else:
        data = _item(task, _images(task, ctx))
        data["taskList"] = []  # [MR] always present at the top level
    return {"code": CODE_OK, "msg": "SUCCESS", "data": data}


def error(err: MediarelayError) -> tuple[int, Any]:
    status, code = ERRORS.get(err.kind, (200, CODE_SYSTEM))
    return status, {"code": code, "msg": err.message, "data": None}


dialect = Dialect(
    name=NAME,
    title="Face swap / enhance / filter / upscale",
    prefixes=("/createTask", "/getTaskInfo", "/cancelTask"),
    submit_path="/createTask",
    submit_model=CreateTaskRequest,
    parse=parse,
    accepted=accepted,
    status_path="/getTaskInfo",
    status_param="promptId",
    render=render,
    error=error,
    cancel_path="/cancelTask",  # [MR] POST /cancelTask?promptId=…
    bare_key=True,  # [MR] the page shows `Authorization: <token>` without "Bearer"; accept both
)
