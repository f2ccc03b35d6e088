"""Channels: health, in-flight count against the limit, error rate, enable/disable and edit."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from markupsafe import Markup
from starlette.responses import Response

from mediarelay.channels.base import ChannelConfig
from mediarelay.domain import Status, now_ms
from mediarelay.web import charts, extensions
from mediarelay.web.common import (
    AdminRoute,
    Denied,
    Redirect,
    admin_session,
    checked_session,
    flash,
    form_data,
    page,
    ui,
)
from mediarelay.web.session import Session

router = APIRouter(route_class=AdminRoute, include_in_schema=False)

HOUR = 3_600_000
MIN_SAMPLES = 3  # finished tasks before an error rate says anything about health


@dataclass(frozen=True)
class ChannelStats:
    config: ChannelConfig
    inflight: int
    finished_1h: dict[str, int]
    finished_24h: dict[str, int]
    error_rate_1h: float | None
    error_rate_24h: float | None
    last_error: tuple[str | None, str | None, int] | None
    spark: Markup
    hourly: list[float]
    health: str  # healthy | degraded | failing | idle | disabled | full
    health_note: str
    source: str  # "file" (mediarelay.toml) | "admin" (stored through the admin API or these pages) | ""
    breaker: dict[str, Any]  # the channel's live health record on this node (empty if none)


def error_rate(outcomes: dict[str, int]) -> float | None:
    ok, bad = outcomes.get(Status.SUCCEEDED.value, 0), outcomes.get(Status.FAILED.value, 0)
    return bad / (ok + bad) if ok + bad else None


def health(
    cfg: ChannelConfig, inflight: int, rate: float | None, samples: int, breaker: dict[str, Any]
) -> tuple[str, str]:
    """A one-word verdict (documented in docs/admin-ui.md): the circuit breaker and upstream throttling
    first, then the concurrency limit, then the error rate of the last hour."""
    if not cfg.enabled:
        return "disabled", "takes no new tasks"
    if breaker.get("state") in ("open", "half_open"):
        return (
            "failing",
            f"circuit breaker {breaker['state'].replace('_', '-')} after repeated upstream errors",
        )
    if breaker.get("throttled_for_seconds"):
        return "degraded", f"the upstream asked to slow down for {breaker['throttled_for_seconds']:.0f} s"
    if inflight >= cfg.max_concurrency:
        return "full", "at its concurrency limit"
    if rate is None or samples < MIN_SAMPLES:
        return "idle", "too few finished tasks in the last hour to judge"
    if rate >= 0.5:
        return "failing", f"{rate:.0%} of tasks failed in the last hour"
    if rate >= 0.1:
        return "degraded", f"{rate:.0%} of tasks failed in the last hour"
    return "healthy", f"{rate:.0%} of tasks failed in the last hour"


def channel_stats(admin: Any) -> list[ChannelStats]:
    """Every configured channel with its numbers (runs in a worker thread)."""
    q = admin.queries
    svc = admin.services
    now = now_ms()
    manager = extensions.channel_admin(svc)
    configs = [c.config for c in svc.channels.channels.values()]
    inflight = manager.repo.busy() if manager is not None else q.inflight()
    last_hour, last_day = q.channel_outcomes(now - HOUR), q.channel_outcomes(now - 24 * HOUR)
    errors = q.last_errors([c.name for c in configs])
    start = (now // HOUR - 23) * HOUR
    hourly: dict[str, list[float]] = defaultdict(lambda: [0.0] * 24)
    for b, name, n in q.channel_buckets(start, HOUR):
        if 0 <= b < 24:
            hourly[name][b] += n
    out = []
    for cfg in sorted(configs, key=lambda c: (-c.priority, c.name)):
        h1, h24 = last_hour.get(cfg.name, {}), last_day.get(cfg.name, {})
        rate1 = error_rate(h1)
        samples = h1.get(Status.SUCCEEDED.value, 0) + h1.get(Status.FAILED.value, 0)
        health_of = getattr(svc.channels, "health_of", None)
        breaker: dict[str, Any] = health_of(cfg.name).snapshot() if health_of else {}
        verdict, note = health(cfg, inflight.get(cfg.name, 0), rate1, samples, breaker)
        found = manager.effective.get(cfg.name) if manager is not None else None
        series = hourly[cfg.name]
        out.append(
            ChannelStats(
                config=cfg,
                inflight=inflight.get(cfg.name, 0),
                finished_1h=h1,
                finished_24h=h24,
                error_rate_1h=rate1,
                error_rate_24h=error_rate(h24),
                last_error=errors.get(cfg.name),
                spark=charts.sparkline(
                    series, f"{cfg.name}: {int(sum(series))} tasks in the last 24 hours, per hour"
                ),
                hourly=series,
                health=verdict,
                health_note=note,
                source=found.source if found is not None else "",
                breaker=breaker,
            )
        )
    return out


def signature(stats: list[ChannelStats]) -> str:
    """Changes when anything a card shows changes: the live refresh skips the swap (204) otherwise."""
    parts = [
        repr((s.config, s.inflight, s.finished_1h, s.finished_24h, s.last_error, s.hourly, s.health))
        for s in stats
    ]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


@router.get("/admin/channels")
async def channel_list(request: Request, session: Session = Depends(admin_session)) -> Response:
    stats = await asyncio.to_thread(channel_stats, ui(request))
    return page(request, "channels.html", {"channels": stats, "sig": signature(stats)}, nav="channels")


@router.get("/admin/channels/live")
async def channel_live(request: Request, session: Session = Depends(admin_session)) -> Response:
    stats = await asyncio.to_thread(channel_stats, ui(request))
    sig = signature(stats)
    if sig == request.query_params.get("sig"):
        return Response(status_code=204)
    return page(request, "_channel_cards.html", {"channels": stats, "sig": sig}, partial=True)


def _config(request: Request, name: str) -> ChannelConfig:
    channel = ui(request).services.channels.get(name)
    if channel is None:
        raise Denied(404, f"No channel is named “{name}”.")
    return channel.config


async def apply(request: Request, session: Session, name: str, changes: dict[str, Any]) -> str | None:
    """Change a channel: through the channel manager when this build has one (stored in the database,
    applied on every node), else in this process's memory until the next restart. Returns how it was
    kept, or None (with an error message flashed) when the change was refused."""
    svc = ui(request).services
    manager = extensions.channel_admin(svc)
    if manager is not None:
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
        try:
            await asyncio.to_thread(extensions.update_channel, manager, name, plain)
        except ValueError as exc:
            flash(session, f"Channel {name} not changed: {exc}", "error")
            return None
        return "saved for every node"
    channel = svc.channels.get(name)
    if channel is None:
        raise Denied(404, f"No channel is named “{name}”.")
    channel.config = dataclasses.replace(channel.config, **changes)
    return "changed in this process until the next restart"


@router.post("/admin/channels/{name}/enable")
async def enable(request: Request, name: str, session: Session = Depends(checked_session)) -> Response:
    _config(request, name)
    if how := await apply(request, session, name, {"enabled": True}):
        flash(session, f"Channel {name} enabled ({how}).")
    raise Redirect("/admin/channels")


@router.post("/admin/channels/{name}/disable")
async def disable(request: Request, name: str, session: Session = Depends(checked_session)) -> Response:
    _config(request, name)
    if how := await apply(request, session, name, {"enabled": False}):
        flash(session, f"Channel {name} disabled: it takes no new tasks; tasks on it finish ({how}).")
    raise Redirect("/admin/channels")


@router.post("/admin/channels/{name}/reset")
async def reset(request: Request, name: str, session: Session = Depends(checked_session)) -> Response:
    """Close the circuit breaker and forget the upstream's backoff (this node), like the admin API's
    `POST /v1/admin/channels/{name}/reset`."""
    svc = ui(request).services
    _config(request, name)
    health_of = getattr(svc.channels, "health_of", None)
    if health_of is not None:
        record = health_of(name)
        record.breaker.reset()
        record.backoff_until = 0.0
        record.errors_in_a_row = 0
        flash(session, f"Channel {name}: circuit breaker closed; the next task goes to it.")
    raise Redirect("/admin/channels")


@router.get("/admin/channels/{name}/edit")
async def edit_page(request: Request, name: str, session: Session = Depends(admin_session)) -> Response:
    cfg = _config(request, name)
    return page(request, "channel_edit.html", {"cfg": cfg, "values": None, "errors": {}}, nav="channels")


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.replace("\n", ",").split(",") if p.strip())


def parse_edit(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The edit form's values, checked; returns (changes, errors by field)."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in ("models", "operations"):
        found = _patterns(form.get(name, ""))
        if not found:
            errors[name] = "Give at least one pattern (* matches everything)."
        changes[name] = found
    ints = {"priority": (-1_000_000, 1_000_000), "weight": (1, 1_000_000), "max_concurrency": (1, 1_000_000)}
    for name, (low, high) in ints.items():
        try:
            value = int(form.get(name, "").strip())
            if not low <= value <= high:
                raise ValueError
            changes[name] = value
        except ValueError:
            errors[name] = f"A whole number from {low} to {high}."
    try:
        deadline = float(form.get("deadline_seconds", "").strip())
        if not 1 <= deadline <= 30 * 86400:
            raise ValueError
        changes["deadline_seconds"] = deadline
    except ValueError:
        errors["deadline_seconds"] = "Seconds, from 1 to 2592000 (30 days)."
    changes["enabled"] = form.get("enabled") == "on"
    return changes, errors


@router.post("/admin/channels/{name}/edit")
async def edit(request: Request, name: str, session: Session = Depends(checked_session)) -> Response:
    cfg = _config(request, name)
    form = await form_data(request)
    changes, errors = parse_edit(form)
    if errors:
        return page(
            request,
            "channel_edit.html",
            {"cfg": cfg, "values": form, "errors": errors},
            nav="channels",
            status=400,
        )
    if how := await apply(request, session, name, changes):
        flash(session, f"Channel {name} saved ({how}).")
        raise Redirect("/admin/channels")
    raise Redirect(f"/admin/channels/{quote(name)}/edit")
