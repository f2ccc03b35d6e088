"""When to poll an upstream next: soon after submit, then paced by observed progress, with jitter.

A fixed 15 s round (new-api) shows results late and hammers upstreams at the same time; pacing each
task by its own progress rate finds completions early with few requests.
"""

from __future__ import annotations

import random

from mediarelay.channels.base import PollResult
from mediarelay.domain import Task

MIN_DELAY = 0.2
MAX_DELAY = 30.0


def next_poll_delay(
    task: Task, result: PollResult, now_ms: int, *, rng: random.Random | None = None
) -> float:
    """Seconds until the next poll of `task`, given what the upstream just answered."""
    rng = rng or random.Random()
    if result.retry_after is not None:
        base = result.retry_after
    else:
        elapsed = max(0.0, (now_ms - (task.started_at or task.created_at)) / 1000)
        progress = result.progress if result.progress is not None else task.progress
        if progress and 0 < progress < 100:
            # Remaining time estimated from the rate so far; poll a few times before the expected end.
            base = elapsed * (100 - progress) / progress / 3
        else:
            base = min(1.0 + elapsed / 8, 15.0)
    base = min(max(base, MIN_DELAY), MAX_DELAY)
    return float(base * rng.uniform(0.9, 1.1))


def retry_backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter for retryable upstream errors."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2.0**attempt)
