"""Prometheus metrics of one app (GET /metrics, docs/operations.md).

Each app has its own `CollectorRegistry` (tests run several apps in one process; nothing is global).
HTTP traffic is counted by an outermost ASGI layer that keeps plain dicts of ints and floats: the status
fast path answers tens of thousands of requests a second, and prometheus-client's own Counter/Histogram
take a lock per update. Everything is turned into metric families only when scraped. The task table is
read at scrape time too, at most every `TASKS_TTL` seconds. Upstream polls and errors are the counters
every channel's health record keeps (`channels/health.py`): per process, like the requests they count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediarelay.api.fastpath import ROUTE_KEY
from mediarelay.channels.registry import ChannelSet
from mediarelay.domain import now_ms
from mediarelay.store.database import Database
from mediarelay.store.schema import tasks
from mediarelay.store.tasks import ACTIVE_LITERAL

log = logging.getLogger("mediarelay.metrics")

# Seconds. Long-polls (`?wait=`, up to 60 s) and event streams land in the top buckets.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUCKET_LABELS = (*(f"{b:g}" for b in BUCKETS), "+Inf")
UNMATCHED = "unmatched"  # every path no route knows: one label, so scanners cannot explode the series
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TASKS_TTL = 5.0  # seconds a task-table reading is reused
TASKS_TIMEOUT = 5.0  # seconds a task-table reading may take before the last one is shown again
NO_CHANNEL = "none"  # the channel label of tasks not dispatched yet


SERIES = len(BUCKETS) + 2  # a series: count per bucket (not cumulative; the last one is +Inf), then the sum


@dataclass
class HttpStats:
    """Latency series by (method, route, status): request counts are their totals. Updated only from the
    event loop's thread (the ASGI layer), read by the scrape in the same thread: no locks needed."""

    series: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)


