"""Entities: who Custodes has seen, and each one's timeline of events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from custodes.cases import needtoknow
from custodes.server.endpoints import ApiError, Call, IsoDateTime, Model, NoInput, RevealQuery, endpoint


class EntityOut(Model):
    """A person or service account and when it was seen."""

    id: str
    kind: str
    first_seen: datetime
    last_seen: datetime


class EntityList(Model):
    """Entities, most recently seen first."""

    entities: list[EntityOut]


class EntityQuery(RevealQuery):
    """How many entities to list."""

    limit: int = Field(default=100, ge=1, le=1000)


class TimelineEvent(Model):
    """One event of a timeline: the envelope and the raw vendor record. Without revealed names, the target and the
    source address (which identify people too) are pseudonyms."""

    id: str
    time: datetime
    source: str
    action: str | None
    target: str | None
    outcome: str
    src_ip: str | None
    raw: dict[str, Any] | None = Field(description="the vendor record; only when names are revealed (it names people)")


class Timeline(Model):
    """An entity's events, newest first."""

    entity: str
    events: list[TimelineEvent]


class TimelineQuery(RevealQuery):
    """Paging of a timeline."""

    limit: int = Field(default=100, ge=1, le=1000)
    before: IsoDateTime | None = Field(default=None, description="only events before this time")


@endpoint(
    "GET",
    "/api/entities",
    role="viewer",
    summary="List entities",
    query=EntityQuery,
    response=EntityList,
    tags=("entities",),
)
async def list_entities(call: Call[EntityQuery, NoInput]) -> EntityList:
    """Most recently seen first (without the people of restricted cases the caller is not on)."""
    names = await call.people()
    async with call.services.store.transaction() as tx:
        rows = await tx.list_entities(limit=call.query.limit, hide=needtoknow.hidden_people(call.caller))
    return EntityList(
        entities=[
            EntityOut(
                id=names(row["id"]) or "", kind=row["kind"], first_seen=row["first_seen"], last_seen=row["last_seen"]
            )
            for row in rows
        ]
    )


async def visible_person(call: Call[Any, Any], asked: str) -> str:
    """The stored name of the person a request names, 404 when a restricted case the caller is not on is about
    them (as for a person never seen)."""
    entity = await call.person(asked)
    async with call.services.store.transaction() as tx:
        hidden = await needtoknow.conceals_person(tx, entity, call.caller)
    if hidden:
        raise ApiError(404, "not_found", f"no entity {asked!r} you may see")
    return entity


@endpoint(
    "GET",
    "/api/entities/{id}/timeline",
    role="viewer",
    summary="An entity's timeline",
    query=TimelineQuery,
    response=Timeline,
    tags=("entities",),
)
async def entity_timeline(call: Call[TimelineQuery, NoInput]) -> Timeline:
    """The entity's events, newest first."""
    names = await call.people()
    revealed = names("probe") == "probe"  # names pass unchanged only when this call reveals them
    entity = await visible_person(call, call.request.match_info["id"])
    async with call.services.store.transaction() as tx:
        found = await tx.events_for_actor(entity, limit=call.query.limit, before=call.query.before)
    return Timeline(
        entity=names(entity) or entity,
        events=[
            TimelineEvent(
                id=e.id,
                time=e.time,
                source=e.source,
                action=e.action,
                target=names(e.target),
                outcome=e.outcome.value,
                src_ip=names(e.src_ip),
                raw=e.raw if revealed else None,
            )
            for e in found
        ],
    )
