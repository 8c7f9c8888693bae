"""Event-time health: events whose absurd time was replaced, events that arrived late, and scoring's clock."""

from __future__ import annotations

from pydantic import Field

from custodes.server.endpoints import Call, Model, NoInput, endpoint


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
