"""Event-time health: events whose absurd time was replaced, events that arrived late, scoring's clock and the
live-source hold."""

from __future__ import annotations

from pydantic import Field

from custodes.server.endpoints import Call, Model, NoInput, endpoint


class HoldOut(Model):
    """The live-source hold: scoring's input waits until the slowest running connector has passed it."""

    max_hours: float = Field(description="`ingest.max_hold_hours`: how far behind the newest a source holds at most")
    watermarks: dict[str, str | None] = Field(description="each running connector's newest event time delivered")
    held: dict[str, int] = Field(description="events and findings held from scoring now, by source")
    stalled: list[str] = Field(description="running connectors lagging past the bound: they hold no longer")
    released_past_bound: dict[str, int] = Field(
        description="since start: items released while that source lagged past the bound"
    )


class EventTimeOut(Model):
    """Counts by source, and the clock behaviour scoring closes dates by."""

    out_of_window: dict[str, int] = Field(
        description="since start: events whose time was outside the ingest window and took their ingestion time"
    )
    late: dict[str, dict[str, int]] = Field(
        description="by stage (`scoring`: persisted; `correlation`: since start) then source: events that came "
        "after their date or window had closed (a replay or backfill re-scores them)"
    )
    watermark: str | None = Field(description="the newest event time scoring has seen")
    closed_through: str | None = Field(description="the last date scoring has closed (final scores)")
    hold: HoldOut


@endpoint(
    "GET",
    "/api/event-time",
    role="viewer",
    summary="Late and out-of-window events",
    response=EventTimeOut,
    tags=("ingest",),
)
async def event_time(call: Call[NoInput, NoInput]) -> EventTimeOut:
    """Events with an absurd time and events that arrived late, by source, and scoring's clock."""
    return EventTimeOut.model_validate(call.services.pipeline.event_time())
