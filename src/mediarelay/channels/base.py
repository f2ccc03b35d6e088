"""The one small interface every channel type implements (after new-api's per-vendor task adaptor):
submit, poll, fetch an output, cancel. The engine drives it; a channel never sees HTTP routes.

A relay channel also says which operations its type can run (`operations`) and whether a repeated submit
of the same task is safe (`idempotent_submit`: the upstream deduplicates by an idempotency key), which
decides what the engine does after a submit whose outcome is unknown (docs/channels.md).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mediarelay.domain import Operation, Status, Task, TaskError

if TYPE_CHECKING:
    from mediarelay.channels.health import ChannelHealth
    from mediarelay.netguard import NetGuard


@dataclass(frozen=True)
class ChannelConfig:
    """A configured channel: a type plus where/how to reach it and its limits."""

    name: str
    type: str
    models: tuple[str, ...] = ("*",)
    operations: tuple[str, ...] = ("*",)
    priority: int = 0
    weight: int = 1
    max_concurrency: int = 64
    deadline_seconds: float = 24 * 3600
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    # Relay channels (docs/channels.md):
    base_url: str = ""
    credentials: tuple[str, ...] = ()  # "env:NAME" references; the secret is read when a request is made
    model_map: tuple[tuple[str, str], ...] = ()  # (glob over mediarelay's model, upstream model), first wins
    rate_limit: float | None = None  # upstream requests per second (token bucket), None = unlimited
    rate_burst: int | None = None  # bucket size; default max(1, rate_limit)
    submit_timeout_seconds: float = 30.0
    poll_timeout_seconds: float = 15.0
    breaker_failures: int = 5  # consecutive failures that open the circuit breaker
    breaker_cooldown_seconds: float = 30.0  # open this long, then one probe request decides
    max_result_bytes: int | None = None  # None: the fetcher's `fetch.max_bytes`
    # Admin-API channels: label -> the plaintext of each `secret:LABEL` credential, decrypted from the
    # database (mediarelay/secrets.py). Kept out of repr so no log line or traceback can show it.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def serves(self, model: str, operation: Operation) -> bool:
        return any(fnmatch.fnmatchcase(model, m) for m in self.models) and any(
            fnmatch.fnmatchcase(operation.value, o) for o in self.operations
        )

    def upstream_model(self, model: str) -> str:
        """The model name the upstream knows: the first `model_map` glob that matches, else the same name."""
        for pattern, target in self.model_map:
            if fnmatch.fnmatchcase(model, pattern):
                return target
        return model


@dataclass(frozen=True)
class ChannelDeps:
    """What a channel type gets besides its config: the one outbound fetcher and its health record."""

    guard: NetGuard | None = None
    health: ChannelHealth | None = None
    max_result_bytes: int = 2 * 1024**3
    fetch_timeout: float = 300.0
    data_dir: Path | None = None  # the node's data directory, for channels that keep work files


class Unsupported(TaskError):
    """This channel cannot run this task (its upstream lacks an input or a feature the task needs);
    the engine tries the next channel and counts nothing against this one."""

    def __init__(self, message: str) -> None:
        super().__init__("unsupported", message)


class SubmitUnknown(TaskError):
    """The submit may have reached the upstream (timed out or cut off after sending, or an unreadable
    answer): repeating it blindly could run and bill the task twice. See docs/channels.md."""

    def __init__(self, message: str) -> None:
        super().__init__("submit_unknown", message, retryable=True)


@dataclass(frozen=True)
class Submitted:
    upstream_id: str
    status: Status = Status.QUEUED
    raw: dict[str, Any] | None = None


@dataclass(frozen=True)
class Output:
    """A result the upstream produced; `url` for relays, `spec` for generators like the sandbox."""

    role: str  # "video" | "image"
    mime: str
    ext: str
    index: int = 0
    url: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "mime": self.mime,
            "ext": self.ext,
            "index": self.index,
            "url": self.url,
            "spec": self.spec,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Output:
        return cls(
            role=data["role"],
            mime=data["mime"],
            ext=data["ext"],
            index=data.get("index", 0),
            url=data.get("url"),
            spec=data.get("spec") or {},
        )


@dataclass(frozen=True)
class PollResult:
    """What the upstream says now. `status=None` means unknown: keep waiting, never fail on it."""

    status: Status | None
    progress: int | None = None
    raw: dict[str, Any] | None = None
    outputs: tuple[Output, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None


class Channel(Protocol):
    config: ChannelConfig
    operations: frozenset[Operation]  # what this channel type can run at all
    idempotent_submit: bool  # a repeated submit of the same task creates nothing new upstream

    async def submit(self, task: Task) -> Submitted:
        """Start the task upstream with the credential recorded in `task.upstream["credential"]`.

        Raises `TaskError` (retryable: the request did not take effect, try again or elsewhere),
        `SubmitUnknown` (it may have), or `Unsupported` (this channel cannot run the task)."""
        ...

    async def poll(self, task: Task) -> PollResult: ...

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        """Write the output's bytes to `dest` (a staging path the engine then stores)."""
        ...

    async def cancel(self, task: Task) -> None: ...