class HttpMetrics:
    """Outermost ASGI layer: times every HTTP request and counts it under its route template (the fast
    path's status template, a FastAPI route's path after routing, or `unmatched`). About a microsecond
    per request: one dict lookup, a bisect and two additions."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.series = stats.series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # an exception before any answer is what the server turns into a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = perf_counter() - start
            route = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            observe(self.series, (method if method in METHODS else "other", route, status), elapsed)


def observe(
    series_by_key: dict[tuple[str, str, int], list[float]], key: tuple[str, str, int], elapsed: float
) -> None:
    """Count one request of `key` (method, route, status) that took `elapsed` seconds."""
    series = series_by_key.get(key)
    if series is None:
        series = series_by_key[key] = [0.0] * SERIES
    series[bisect_left(BUCKETS, elapsed)] += 1  # bucket `le` holds values <= le
    series[-1] += elapsed


@dataclass(frozen=True)
class TaskSnapshot:
    by_status: dict[tuple[str, str], int]  # (status, channel) -> tasks
    lag_seconds: float  # how far the most overdue active task's next step is behind now
    at: float  # time.monotonic() of the reading


def read_tasks(db: Database) -> TaskSnapshot:
    """Tasks by status and channel, and the queue lag, in one read transaction. Blocking."""
    with db.read() as conn:
        rows = conn.execute(
            select(tasks.c.status, tasks.c.channel, func.count()).group_by(tasks.c.status, tasks.c.channel)
        ).all()
        # The partial index ix_tasks_due answers this (its WHERE is repeated literally, see store/tasks.py).
        oldest = conn.execute(
            select(func.min(tasks.c.next_run_at)).where(ACTIVE_LITERAL, tasks.c.next_run_at.is_not(None))
        ).scalar()
    by_status: dict[tuple[str, str], int] = {}
    for status, channel, count in rows:
        key = (str(status), str(channel or NO_CHANNEL))
        by_status[key] = by_status.get(key, 0) + int(count)
    lag = max(0.0, (now_ms() - int(oldest)) / 1000) if oldest is not None else 0.0
    return TaskSnapshot(by_status, lag, time.monotonic())


class AppCollector(Collector):
    """Everything but the HTTP traffic's own updates: turns the app's counters and the last task-table
    reading into metric families when the registry is scraped."""

    def __init__(self, http: HttpStats, db: Database, channels: ChannelSet) -> None:
        self.http = http
        self.db = db
        self.channels = channels
        self.snapshot: TaskSnapshot | None = None
        self.snapshot_ok = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the task table again if the last reading is older than TASKS_TTL (one reader at a time);
        on a failure or a timeout the previous reading stays and `mediarelay_task_stats_ok` says 0."""
        if self.snapshot is not None and time.monotonic() - self.snapshot.at < TASKS_TTL:
            return
        async with self._lock:
            if self.snapshot is not None and time.monotonic() - self.snapshot.at < TASKS_TTL:
                return
            try:
                self.snapshot = await asyncio.wait_for(asyncio.to_thread(read_tasks, self.db), TASKS_TIMEOUT)
                self.snapshot_ok = 1.0
            except Exception:
                log.warning("metrics: could not read the task table", exc_info=True)
                self.snapshot_ok = 0.0

    def describe(self) -> Iterable[Metric]:
        return []  # no reading at registration: the families are only known when collected

    def collect(self) -> Iterator[Metric]:
        yield from self._http()
        yield from self._tasks()
        yield from self._channels()

    def _http(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mediarelay_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            labels=["method", "route", "status"],
        )
        by_route: dict[tuple[str, str], list[float]] = {}
        for (method, route, status), series in list(self.http.series.items()):
            requests.add_metric([method, route, str(status)], sum(series[:-1]))
            merged = by_route.setdefault((method, route), [0.0] * SERIES)
            for i, value in enumerate(series):
                merged[i] += value
        yield requests
        latency = HistogramMetricFamily(
            "mediarelay_http_request_duration_seconds",
            "Time from request to the end of the answer (streams and long-polls included), by route.",
            labels=["method", "route"],
        )
        for (method, route), series in sorted(by_route.items()):
            cumulative: list[tuple[str, float]] = []
            total: float = 0.0
            for label, in_bucket in zip(BUCKET_LABELS, series[:-1], strict=True):
                total += in_bucket
                cumulative.append((label, total))
            latency.add_metric([method, route], cumulative, sum_value=series[-1])
        yield latency

    def _tasks(self) -> Iterator[Metric]:
        ok = GaugeMetricFamily(
            "mediarelay_task_stats_ok", "1 if the last reading of the task table for these metrics worked."
        )
        ok.add_metric([], self.snapshot_ok)
        yield ok
        if self.snapshot is None:
            return
        by_status = GaugeMetricFamily(
            "mediarelay_tasks",
            "Tasks in the database by status and channel (read at most every 5 s).",
            labels=["status", "channel"],
        )
        for (status, channel), count in sorted(self.snapshot.by_status.items()):
            by_status.add_metric([status, channel], count)
        yield by_status
        lag = GaugeMetricFamily(
            "mediarelay_queue_lag_seconds",
            "How far the most overdue active task's next step is behind now (0 when none is overdue).",
        )
        lag.add_metric([], self.snapshot.lag_seconds)
        yield lag

    def _channels(self) -> Iterator[Metric]:
        polls = CounterMetricFamily(
            "mediarelay_upstream_polls",
            "Status polls of tasks on each channel (this process).",
            labels=["channel"],
        )
        requests = CounterMetricFamily(
            "mediarelay_upstream_requests",
            "HTTP requests to each relay channel's upstream (this process).",
            labels=["channel"],
        )
        errors = CounterMetricFamily(
            "mediarelay_upstream_errors",
            "Failed upstream calls by channel, kind (submit, poll, cancel) and error code (this process).",
            labels=["channel", "kind", "code"],
        )
        for name, health in sorted(self.channels.health.items()):
            polls.add_metric([name], health.polls)
            requests.add_metric([name], health.requests)
            for (kind, code), count in sorted(health.errors.items()):
                errors.add_metric([name, kind, code], count)
        yield polls
        yield requests
        yield errors


@dataclass
class Metrics:
    """One app's registry and the collectors that feed it."""

    registry: CollectorRegistry
    http: HttpStats
    collector: AppCollector

    @classmethod
    def build(cls, db: Database, channels: ChannelSet) -> Metrics:
        registry = CollectorRegistry(auto_describe=False)
        http = HttpStats()
        collector = AppCollector(http, db, channels)
        registry.register(collector)
        return cls(registry, http, collector)


def instrument(app: ASGIApp, state: Any, db: Database, channels: ChannelSet) -> ASGIApp:
    """Wrap `app` (the outermost layer) in the HTTP metrics layer; the metrics go to `state.metrics`,
    where GET /metrics finds them."""
    metrics = Metrics.build(db, channels)
    state.metrics = metrics
    return HttpMetrics(app, metrics.http)
