"""What the client hands back: one typed result shape for every dialect, plus the dialect's own model.

Each dialect publishes its status in its own words (`web_work_status: 200`, `state: 30`, `"finished"`…);
`TaskResult` normalises them to five values so that calling code is the same whatever the server speaks,
and keeps the raw answer and the dialect's parsed pydantic model for everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
MAIN_ROLES = ("video", "image")  # the result itself; the other roles are derived previews


@dataclass(frozen=True)
class Output:
    """One result file. `authenticated` outputs (OpenAI's `/content`) need the API key to download."""

    role: str  # video | image | poster | thumbnail | spritesheet
    url: str
    index: int = 0
    mime: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    authenticated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class TaskError:
    code: str | None
    message: str


@dataclass(frozen=True)
class TaskResult:
    """A task as one answer of its dialect showed it.

    `id` is the id that dialect's endpoints take (pass the result back to `get`/`wait`/`cancel`);
    `progress` is 0–100, or None where the dialect publishes no progress (avatar, face swap).
    """

    id: str
    dialect: str
    status: TaskStatus
    progress: int | None
    outputs: tuple[Output, ...] = ()
    error: TaskError | None = None
    raw: Any = None  # the decoded JSON answer
    model: BaseModel | None = None  # the same answer parsed with the dialect's response model
    etag: str | None = None
    poll_after: float | None = None  # seconds the server asks to wait before the next poll
    children: tuple[str, ...] = ()  # ids of a fan-out batch's child tasks

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def output(self, role: str | None = None, index: int = 0) -> Output | None:
        """The output of `role` (default: the result itself, video or image) at `index`."""
        roles: Sequence[str] = (role,) if role else MAIN_ROLES
        for r in roles:
            for out in self.outputs:
                if out.role == r and out.index == index:
                    return out
        return None

    @property
    def url(self) -> str | None:
        """The main result's URL, once there is one."""
        out = self.output()
        return out.url if out is not None else None

    def same_state(self, other: TaskResult | None) -> bool:
        """Nothing a watcher cares about changed (status, progress, outputs, error)."""
        return other is not None and (self.status, self.progress, self.outputs, self.error) == (
            other.status,
            other.progress,
            other.outputs,
            other.error,
        )

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON view for `--json` output and logs (the raw answer included)."""
        return {
            "id": self.id,
            "dialect": self.dialect,
            "status": self.status,
            "progress": self.progress,
            "outputs": [o.to_json() for o in self.outputs],
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
            "children": list(self.children),
            "raw": self.raw,
        }


@dataclass(frozen=True)
class TaskPage:
    """One page of `GET /v1/tasks` (native): pass `last_id` as `after` for the next."""

    data: tuple[TaskResult, ...]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


@dataclass(frozen=True)
class DownloadProgress:
    """Reported while a download runs; `total` is None when the server sends no length."""

    url: str
    received: int
    total: int | None
    resumed_from: int = 0


# -- the native task view (docs/native-api.md), as a tolerant response model -------------------------


class NativeOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    index: int = 0
    url: str = ""
    mime: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None


class NativeError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str | None = None
    message: str = ""


class NativeTask(BaseModel):
    """`GET /v1/tasks/{id}`: mediarelay's own view of any task."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "task"
    dialect: str = "native"
    public_id: str | None = None
    model: str | None = None
    operation: str | None = None
    status: str
    progress: int = 0
    outputs: list[NativeOutput] = Field(default_factory=list)
    error: NativeError | None = None
    parent_id: str | None = None
    children: list[str] = Field(default_factory=list)
    channel: str | None = None
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    version: int = 0


class NativeTaskList(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: str = "list"
    data: list[NativeTask] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


__all__ = [
    "MAIN_ROLES",
    "TERMINAL",
    "DownloadProgress",
    "NativeTask",
    "NativeTaskList",
    "Output",
    "TaskError",
    "TaskPage",
    "TaskResult",
    "TaskStatus",
]
