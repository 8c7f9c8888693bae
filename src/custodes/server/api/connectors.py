"""Pull connectors' health, as `custodes connectors status` shows it."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from custodes.model import utcnow
from custodes.server.endpoints import Call, Model, NoInput, endpoint


class ConnectorOut(Model):
    """One connector's health."""

    connector: str
    kind: str
    lag_seconds: float | None = Field(description="now minus the newest event stored; null before any")
    events_per_second: float = Field(description="of the last round")
    events_total: int
    last_round_events: int
    newest_event: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    configured: bool = Field(description="in this service's configuration")


class ConnectorList(Model):
    """Every connector with a recorded status, and every configured one."""

    connectors: list[ConnectorOut]


@endpoint(
    "GET",
    "/api/connectors",
    role="viewer",
    summary="Connectors' status",
    response=ConnectorList,
    tags=("connectors",),
)
async def list_connectors(call: Call[NoInput, NoInput]) -> ConnectorList:
    """Per connector: lag behind its newest event, events/s of the last round, the last success and error and
    how many rounds in a row failed; configured connectors that never ran are listed with no data."""
    async with call.services.store.transaction() as tx:
        statuses = await tx.list_connector_status()
    now = utcnow()
    configured = call.services.settings.connectors
    shown = []
    for status in statuses:
        lag = status.lag(now)
        shown.append(
            ConnectorOut(
                connector=status.connector,
                kind=status.kind,
                lag_seconds=None if lag is None else round(lag.total_seconds(), 1),
                events_per_second=round(status.events_per_second, 1),
                events_total=status.events_total,
                last_round_events=status.last_round_events,
                newest_event=status.newest_event,
                last_success=status.last_success,
                last_error=status.last_error,
                last_error_at=status.last_error_at,
                consecutive_failures=status.consecutive_failures,
                configured=status.connector in configured,
            )
        )
    known = {status.connector for status in statuses}
    shown += [
        ConnectorOut(
            connector=name,
            kind=entry.kind,
            lag_seconds=None,
            events_per_second=0.0,
            events_total=0,
            last_round_events=0,
            newest_event=None,
            last_success=None,
            last_error=None,
            last_error_at=None,
            consecutive_failures=0,
            configured=True,
        )
        for name, entry in sorted(configured.items())
        if name not in known
    ]
    return ConnectorList(connectors=shown)
