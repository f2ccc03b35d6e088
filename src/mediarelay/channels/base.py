"""The one small interface every channel type implements (after new-api's per-vendor task adaptor):
submit, poll, fetch an output, cancel. The engine drives it; a channel never sees HTTP routes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mediarelay.domain import Operation, Status, Task


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

    def serves(self, model: str, operation: Operation) -> bool:
        return any(fnmatch.fnmatchcase(model, m) for m in self.models) and any(
            fnmatch.fnmatchcase(operation.value, o) for o in self.operations
        )


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

    async def submit(self, task: Task) -> Submitted:
        """Start the task upstream; must be idempotent on `task.id` (a retry after a crash)."""
        ...

    async def poll(self, task: Task) -> PollResult: ...

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        """Write the output's bytes to `dest` (a staging path the engine then stores)."""
        ...

    async def cancel(self, task: Task) -> None: ...
