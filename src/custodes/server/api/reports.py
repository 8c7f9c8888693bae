"""Compliance evidence reports over a period, as JSON, HTML or PDF (docs/compliance.md); each is audited."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from custodes.errors import CustodesError
from custodes.reports.catalogue import catalogue
from custodes.reports.compliance import MEDIA_TYPES, SCHEMA, check_framework, period_of
from custodes.reports.produce import produce
from custodes.server.endpoints import ApiError, Call, Model, NoInput, endpoint

MOMENT: dict[str, Any] = {"anyOf": [{"format": "date"}, {"format": "date-time"}]}
"""An ISO 8601 date (YYYY-MM-DD) or date-time."""


class ComplianceQuery(Model):
    """Which framework, period and format."""

    framework: str = Field(
        min_length=1,
        max_length=64,
        description="a framework of the control catalogue",
        json_schema_extra={"enum": list(catalogue().frameworks)},
    )
    start: str = Field(alias="from", max_length=40, description="first day, or date-time", json_schema_extra=MOMENT)
    end: str = Field(
        alias="to",
        max_length=40,
        description="last day (included), or date-time (excluded); a period ending before it starts is empty",
        json_schema_extra=MOMENT,
    )
    format: Literal["json", "html", "pdf"] = Field(default="json", description="json, html or pdf")


class PeriodOut(Model):
    """The period covered: [from, to)."""

    start: str = Field(alias="from")
    end: str = Field(alias="to")


class ControlOut(Model):
    """A control and the names of the measures that are its evidence."""

    id: str
    title: str
    measures: list[str]


class ComplianceReport(Model):
    """The report's JSON (schema `custodes.compliance/1`)."""

    schema_: str = Field(alias="schema", description=SCHEMA)
    generator: str
    framework: str
    framework_title: str
    period: PeriodOut
    generated_at: str
    measures: dict[str, dict[str, int | float | bool | str | dict[str, int] | None]]
    measure_titles: dict[str, str]
    controls: list[ControlOut]


@endpoint(
    "GET",
    "/api/reports/compliance",
    role="analyst",
    summary="Compliance evidence for a framework's controls",
    query=ComplianceQuery,
    response=ComplianceReport,
    tags=("reports",),
    media=(MEDIA_TYPES["html"].split(";")[0], MEDIA_TYPES["pdf"]),
)
async def compliance_report(call: Call[ComplianceQuery, NoInput]) -> web.Response:
    """Each control with the figures from the store for the period, in the asked format (`report.compliance`
    audited)."""
    query = call.query
    try:
        check_framework(query.framework, "framework")
        period = period_of(query.start, query.end, names=("from", "to"), strict=False)
    except CustodesError as exc:
        message = str(exc)
        raise ApiError(400, "invalid_parameter", message, field=message.split(":", 1)[0]) from None
    services = call.services
    who = f"api:{call.caller}"
    data = await produce(services.store, services.settings, query.framework, period, query.format, who)
    return web.Response(body=data, headers={"Content-Type": MEDIA_TYPES[query.format]})
