"""Requests-per-minute limits: one token bucket per key, in this process's memory.

Embedded mode runs one process, so this is exact there. Scaled out, each API node keeps its own buckets
(a key gets up to `rpm` per node) until the limiter moves to the shared database (docs/billing.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_KEYS = 100_000


class RateLimiter:
    """`rpm` submits a minute per key, in bursts of up to `rpm` (a bucket that refills continuously)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float, int]] = {}  # key -> (tokens, at, rpm)
        self._lock = threading.Lock()

    def take(self, key_id: str, rpm: int) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available (nothing spent)."""
        now = self.clock()
        rate = rpm / 60.0
        with self._lock:
            tokens, at, known = self._buckets.get(key_id, (float(rpm), now, rpm))
            if known != rpm:  # the limit changed: start over with a full bucket of the new size
                tokens, at = float(rpm), now
            tokens = min(float(rpm), tokens + (now - at) * rate)
            if tokens >= 1.0:
                if len(self._buckets) >= MAX_KEYS:
                    self._buckets.clear()
                self._buckets[key_id] = (tokens - 1.0, now, rpm)
                return 0.0
            self._buckets[key_id] = (tokens, now, rpm)
            return (1.0 - tokens) / rate
