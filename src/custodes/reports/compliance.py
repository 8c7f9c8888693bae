"""The compliance report: a framework's controls, each with the evidence figures Custodes holds for a period.

`build` computes every measure the framework's controls name once, and returns the report as plain JSON data in
the documented, versioned schema (docs/compliance.md); `render` turns it into JSON, HTML or PDF bytes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

from custodes import __version__
from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.reports.catalogue import catalogue
from custodes.reports.measures import MEASURES, Figures, Period, Source

SCHEMA = "custodes.compliance/1"
FORMATS = ("json", "html", "pdf")
MEDIA_TYPES = {"json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}


def parse_moment(option: str, text: str, *, end: bool) -> datetime:
    """A `--from`/`--to` value: an ISO 8601 date (a whole day: its start, or for an end the next midnight) or
    date-time (naive means UTC); anything else is an error naming the option."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), UTC)
            if not end:
                return moment
            return moment + timedelta(days=1) if day < date.max else datetime.max.replace(tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise CustodesError(
            f"{option}: {text!r} is not an ISO 8601 date or date-time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999: the earliest or latest time there is
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)


def period_of(start: str, end: str, *, names: tuple[str, str] = ("--from", "--to"), strict: bool = True) -> Period:
    """The report period from the two option values; `strict`: one that ends before it starts is an error (else
    it is empty)."""
    first, last = parse_moment(names[0], start, end=False), parse_moment(names[1], end, end=True)
    if strict and first >= last:
        raise CustodesError(f"{names[0]}: {start} is not before the end of {names[1]} {end}: the period is empty")
    return Period(first, last, utcnow())


def check_framework(name: str, option: str = "--framework") -> None:
    """Fail naming the option when the catalogue has no such framework."""
    known = catalogue().frameworks
    if name not in known:
        raise CustodesError(f"{option}: unknown framework {name!r}; known: {', '.join(known)}")


def check_format(name: str, option: str = "--format") -> None:
    """Fail naming the option when the format is not one of FORMATS."""
    if name not in FORMATS:
        raise CustodesError(f"{option}: unknown format {name!r}; known: {', '.join(FORMATS)}")


async def build(source: Source, framework: str, period: Period) -> dict[str, Any]:
    """The report of `framework` for `period` as JSON data."""
    check_framework(framework)
    chosen = catalogue().frameworks[framework]
    needed = [name for name in MEASURES if any(name in control.measures for control in chosen.controls)]
    figures: dict[str, Figures] = {name: await MEASURES[name](source, period) for name in needed}
    return {
        "schema": SCHEMA,
        "generator": f"custodes {__version__}",
        "framework": framework,
        "framework_title": chosen.title,
        "period": {"from": period.start.isoformat(), "to": period.end.isoformat()},
        "generated_at": period.as_of.isoformat(),
        "measures": figures,
        "measure_titles": {name: catalogue().measures[name] for name in needed},
        "controls": [
            {"id": control.id, "title": control.title, "measures": list(control.measures)}
            for control in chosen.controls
        ],
    }


def render(report: dict[str, Any], fmt: str) -> bytes:
    """The report in `fmt` (json, html or pdf)."""
    check_format(fmt)
    if fmt == "json":
        return orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    from custodes.reports import render as rendering

    return rendering.html(report) if fmt == "html" else rendering.pdf(report)
