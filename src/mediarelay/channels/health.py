"""A channel's health as this process sees it: circuit breaker, rate limit, backoff, observed durations.

Kept per channel name and carried across configuration reloads (a reload must not forget that an
upstream is down). Per process by design: each node protects the upstream from its own traffic; the
deployment-wide limit (concurrency) lives in the database instead (`store/channels.py`).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
PROBE_TIMEOUT = 120.0  # a half-open probe that never reported back frees the slot after this long


@dataclass
class CircuitBreaker:
    """closed → (N consecutive failures) → open → (cooldown) → half-open: one probe request decides."""

    threshold: int = 5
    cooldown: float = 30.0
    state: str = CLOSED
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None
    trips: int = 0

    def allow(self, now: float | None = None) -> bool:
        """May a request (a submit) go to this channel now? In half-open state only one at a time."""
        now = time.monotonic() if now is None else now
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.opened_at is not None and now - self.opened_at >= self.cooldown:
            self.state = HALF_OPEN
            self.probe_at = None
        if self.state == HALF_OPEN and (self.probe_at is None or now - self.probe_at > PROBE_TIMEOUT):
            self.probe_at = now
            return True
        return False

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until `allow` may say yes again."""
        now = time.monotonic() if now is None else now
        if self.state == OPEN and self.opened_at is not None:
            return max(0.0, self.opened_at + self.cooldown - now)
        return 0.0 if self.state == CLOSED else 1.0

    def success(self) -> None:
        self.state, self.failures, self.opened_at, self.probe_at = CLOSED, 0, None, None

    def failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.state, self.opened_at, self.probe_at = OPEN, now, None
            self.trips += 1

    def reset(self) -> None:
        self.success()


@dataclass
class TokenBucket:
    """`rate` tokens a second up to `burst`; rate None = no limit."""

    rate: float | None
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float | None = None) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there (nothing taken)."""
        if self.rate is None or self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Durations:
    """The last `size` observed run times (submit → upstream done), for poll pacing."""

    def __init__(self, size: int = 200) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            self.values.append(seconds)

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class ChannelHealth:
    breaker: CircuitBreaker
    bucket: TokenBucket
    durations: Durations = field(default_factory=Durations)
    backoff_until: float = 0.0  # the upstream said 429 + Retry-After: no submits before this (monotonic)
    errors_in_a_row: int = 0  # failed requests since the last good one (polls back off with it)
    last_error: str | None = None
    last_error_at: float | None = None  # epoch seconds, for display
    requests: int = 0
    submits: int = 0
    polls: int = 0  # engine polls of this channel's tasks (GET /metrics)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, code) of failed calls
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def create(
        cls, *, threshold: int, cooldown: float, rate: float | None, burst: int | None
    ) -> ChannelHealth:
        return cls(
            breaker=CircuitBreaker(threshold=max(1, threshold), cooldown=max(0.0, cooldown)),
            bucket=TokenBucket(rate=rate, burst=float(burst or max(1.0, rate or 1.0))),
        )

    def configure(self, *, threshold: int, cooldown: float, rate: float | None, burst: int | None) -> None:
        """Apply new limits from a reload, keeping the state."""
        self.breaker.threshold, self.breaker.cooldown = max(1, threshold), max(0.0, cooldown)
        new_burst = float(burst or max(1.0, rate or 1.0))
        if (self.bucket.rate, self.bucket.burst) != (rate, new_burst):
            self.bucket = TokenBucket(rate=rate, burst=new_burst)

    def ok(self) -> None:
        """A request the upstream answered properly (even with a refusal of the request itself)."""
        self.requests += 1
        self.errors_in_a_row = 0
        self.breaker.success()

    def failed(self, message: str) -> None:
        """A request that failed because of the upstream or the network (timeout, reset, 5xx…)."""
        self.requests += 1
        self.errors_in_a_row += 1
        self.last_error, self.last_error_at = message, time.time()
        self.breaker.failure()

    def throttled(self, retry_after: float, message: str) -> None:
        """429: the upstream is alive but wants fewer requests; submits pause for `retry_after`."""
        self.requests += 1
        self.backoff_until = max(self.backoff_until, time.monotonic() + retry_after)
        self.last_error, self.last_error_at = message, time.time()

    def submit_wait(self) -> float:
        """Seconds before this process should send this channel a submit (0 = now). No side effect:
        the breaker's half-open probe is only taken by `breaker.allow()` right before the submit."""
        now = time.monotonic()
        if now < self.backoff_until:
            return self.backoff_until - now
        b = self.breaker
        if b.state == OPEN and b.opened_at is not None and now - b.opened_at < b.cooldown:
            return max(0.5, b.retry_in(now))
        if b.state == HALF_OPEN and b.probe_at is not None and now - b.probe_at <= PROBE_TIMEOUT:
            return 1.0  # a probe is on its way: its outcome decides
        return 0.0

    def poll_backoff(self) -> float:
        """Extra pause for polls while the upstream keeps failing: 1, 2, 4 … 30 s."""
        if self.errors_in_a_row == 0:
            return 0.0
        return float(min(30.0, 2.0 ** (self.errors_in_a_row - 1)))

    def credential(self, refs: tuple[str, ...], secrets: Mapping[str, str] | None = None) -> str | None:
        """The next credential for a new task: round robin over those whose secret is present."""
        present = [r for r in refs if secret_of(r, secrets)]
        if not present:
            return refs[0] if refs else None
        return present[next(self._turn) % len(present)]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        b = self.breaker
        state = b.state
        if state == OPEN and b.retry_in(now) == 0:
            state = HALF_OPEN  # the next submit will be the probe
        return {
            "state": state,
            "consecutive_failures": b.failures,
            "trips": b.trips,
            "retry_in_seconds": round(b.retry_in(now), 3) if b.state != CLOSED else 0,
            "throttled_for_seconds": round(max(0.0, self.backoff_until - now), 3),
            "last_error": self.last_error,
            "last_error_at": int(self.last_error_at * 1000) if self.last_error_at else None,
            "requests": self.requests,
            "submits": self.submits,
            "observed_tasks": len(self.durations),
            "observed_p50_seconds": _round(self.durations.quantile(0.5)),
            "observed_p90_seconds": _round(self.durations.quantile(0.9)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def secret_of(ref: str, secrets: Mapping[str, str] | None = None) -> str | None:
    """The secret a credential reference points at (None when unset or not a reference): `env:NAME`
    reads the environment, `secret:LABEL` the channel's stored (decrypted) secrets."""
    if ref.startswith("secret:"):
        return (secrets or {}).get(ref[7:]) or None
    if not ref.startswith("env:"):
        return None
    return os.environ.get(ref[4:]) or None
