"""Pull connectors: their health as `custodes connectors status` shows it, and start / stop of the ones this
service runs (`custodes connectors start|stop` call these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from custodes.connectors.supervisor import ConnectorSupervisor, UnknownConnector
from custodes.model import utcnow
from custodes.server.context import supervisor_key
from custodes.server.endpoints import ApiError, Call, Model, NoInput, endpoint
from custodes.store import ConnectorStatus


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
    state: Literal["running", "stopped"] | None = Field(
        default=None, description="whether this service is polling it; null when this process runs no connectors"
    )


class ConnectorList(Model):
    """Every connector with a recorded status, and every configured one."""

    connectors: list[ConnectorOut]


class ConnectorState(Model):
    """A configured connector entry after a start or stop."""

    name: str
    kind: str
    state: Literal["running", "stopped"]
    connectors: list[str] = Field(description="the connectors of the entry (an Entra entry has one per feed)")


def _states(supervisor: ConnectorSupervisor | None) -> dict[str, Literal["running", "stopped"]]:
    if supervisor is None:
        return {}
    return {item.connector.name: entry.state for entry in supervisor for item in entry.scheduled} | {
        entry.name: entry.state for entry in supervisor
    }


def _out(status: ConnectorStatus, configured: bool, state: Literal["running", "stopped"] | None) -> ConnectorOut:
    lag = status.lag(utcnow())
    return ConnectorOut(
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
        configured=configured,
        state=state,
    )


@endpoint(
    "GET",
    "/api/connectors",
    role="viewer",
    summary="Connectors' status",
    response=ConnectorList,
    tags=("connectors",),
)
async def list_connectors(call: Call[NoInput, NoInput]) -> ConnectorList:
    """Per connector: lag behind its newest event, events/s of the last round, the last success and error, how
    many rounds in a row failed and whether this service polls it; configured connectors that never ran are
    listed with no data."""
    async with call.services.store.transaction() as tx:
        statuses = await tx.list_connector_status()
    configured = call.services.settings.connectors
    states = _states(call.request.app.get(supervisor_key))
    names = {*configured, *(item for item in states if "/" in item)}
    shown = [_out(status, status.connector in names, states.get(status.connector)) for status in statuses]
    known = {status.connector for status in statuses}
    shown += [
        _out(ConnectorStatus(name, entry.kind), True, states.get(name))
        for name, entry in sorted(configured.items())
        if name not in known
    ]
    return ConnectorList(connectors=shown)


async def _control(call: Call[NoInput, NoInput], *, start: bool) -> ConnectorState:
    supervisor = call.request.app.get(supervisor_key)
    if supervisor is None:
        raise ApiError(409, "not_running_connectors", "this process does not run connectors (`custodes serve` does)")
    name = call.request.match_info["name"]
    try:
        entry = supervisor.entry(name)
    except UnknownConnector as error:
        raise ApiError(404, "not_found", str(error.args[0])) from None
    was = entry.state
    state = supervisor.start(name) if start else await supervisor.stop(name)
    async with call.services.store.transaction() as tx:
        await tx.audit(
            f"api:{call.caller}",
            f"connector.{'start' if start else 'stop'}",
            name,
            {"role": call.role, "from": was, "to": state},
        )
    return ConnectorState(
        name=name, kind=entry.kind, state=state, connectors=[item.connector.name for item in entry.scheduled]
    )


@endpoint(
    "POST",
    "/api/connectors/{name}/start",
    role="admin",
    summary="Start a connector",
    response=ConnectorState,
    tags=("connectors",),
)
async def start_connector(call: Call[NoInput, NoInput]) -> ConnectorState:
    """Start polling a configured connector entry from its checkpoint (until stopped or the service restarts
    with it disabled); audited (`connector.start`)."""
    return await _control(call, start=True)


@endpoint(
    "POST",
    "/api/connectors/{name}/stop",
    role="admin",
    summary="Stop a connector",
    response=ConnectorState,
    tags=("connectors",),
)
async def stop_connector(call: Call[NoInput, NoInput]) -> ConnectorState:
    """Stop polling a connector entry once the batch under way has committed; lasts until a start or a restart
    of the service; audited (`connector.stop`)."""
    return await _control(call, start=False)
