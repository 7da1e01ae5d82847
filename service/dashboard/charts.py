"""Bar charts as geometry for the templates to draw as SVG (server-side, no library, no
script): the layout is a few lines of arithmetic, which a charting dependency would not
make shorter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
MARGIN_LEFT = 56
MARGIN_BOTTOM = 48
MARGIN_TOP = 12


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    text: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = MARGIN_LEFT
    baseline: float = HEIGHT - MARGIN_BOTTOM


def _fmt(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"
    return f"${text}" if unit == "$" else f"{text}{unit}"


def bar_chart(title: str, points: Sequence[tuple[str, float]], *, unit: str = "") -> BarChart:
    plot_height = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    plot_width = WIDTH - MARGIN_LEFT - 8
    top = max((value for _, value in points), default=0.0) or 1.0
    slot = plot_width / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        height = max(value, 0.0) / top * plot_height
        bars.append(
            Bar(
                label=label,
                value=value,
                text=_fmt(value, unit),
                x=round(MARGIN_LEFT + index * slot + slot * 0.1, 2),
                y=round(HEIGHT - MARGIN_BOTTOM - height, 2),
                width=round(slot * 0.8, 2),
                height=round(height, 2),
            )
        )
    ticks = tuple(
        Tick(round(HEIGHT - MARGIN_BOTTOM - share * plot_height, 2), _fmt(top * share, unit))
        for share in (0.0, 0.5, 1.0)
    )
    return BarChart(title, tuple(bars), ticks)
