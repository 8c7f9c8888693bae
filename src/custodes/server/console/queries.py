"""The console's own read queries, each paged and served by an index: the day's ranking (in review order), a
person's runs and the rules' recent matches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.service import day_score
from custodes.model import Run
from custodes.store.database import Transaction
from custodes.store.tables import findings, runs, scoring_scores


@dataclass(frozen=True, slots=True)
class Ranked:
    """One row of the risk board: a scored entity (as stored: its pseudonym when pseudonymisation is on)."""

    entity: str
    kind: str
    risk: float
    points: float
    reasons: list[str]


async def score_day(tx: Transaction, *, before: date | None = None, after: date | None = None) -> date | None:
    """The newest day with stored scores (before `before`), or the oldest after `after`: one seek in the
    (day, risk) index each."""
    column = scoring_scores.c.day
    if after is not None:
        query = sa.select(sa.func.min(column)).where(column > after)
    else:
        query = sa.select(sa.func.max(column))
        if before is not None:
            query = query.where(column < before)
    found = (await tx.conn.execute(query)).scalar()
    return date.fromisoformat(found) if isinstance(found, str) else found


async def day_closed(tx: Transaction, day: date) -> bool:
    """Whether the day is closed: its scores have places in the engine's review order (one seek in (day, place))."""
    table = scoring_scores
    query = sa.select(table.c.place).where(table.c.day == day, table.c.place.is_not(None)).limit(1)
    return (await tx.conn.execute(query)).first() is not None


def ranking_query(
    day: date, *, closed: bool, limit: int, offset: int, hide: sa.CompoundSelect[Any] | None = None
) -> sa.Select[Any]:
    """The day's scores in the order analysts review them, one page: a closed day in the engine's review order
    (new leads within the review budget first, then by risk; the (day, place) index), an open day by risk, highest
    first (the (day, risk) index); the scan stops after `offset + limit` rows; `hide` selects scored entities to
    leave out."""
    table = scoring_scores
    query = sa.select(table.c.entity, table.c.risk, table.c.points, table.c.detail)
    if hide is not None:
        query = query.where(table.c.entity.not_in(hide))
    order = table.c.place if closed else table.c.risk.desc()
    return query.where(table.c.day == day).order_by(order).limit(limit).offset(offset)


async def ranked(
    tx: Transaction,
    day: date,
    *,
    closed: bool,
    limit: int,
    offset: int = 0,
    reasons: int = 3,
    hide: sa.CompoundSelect[Any] | None = None,
) -> list[Ranked]:
    """One page of the day's ranking, each with its strongest reasons in sentences; `closed` and `hide` as
    `ranking_query`."""
    rows = await tx.conn.execute(ranking_query(day, closed=closed, limit=limit, offset=offset, hide=hide))
    page = []
    for row in rows.mappings():
        score = day_score(dict(row["detail"]))
        page.append(
            Ranked(row["entity"], score.kind, float(row["risk"]), float(row["points"]), sentences(score)[:reasons])
        )
    return page


async def runs_about(tx: Transaction, entity: str, *, limit: int = 20) -> list[Run]:
    """The newest runs about one person (the (entity, status) index)."""
    query = (
        sa.select(runs.c.id).where(runs.c.entity == entity).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
    )
    ids = [row[0] for row in await tx.conn.execute(query)]
    return [run for run in [await tx.get_run(ident) for ident in ids] if run is not None]


@dataclass(frozen=True, slots=True)
class Matches:
    """A rule's findings raised since a time."""

    count: int
    last: datetime


async def rule_matches(tx: Transaction, since: datetime) -> dict[str, Matches]:
    """Findings raised per rule since `since` (a range of the created_at index)."""
    query = (
        sa.select(findings.c.rule_id, sa.func.count(), sa.func.max(findings.c.last_seen))
        .where(findings.c.created_at >= since)
        .group_by(findings.c.rule_id)
    )
    return {rule: Matches(int(count), last) for rule, count, last in await tx.conn.execute(query)}


MATCH_WINDOW = timedelta(days=30)
"""How far back the rules page counts matches."""
