"""The geometry of a risk-over-time line chart, drawn as inline SVG by the person template (no script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH = 640
HEIGHT = 200
PAD_LEFT = 44
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28


@dataclass(frozen=True, slots=True)
class Point:
    """One day on the chart."""

    x: float
    y: float
    day: date
    risk: float


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template draws: the line, its points, the y-axis ticks and the first and last day."""

    width: int
    height: int
    points: list[Point]
    line: str
    ticks: list[tuple[float, str]]
    baseline: float

    @property
    def summary(self) -> str:
        """A text alternative for screen readers."""
        if not self.points:
            return "No scores yet."
        top = max(self.points, key=lambda p: p.risk)
        return (
            f"Risk over {len(self.points)} days, from {self.points[0].day} to {self.points[-1].day}; "
            f"highest {top.risk:.1f} on {top.day}; latest {self.points[-1].risk:.1f}."
        )


def risk_chart(scores: list[tuple[date, float]]) -> Chart:
    """A chart of day scores (any order), oldest on the left; the y axis starts at 0 and ends at a round top."""
    ordered = sorted(scores)
    top = max([risk for _, risk in ordered] + [1.0])
    step = _nice_step(top / 4)
    ceiling = step * (int(top / step) + (0 if top % step == 0 else 1))
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    baseline = PAD_TOP + inner_h

    def y_of(value: float) -> float:
        return round(baseline - inner_h * value / ceiling, 1)

    span = max(1, (ordered[-1][0] - ordered[0][0]).days) if ordered else 1
    points = [
        Point(
            round(PAD_LEFT + (inner_w * (day - ordered[0][0]).days / span if len(ordered) > 1 else inner_w / 2), 1),
            y_of(risk),
            day,
            risk,
        )
        for day, risk in ordered
    ]
    ticks = [(y_of(step * n), f"{step * n:g}") for n in range(round(ceiling / step) + 1)]
    return Chart(WIDTH, HEIGHT, points, " ".join(f"{p.x},{p.y}" for p in points), ticks, baseline)


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    magnitude = 10.0 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude
