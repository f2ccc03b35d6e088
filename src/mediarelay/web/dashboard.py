"""The dashboard: tasks per status and per channel over time, success rate, p50/p95 duration, spend."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mediarelay.domain import Status, now_ms
from mediarelay.web import charts, extensions
from mediarelay.web import money as billing_view
from mediarelay.web.charts import Chart, Series
from mediarelay.web.common import AdminRoute, admin_session, page, ui
from mediarelay.web.session import Session
from mediarelay.web.templating import fmt_ms

router = APIRouter(route_class=AdminRoute, include_in_schema=False)

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
STUCK_AFTER = 15 * MINUTE  # an unfinished task unchanged this long is listed as stuck
MAX_CHANNEL_SERIES = 6
# Bar order bottom-up: outcomes first, then what is still moving.
STATUS_ORDER = (
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELED,
    Status.FINALIZING,
    Status.RUNNING,
    Status.QUEUED,
)


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    bucket_ms: int
    buckets: int
    label_fmt: str

    def start(self, now: int) -> int:
        last = now // self.bucket_ms
        return (last - self.buckets + 1) * self.bucket_ms

    def labels(self, start: int) -> list[str]:
        return [
            datetime.fromtimestamp((start + i * self.bucket_ms) / 1000, UTC).strftime(self.label_fmt)
            for i in range(self.buckets)
        ]


WINDOWS = {
    w.name: w
    for w in (
        Window("1h", "last hour", 5 * MINUTE, 12, "%H:%M"),
        Window("24h", "last 24 hours", HOUR, 24, "%H:00"),
        Window("7d", "last 7 days", 6 * HOUR, 28, "%a %H:00"),
        Window("30d", "last 30 days", DAY, 30, "%m-%d"),
    )
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of unsorted values; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def build(admin: Any, window: Window, now: int) -> dict[str, Any]:
    """Everything the dashboard shows, from a handful of grouped queries (runs in a worker thread)."""
    q = admin.queries
    start = window.start(now)
    labels = window.labels(start)
    n = window.buckets

    by_status: dict[str, list[float]] = {s.value: [0.0] * n for s in STATUS_ORDER}
    for b, status, count in q.status_buckets(start, window.bucket_ms):
        if 0 <= b < n and status in by_status:
            by_status[status][b] += count
    totals = {s: int(sum(v)) for s, v in by_status.items()}
    status_chart = charts.stacked_bars(
        "chart-status",
        f"Tasks per status, {window.label}",
        f"Top-level tasks created per {fmt_ms(window.bucket_ms)}, stacked by their current status (UTC).",
        labels,
        [Series(s.value, by_status[s.value], f"s-{s.value}") for s in STATUS_ORDER],
        unit=" tasks",
    )

    by_channel: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    for b, channel, count in q.channel_buckets(start, window.bucket_ms):
        if 0 <= b < n:
            by_channel[channel][b] += count
    ranked = sorted(by_channel, key=lambda c: -sum(by_channel[c]))
    shown = ranked[:MAX_CHANNEL_SERIES]
    series = [Series(c, by_channel[c], f"s-ch-{i}") for i, c in enumerate(shown)]
    if rest := ranked[MAX_CHANNEL_SERIES:]:
        series.append(Series("other", [sum(by_channel[c][i] for c in rest) for i in range(n)], "s-ch-other"))
    channel_chart = charts.stacked_bars(
        "chart-channels",
        f"Tasks per channel, {window.label}",
        "Tasks that ran on each channel (batch items counted one by one), by creation time (UTC).",
        labels,
        series,
        unit=" tasks",
    )

    ok, bad = by_status[Status.SUCCEEDED.value], by_status[Status.FAILED.value]
    rates = [(ok[i] / (ok[i] + bad[i]) * 100) if ok[i] + bad[i] else None for i in range(n)]
    finished = totals[Status.SUCCEEDED.value] + totals[Status.FAILED.value]
    success = totals[Status.SUCCEEDED.value] / finished if finished else None
    rate_chart = charts.lines(
        "chart-success",
        f"Success rate, {window.label}",
        "Succeeded as a share of succeeded plus failed tasks, per time bucket; canceled tasks are left out.",
        labels,
        [Series("success %", rates, "s-rate")],
        top=100,
        legend=False,
    )

    per_bucket: dict[int, list[float]] = defaultdict(list)
    everything: list[float] = []
    for created, duration in q.durations(start):
        b = (created - start) // window.bucket_ms
        if 0 <= b < n:
            per_bucket[b].append(duration / 1000)
            everything.append(duration / 1000)
    p50 = [percentile(per_bucket[i], 0.5) for i in range(n)]
    p95 = [percentile(per_bucket[i], 0.95) for i in range(n)]
    duration_chart = charts.lines(
        "chart-duration",
        f"Task duration p50 and p95 (seconds), {window.label}",
        "End-to-end time from submit to success of succeeded tasks, by creation time bucket.",
        labels,
        [Series("p50 s", p50, "s-p50"), Series("p95 s", p95, "s-p95")],
    )

    spend_chart: Chart | None = None
    spend_total: float | None = None
    if extensions.billing(admin.services) is not None:
        spend_chart, spend_total = _spend(admin, window, start, labels)

    active = q.active_counts()
    return {
        "window": window,
        "windows": WINDOWS.values(),
        "charts": [c for c in (status_chart, channel_chart, rate_chart, duration_chart, spend_chart) if c],
        "total": sum(totals.values()),
        "totals": totals,
        "success": success,
        "p50": percentile(everything, 0.5),
        "p95": percentile(everything, 0.95),
        "active": active,
        "active_total": sum(active.values()),
        "spend": spend_total,
        "stuck": q.stuck(now - STUCK_AFTER),
        "stuck_after": fmt_ms(STUCK_AFTER),
        "updated": now,
    }


def signature(data: dict[str, Any]) -> str:
    """Changes when anything shown changes (or a minute passed, for the "ago" times): the live refresh
    skips the swap (204) otherwise, so an open data table stays open."""
    shown = (
        data["window"].name,
        data["updated"] // 60_000,
        data["totals"],
        data["active"],
        data["p50"],
        data["p95"],
        data["spend"],
        [c.rows for c in data["charts"]],
        [(t.id, t.status) for t in data["stuck"]],
    )
    return hashlib.blake2b(repr(shown).encode(), digest_size=8).hexdigest()


def _spend(admin: Any, window: Window, start: int, labels: list[str]) -> tuple[Chart, float]:
    """Net spend per bucket (what keys were charged, less refunds) from the task charges."""
    values = [0.0] * window.buckets
    for b, micro in billing_view.spend_buckets(admin.services.db, start, window.bucket_ms):
        if 0 <= b < window.buckets:
            values[b] += micro / 1_000_000
    currency = str(getattr(extensions.billing(admin.services), "currency", "") or "")
    chart = charts.stacked_bars(
        "chart-spend",
        f"Spend{' in ' + currency if currency else ''}, {window.label}",
        "Amount charged to keys for the tasks submitted in each time bucket, net of refunds.",
        labels,
        [Series("spend", values, "s-spend")],
        fmt=lambda v: f"{v:,.2f}",
        legend=False,
        empty_note="Nothing was charged in this period (models are free unless [[prices]] say otherwise).",
    )
    return chart, sum(values)


def _window(request: Request) -> Window:
    return WINDOWS.get(request.query_params.get("range", ""), WINDOWS["24h"])


@router.get("/admin")
async def dashboard(request: Request, session: Session = Depends(admin_session)) -> Response:
    data = await asyncio.to_thread(build, ui(request), _window(request), now_ms())
    return page(request, "dashboard.html", {**data, "sig": signature(data)}, nav="dashboard")


@router.get("/admin/dashboard/live")
async def dashboard_live(request: Request, session: Session = Depends(admin_session)) -> Response:
    data = await asyncio.to_thread(build, ui(request), _window(request), now_ms())
    sig = signature(data)
    if sig == request.query_params.get("sig"):
        return Response(status_code=204)
    return page(request, "_dashboard.html", {**data, "sig": sig}, partial=True)
