"""Jinja2 templates and the small formatting filters the pages share (times in UTC, sizes, durations)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.templating import Jinja2Templates

from mediarelay.domain import now_ms
from mediarelay.web.money import fmt_amount

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def fmt_time(ms: int | None) -> str:
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def fmt_clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def iso_time(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fmt_ms(ms: float | None) -> str:
    """A duration for people: 850 ms, 4.2 s, 3 min 05 s, 2 h 10 min."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min" + (f" {int(s % 60):02d} s" if int(s % 60) else "")
    if s < 86400:
        return f"{int(s // 3600)} h" + (f" {int(s % 3600 // 60):02d} min" if int(s % 3600 // 60) else "")
    return f"{int(s // 86400)} d" + (f" {int(s % 86400 // 3600)} h" if int(s % 86400 // 3600) else "")


def ago(ms: int | None) -> str:
    if not ms:
        return "never"
    delta = max(0, now_ms() - ms)
    if delta < 5_000:
        return "just now"
    if delta < 60_000:
        return f"{delta // 1000} s ago"
    return f"{fmt_ms(delta)} ago"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def pretty_json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def short_id(task_id: str) -> Markup:
    """A ULID shown short (its random tail), the full id in a title."""
    return Markup('<span class="mono nowrap" title="{0}">…{1}</span>').format(task_id, task_id[-8:])


templates.env.filters.update(
    time=fmt_time,
    date=fmt_date,
    clock=fmt_clock,
    iso=iso_time,
    duration=fmt_ms,
    ago=ago,
    bytes=fmt_bytes,
    pretty=pretty_json,
    pct=pct,
    short=short_id,
    money=fmt_amount,
)
