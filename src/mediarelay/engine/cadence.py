"""When to poll an upstream next: soon after submit, then paced by observed progress or by how long the
channel's tasks have been taking, with jitter.

A fixed 15 s round (new-api) shows results late and hammers upstreams at the same time; pacing each
task by its own progress rate, or by the channel's observed run times, finds completions early with few
requests: far from the expected end the wait halves towards it, inside the window where most tasks
finish the task is polled every `fast` seconds, and an overdue task is polled less and less often.

The last percent: an upstream that reports 99 % is done within about 1 % of its run time (a second
or so for a video task). For `ENDGAME_SECONDS` after a task is first seen at 99 % (the engine records
that moment: it publishes the 99 %), it is polled every `fast / 2` seconds, which halves how late the
end is seen for about one extra request; a task that stays at 99 % longer is back at the fast pace.
"""

from __future__ import annotations

import random

from mediarelay.channels.base import PollResult
from mediarelay.channels.health import Durations
from mediarelay.domain import Task

MIN_DELAY = 0.2
MAX_DELAY = 30.0
FAST = 1.0  # seconds between polls while a result is expected any moment
# Without progress, a task inside the window of likely completion is polled every BLIND seconds: the
# completion is seen on average BLIND / 2 late (p95 ~ 0.95 BLIND) for about 1 / BLIND of the requests a
# 1-second poller makes. No schedule can beat that trade blindly (for a bound on lateness, even
# spacing is optimal); progress reports are what let the cadence do far better (see below).
BLIND = 2.5
MIN_OBSERVED = 5  # run times seen before the channel's own durations pace its polls
WINDOW = (0.05, 0.95)  # the quantiles of observed run times polled at the fast pace
ENDGAME_PROGRESS = 99  # reported progress that means "any moment now"
ENDGAME_SECONDS = 2.0  # how long after reaching it the task is polled at twice the fast pace


def from_observed(elapsed: float, durations: Durations, blind: float = BLIND) -> float:
    """The wait, given how long this channel's tasks took so far (no progress information)."""
    lo = durations.quantile(WINDOW[0]) or 0.0
    hi = durations.quantile(WINDOW[1]) or 0.0
    if elapsed < lo:
        return max(blind, (lo - elapsed) / 2)  # approach the window in halving steps
    if elapsed <= hi:
        return blind
    return min(15.0, blind * (1 + (elapsed - hi) / max(hi, 1.0)))  # overdue: back off gently


def next_poll_delay(
    task: Task,
    result: PollResult,
    now_ms: int,
    *,
    rng: random.Random | None = None,
    durations: Durations | None = None,
    fast: float = FAST,
    blind: float = BLIND,
) -> float:
    """Seconds until the next poll of `task`, given what the upstream just answered."""
    uniform = rng.uniform if rng is not None else random.uniform  # no new generator per call: it is hot
    elapsed = max(0.0, (now_ms - (task.started_at or task.created_at)) / 1000)
    if result.retry_after is not None:
        base = result.retry_after
    else:
        progress = result.progress if result.progress is not None else task.progress
        if progress and 0 < progress < 100:
            # Remaining time estimated from the rate so far; halve the wait towards the expected end,
            # but do not poll more often than the fast pace (an upstream may sit at 99 % for a while)…
            base = max(fast, elapsed * (100 - progress) / progress / 2)
            if progress >= ENDGAME_PROGRESS and (
                task.progress < ENDGAME_PROGRESS or now_ms - task.updated_at < ENDGAME_SECONDS * 1000
            ):
                base = fast / 2  # …except just after it reached 99 % (`task.updated_at` is that moment)
        elif durations is not None and len(durations) >= MIN_OBSERVED:
            base = from_observed(elapsed, durations, max(fast, blind))
        else:
            base = min(1.0 + elapsed / 8, 15.0)
    base = min(max(base, MIN_DELAY), MAX_DELAY)
    return float(base * uniform(0.9, 1.1))


def retry_backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter for retryable upstream errors."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2.0**attempt)
