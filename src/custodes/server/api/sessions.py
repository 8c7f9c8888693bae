"""Privileged sessions (Teleport, sudo) of an entity: start, end, commands and the recording reference."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import Field

from custodes.connectors.sessions import sessions_from
from custodes.model import utcnow
from custodes.server.api.entities import visible_person
from custodes.server.endpoints import ApiError, Call, IsoDateTime, Model, NoInput, RevealQuery, endpoint
from custodes.store.tables import events

MAX_SESSION_EVENTS = 50_000


class SessionQuery(RevealQuery):
    """The window to look in."""

    since: IsoDateTime | None = Field(default=None, description="default: 7 days before `until`")
    until: IsoDateTime | None = Field(
        default=None, description="default: now (a window ending before it starts is empty)"
    )


class CommandOut(Model):
    """A command run in a session."""

    time: datetime
    command: str
    outcome: str


class SessionOut(Model):
    """One privileged session."""

    kind: str = Field(description="teleport or sudo")
    id: str = Field(description="Teleport's sid, or host:pid of the sudo process")
    user: str | None
    host: str | None
    login: str | None = Field(description="the account used: Teleport login, sudo's run-as user")
    start: datetime | None
    end: datetime | None
    commands: list[CommandOut]
    recording: str | None = Field(description="file://, s3://..., or sudo-io:<TSID>; evidence bundles copy it")


class SessionList(Model):
    """An entity's sessions in the window, by start."""

    entity: str
    sessions: list[SessionOut]


@endpoint(
    "GET",
    "/api/entities/{id}/sessions",
    role="analyst",
    summary="An entity's privileged sessions",
    query=SessionQuery,
    response=SessionList,
    tags=("entities",),
)
async def entity_sessions(call: Call[SessionQuery, NoInput]) -> SessionList:
    """Teleport and sudo sessions built from the entity's stored events (docs/connectors.md)."""
    names = await call.people()
    entity = await visible_person(call, call.request.match_info["id"])
    until = call.query.until or utcnow()
    since = call.query.since or until - timedelta(days=7)
    query = (
        sa.select(events.c.id, events.c.time, events.c.actor, events.c.outcome, events.c.raw)
        .where(events.c.actor == entity, events.c.time >= since, events.c.time <= until)
        .limit(MAX_SESSION_EVENTS + 1)
    )
    async with call.services.store.transaction() as tx:
        rows = [dict(row) for row in (await tx.conn.execute(query)).mappings()]
    if len(rows) > MAX_SESSION_EVENTS:
        raise ApiError(400, "too_large", f"more than {MAX_SESSION_EVENTS} events in the window: narrow it")
    return SessionList(
        entity=names(entity) or entity,
        sessions=[
            SessionOut(
                kind=found.kind,
                id=found.id,
                user=names(found.user),
                host=found.host,
                login=found.login,
                start=found.start,
                end=found.end,
                commands=[CommandOut(time=c.time, command=c.command, outcome=c.outcome) for c in found.commands],
                recording=found.recording,
            )
            for found in sessions_from(rows)
        ],
    )
