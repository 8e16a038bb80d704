"""Charts drawn on the server as inline SVG: nothing to download, nothing to run in the browser, and every chart
comes with its table and a sentence saying what it shows (for screen readers and for people who prefer numbers).

Colours and type come from classes styled in console.css, so the page's Content-Security-Policy needs no inline
styles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Chart", "bars", "lines"]

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 28, 40
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    summary: str
    svg: Markup
    columns: list[str]
    rows: list[list[str]]

    @property
    def empty(self) -> bool:
        return not self.rows


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _frame(
    chart_id: str, title: str, summary: str, labels: Sequence[str], low: float, high: float, names: Sequence[str]
) -> tuple[list[str], Callable[[float], float]]:
    plot_height = HEIGHT - TOP - BOTTOM

    def y(value: float) -> float:
        return TOP + plot_height * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
    ]
    for i in range(5):
        value = low + (high - low) * i / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_number(value)}</text>'
        )
    for index, name in enumerate(names):
        x = LEFT + index * 150
        parts.append(
            f'<rect class="s{index}" x="{x}" y="6" width="12" height="12"/>'
            f'<text class="legend" x="{x + 18}" y="16">{escape(name)}</text>'
        )
    return parts, y


def _x_labels(labels: Sequence[str], centre: Callable[[int], float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [
        f'<text class="tick" x="{centre(i):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _finish(
    parts: list[str],
    chart_id: str,
    title: str,
    summary: str,
    labels: Sequence[str],
    centre: Callable[[int], float],
    label_heading: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    fmt: Callable[[float], str],
) -> Chart:
    """A chart of one value per label and series: the x labels, and its table (a missing value shows as a dash)."""

    def cell(value: float | None) -> str:
        return "–" if value is None else fmt(value)

    parts.extend(_x_labels(labels, centre))
    parts.append("</svg>")
    rows = [[label, *(cell(values[i]) for _, values in series)] for i, label in enumerate(labels)]
    return Chart(chart_id, title, summary, Markup("".join(parts)), [label_heading, *(n for n, _ in series)], rows)


def bars(
    chart_id: str,
    title: str,
    summary: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    label_heading: str = "",
    fmt: Callable[[float], str] = _number,
) -> Chart:
    """Grouped vertical bars, one group per label."""
    # at least 4, so the five gridlines of a chart of small counts fall on whole numbers
    top = max(4.0, _nice_ceiling(max((v for _, values in series for v in values), default=0)))
    parts, y = _frame(chart_id, title, summary, labels, 0.0, top, [name for name, _ in series])
    plot_width = WIDTH - LEFT - RIGHT
    group = plot_width / max(1, len(labels))
    bar = max(1.0, group * 0.8 / max(1, len(series)))
    for i in range(len(labels)):
        for s, (name, values) in enumerate(series):
            x = LEFT + i * group + group * 0.1 + s * bar
            height = y(0) - y(values[i])
            parts.append(
                f'<rect class="s{s}" x="{x:.1f}" y="{y(values[i]):.1f}" width="{bar:.1f}" height="{height:.1f}">'
                f"<title>{escape(labels[i])}: {escape(name)} {fmt(values[i])}</title></rect>"
            )
    return _finish(
        parts, chart_id, title, summary, labels, lambda i: LEFT + i * group + group / 2, label_heading, series, fmt
    )


def lines(
    chart_id: str,
    title: str,
    summary: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    label_heading: str = "",
    low: float | None = None,
    high: float | None = None,
    fmt: Callable[[float], str] = _number,
) -> Chart:
    """One polyline per series; a missing value (None) breaks the line."""
    present = [v for _, values in series for v in values if v is not None]
    bottom = low if low is not None else min(0.0, min(present, default=0.0))
    top = high if high is not None else _nice_ceiling(max(present, default=0.0))
    parts, y = _frame(chart_id, title, summary, labels, bottom, top, [name for name, _ in series])
    plot_width = WIDTH - LEFT - RIGHT

    def x(i: int) -> float:
        return LEFT + (plot_width * i / (len(labels) - 1) if len(labels) > 1 else plot_width / 2)

    if bottom < 0 < top:
        parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    for s, (name, values) in enumerate(series):
        run: list[str] = []
        for i, value in enumerate([*values, None]):
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline class="line s{s}" points="{" ".join(run)}"/>')
                run = []
                continue
            run.append(f"{x(i):.1f},{y(value):.1f}")
            parts.append(
                f'<circle class="dot s{s}" cx="{x(i):.1f}" cy="{y(value):.1f}" r="3">'
                f"<title>{escape(labels[i])}: {escape(name)} {fmt(value)}</title></circle>"
            )
    return _finish(parts, chart_id, title, summary, labels, x, label_heading, series, fmt)


def intervals(
    chart_id: str,
    title: str,
    summary: str,
    rows: Sequence[tuple[str, float, float, float]],
    *,
    fmt: Callable[[float], str] = _number,
) -> Chart:
    """Each row's estimate as a dot on its 95% interval, against a line at zero (no effect): an interval that
    crosses the line is an effect the data cannot tell from none."""
    extent = max((abs(v) for _, estimate, low, high in rows for v in (estimate, low, high)), default=0.0) or 1.0
    extent *= 1.15
    row_height, top_pad = 44, 24
    height = top_pad + row_height * max(1, len(rows)) + 24
    left, right = 150, WIDTH - 16

    def x(value: float) -> float:
        return left + (right - left) * (value + extent) / (2 * extent)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
        f'<line class="axis" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top_pad - 8}" y2="{height - 20}"/>',
        f'<text class="tick" x="{x(0):.1f}" y="{height - 6}" text-anchor="middle">0 (no effect)</text>',
        f'<text class="tick" x="{left}" y="{height - 6}">{escape(fmt(-extent))}</text>',
        f'<text class="tick" x="{right}" y="{height - 6}" text-anchor="end">{escape(fmt(extent))}</text>',
    ]
    for i, (label, estimate, low, high) in enumerate(rows):
        y = top_pad + row_height * i + row_height / 2
        parts.append(
            f'<text class="legend" x="8" y="{y + 4:.1f}">{escape(label)}</text>'
            f'<line class="line s0" x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<line class="line s0" x1="{x(low):.1f}" x2="{x(low):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}"/>'
            f'<line class="line s0" x1="{x(high):.1f}" x2="{x(high):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}"/>'
            f'<circle class="dot s1" cx="{x(estimate):.1f}" cy="{y:.1f}" r="5">'
            f"<title>{escape(label)}: {escape(fmt(estimate))} ({escape(fmt(low))} to {escape(fmt(high))})</title>"
            "</circle>"
        )
    parts.append("</svg>")
    table = [[label, fmt(estimate), fmt(low), fmt(high)] for label, estimate, low, high in rows]
    return Chart(chart_id, title, summary, Markup("".join(parts)), ["measure", "lift", "95% low", "95% high"], table)
