"""The price table and what a task costs: pure functions, no I/O.

A rule prices one model/operation pattern: `per_task` + `per_second` of output video + `per_image` of
output image, all in integer micro-units of the operator's currency. The first matching rule wins; no
match means the default price (free unless configured), so the sandbox stays free for developers.

At submit the task is quoted from what it asks for (requested seconds, expected images) and that estimate
is pre-deducted; at completion the real output (the stored files' duration and count) is priced with the
same rule, and the task pays the lower of the two: a settlement only ever gives money back, so it can
never drive a balance negative (docs/billing.md, "Settlement").
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mediarelay.domain import Operation, TaskSpec

MICRO = 1_000_000  # micro-units per currency unit
VIDEO_OPS = frozenset(
    {
        Operation.AVATAR,
        Operation.TEXT_TO_VIDEO,
        Operation.IMAGE_TO_VIDEO,
        Operation.VIDEO_TO_VIDEO,
        Operation.FACE_SWAP_VIDEO,
    }
)
MAX_PRICE = 10**15  # a sanity bound: far above any real price, far below BIGINT overflow


class PriceRule(BaseModel):
    """One row of the price table (`[[prices]]` in mediarelay.toml, `PUT /v1/admin/prices`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="*", min_length=1, max_length=100, description="glob over model names")
    operation: str = Field(default="*", min_length=1, max_length=32, description="glob over operations")
    per_task: int = Field(default=0, ge=0, le=MAX_PRICE, description="micro-units a task")
    per_second: int = Field(default=0, ge=0, le=MAX_PRICE, description="micro-units a second of video")
    per_image: int = Field(default=0, ge=0, le=MAX_PRICE, description="micro-units an output image")

    def matches(self, model: str, operation: str) -> bool:
        return fnmatch.fnmatchcase(model, self.model) and fnmatch.fnmatchcase(operation, self.operation)


FREE = PriceRule(model="*", operation="*")


@dataclass(frozen=True)
class PriceTable:
    rules: tuple[PriceRule, ...] = ()
    default: PriceRule = FREE
    source: str = "config"  # or "api": set through the admin API (stored in the database)

    def rule_for(self, model: str, operation: str) -> PriceRule:
        return next((r for r in self.rules if r.matches(model, operation)), self.default)

    def to_json(self) -> dict[str, Any]:
        return {
            "prices": [r.model_dump() for r in self.rules],
            "default": self.default.model_dump(),
        }


@dataclass(frozen=True)
class Quote:
    """A task's pre-deducted estimate and the price snapshot it will be settled with."""

    estimate: int
    snapshot: dict[str, Any]


def seconds_cost(per_second: int, ms: int) -> int:
    """Per-second price of `ms` milliseconds of video, rounded up to a whole micro-unit."""
    return (per_second * ms + 999) // 1000


def quote(table: PriceTable, spec: TaskSpec, default_seconds: float) -> Quote:
    """Price a task from its request: requested seconds for videos, the expected image count otherwise."""
    rule = table.rule_for(spec.model, spec.operation.value)
    if spec.operation in VIDEO_OPS:
        seconds = _number(spec.params.get("seconds"), default_seconds)
        ms, images = math.ceil(round(seconds * 1000, 3)), 0  # round first: 4.1 s is 4100 ms, not 4101
    else:
        ms, images = 0, max(1, len(spec.params.get("target_urls") or ()))
    estimate = rule.per_task + seconds_cost(rule.per_second, ms) + rule.per_image * images
    snapshot = {
        "rule": {"model": rule.model, "operation": rule.operation},
        "per_task": rule.per_task,
        "per_second": rule.per_second,
        "per_image": rule.per_image,
        "ms": ms,
        "images": images,
    }
    return Quote(estimate=estimate, snapshot=snapshot)


class Measured(Protocol):
    """A stored file as far as pricing cares (domain.Asset and store.tasks.NewAsset both are)."""

    @property
    def role(self) -> str: ...

    @property
    def duration(self) -> float | None: ...


def final_price(snapshot: dict[str, Any], estimate: int, assets: Sequence[Measured]) -> int:
    """What a succeeded task pays: its real output priced with the snapshot's rule, capped at the
    estimate. A video whose duration could not be read counts as long as requested."""
    videos = [a for a in assets if a.role == "video"]
    ms = sum(
        round(a.duration * 1000) if a.duration is not None else int(snapshot.get("ms", 0)) for a in videos
    )
    images = sum(1 for a in assets if a.role == "image")
    actual = (
        int(snapshot.get("per_task", 0))
        + seconds_cost(int(snapshot.get("per_second", 0)), ms)
        + int(snapshot.get("per_image", 0)) * images
    )
    return min(actual, estimate)


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number > 0 else default
