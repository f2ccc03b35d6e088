"""Charts as server-rendered inline SVG: no JavaScript, no external requests, readable by screen readers.

Each chart carries its own data table (rendered by the template under the figure) and a <title>/<desc>;
colours come from CSS classes, so the stylesheet decides them (and dark mode works).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 26


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str  # a class name the stylesheet colours (`s-succeeded`, `s-ch-0`, `s-p95`…)


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    desc: str
    svg: Markup
    legend: tuple[Series, ...]
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: bool = False
    show_legend: bool = True
    empty_note: str = "No tasks in this period yet."


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (at least 1): round axis labels."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp >= value:
            return float(step * exp)
    return float(10 * exp)


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _frame(chart_id: str, title: str, desc: str, body: list[str], width: int) -> Markup:
    head = (
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" focusable="false">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _axes(labels: Sequence[str], top: float, fmt: Callable[[float], str], width: int) -> list[str]:
    """Horizontal grid lines with their values, and a few x labels (first, middle, last)."""
    parts = []
    plot_h = HEIGHT - TOP - BOTTOM
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(top * frac))}</text>"
        )
    n = len(labels)
    if n:
        step = (width - LEFT - RIGHT) / n
        for i in sorted({0, n // 2, n - 1}):
            x = LEFT + step * (i + 0.5)
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            if anchor == "start":
                x = LEFT
            elif anchor == "end":
                x = width - RIGHT
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                f"{escape(labels[i])}</text>"
            )
    return parts


def stacked_bars(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    fmt: Callable[[float], str] = _num,
    legend: bool = True,
    width: int = WIDTH,
    empty_note: str = "No tasks in this period yet.",
) -> Chart:
    """One bar per label, stacked by series (zero-height parts are left out)."""
    n = len(labels)
    totals = [sum((s.values[i] or 0) for s in series) for i in range(n)]
    top = nice_max(max(totals, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (width - LEFT - RIGHT) / max(n, 1)
    bar_w = max(step * 0.72, 1.0)
    body = _axes(labels, top, fmt, width)
    for i in range(n):
        y: float = TOP + plot_h
        x = LEFT + step * i + (step - bar_w) / 2
        for s in series:
            v = s.values[i] or 0
            if v <= 0:
                continue
            h = plot_h * v / top
            y -= h
            tip = f"{labels[i]}: {fmt(v)}{unit} {s.name}"
            body.append(
                f'<rect class="{s.css}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    headers = ("time", *(s.name for s in series), "total")
    rows = tuple((labels[i], *(fmt(s.values[i] or 0) for s in series), fmt(totals[i])) for i in range(n))
    return Chart(
        chart_id,
        title,
        desc,
        _frame(chart_id, title, desc, body, width),
        tuple(series),
        headers,
        rows,
        empty=not any(totals),
        show_legend=legend,
        empty_note=empty_note,
    )


def lines(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    top: float | None = None,
    fmt: Callable[[float], str] = _num,
    legend: bool = True,
    width: int = WIDTH,
) -> Chart:
    """One polyline per series; a gap (None) breaks the line, a lone point is drawn as a dot."""
    n = len(labels)
    seen = [v for s in series for v in s.values if v is not None]
    top = top if top is not None else nice_max(max(seen, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (width - LEFT - RIGHT) / max(n, 1)
    body = _axes(labels, top, fmt, width)
    for s in series:
        runs: list[list[tuple[float, float, int]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
                continue
            runs[-1].append((LEFT + step * (i + 0.5), TOP + plot_h * (1 - min(v, top) / top), i))
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in run)
                body.append(f'<polyline class="line {s.css}" points="{pts}"/>')
            for x, y, i in run:
                tip = f"{labels[i]}: {s.name} {fmt(float(s.values[i] or 0))}"
                body.append(
                    f'<circle class="dot {s.css}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                    f"<title>{escape(tip)}</title></circle>"
                )
    headers = ("time", *(s.name for s in series))
    rows = tuple(
        (labels[i], *("–" if s.values[i] is None else fmt(float(s.values[i] or 0)) for s in series))
        for i in range(n)
    )
    return Chart(
        chart_id,
        title,
        desc,
        _frame(chart_id, title, desc, body, width),
        tuple(series),
        headers,
        rows,
        empty=not seen,
        show_legend=legend,
    )


def sparkline(values: Sequence[float], label: str, css: str = "s-spark") -> Markup:
    """A small bar sparkline (per-channel load) with an accessible name; the numbers are shown beside."""
    w, h = 120, 28
    top = max(max(values, default=0), 1)
    step = w / max(len(values), 1)
    bars = []
    for i, v in enumerate(values):
        bh = (h - 2) * v / top
        if bh > 0:
            bars.append(
                f'<rect class="{css}" x="{i * step:.1f}" y="{h - bh:.1f}" '
                f'width="{max(step - 1, 0.5):.1f}" height="{bh:.1f}"/>'
            )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(label)}" focusable="false">'
        f'<line class="grid" x1="0" x2="{w}" y1="{h - 0.5}" y2="{h - 0.5}"/>{"".join(bars)}</svg>'
    )
