"""Plain data shared by every layer: tasks, their specs, results and errors. No I/O here.

Every other package speaks in these types, so a dialect never needs to know a channel and the
engine never needs to know a dialect's JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """mediarelay's own lifecycle; each dialect maps it to its published status values."""

    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


class Operation(StrEnum):
    """What a task produces, independent of the dialect that asked for it (routing uses this)."""

    AVATAR = "avatar"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    VIDEO_TO_VIDEO = "video_to_video"
    TEXT_TO_IMAGE = "text_to_image"
    FACE_SWAP_IMAGE = "face_swap_image"
    FACE_SWAP_VIDEO = "face_swap_video"
    ENHANCE = "enhance"
    FILTER = "filter"
    UPSCALE = "upscale"


class ErrorKind(StrEnum):
    """Failure classes every dialect knows how to render in its own envelope."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal_error"


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.INSUFFICIENT_QUOTA: 402,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}


class MediarelayError(Exception):
    """An error with a class and a human message; the caller's dialect decides its envelope."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.headers = headers or {}  # sent with the error in every dialect (e.g. Retry-After on 429)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]


def invalid(message: str, param: str | None = None) -> MediarelayError:
    return MediarelayError(ErrorKind.INVALID_REQUEST, message, param=param)


NUL_MESSAGE = "text must not contain NUL (\\u0000) characters"


def contains_nul(value: Any) -> bool:
    """Whether a string anywhere in parsed JSON-like input holds a NUL character. [MR] PostgreSQL's text
    and JSONB cannot store one, so every backend refuses it at the door: one behaviour, never a 500."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


def not_found(message: str = "task not found") -> MediarelayError:
    return MediarelayError(ErrorKind.NOT_FOUND, message)


class TaskError(Exception):
    """Raised by a channel: `retryable` errors back off and retry, others fail the task."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


def now_ms() -> int:
    """Every timestamp in mediarelay is epoch milliseconds: portable across databases and dialects."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TaskSpec:
    """A validated submission, normalised by its dialect; the engine and channels read `params`.

    Normalised param names (all optional): prompt, negative_prompt, images (list of URLs), video,
    audio_url, face_url, target_urls, text, language, voice_id, width, height, seconds, fps,
    audio (bool: the output carries sound), watermark (bool), output ("video" | "image"),
    filter, scale, seed, sandbox (dict of sandbox controls).
    """

    dialect: str
    model: str
    operation: Operation
    params: dict[str, Any]
    request: dict[str, Any]
    public_id: str
    children: tuple[TaskSpec, ...] = ()


@dataclass(frozen=True)
class Asset:
    """One stored result file. `role` says what it is for the dialect (video, image, poster, thumbnail)."""

    id: int
    role: str
    key: str
    mime: str
    bytes: int
    sha256: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    index: int = 0


@dataclass(frozen=True)
class Task:
    """A task row as the layers above the store see it."""

    id: str
    seq: int
    public_id: str
    dialect: str
    key_id: str
    model: str
    operation: Operation
    params: dict[str, Any]
    request: dict[str, Any]
    status: Status
    progress: int
    version: int
    created_at: int
    updated_at: int
    parent_id: str | None = None
    channel: str | None = None
    upstream_id: str | None = None
    attempt: int = 0
    next_run_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    upstream: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None
    assets: tuple[Asset, ...] = ()
    child_ids: tuple[str, ...] = field(default=())

    def assets_with(self, role: str) -> list[Asset]:
        return sorted((a for a in self.assets if a.role == role), key=lambda a: a.index)

    def first_asset(self, role: str) -> Asset | None:
        found = self.assets_with(role)
        return found[0] if found else None
