"""Need to know beyond the case itself: the findings, runs and evidence bundles a restricted case groups, and the
person it is about (their timeline, risk and place on the risk board), are hidden from principals not on its
access list.

Each check is one query, used as a subquery by the lists so that hiding costs no query per row: it starts from the
access lists (`case_access`, whose rows belong to restricted cases) and follows primary keys to `cases` and
`case_members (case_id, kind, ref)`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from custodes.store import Transaction
from custodes.store.cases import case_access, case_members, cases
from custodes.store.tables import entities


def closed_to(principal: str) -> sa.Select[Any]:
    """The ids of restricted cases whose access list does not name `principal`. Driven from the access lists
    (every restricted case has one: escalating puts the escalator on it), so it reads the restricted cases' rows,
    not the whole case table."""
    mine = sa.select(case_access.c.case_id).where(case_access.c.principal == principal)
    return (
        sa.select(case_access.c.case_id)
        .join(cases, cases.c.id == case_access.c.case_id)
        .where(cases.c.restricted.is_(True), case_access.c.case_id.not_in(mine))
    )


def hidden(kind: str, principal: str) -> sa.Select[Any]:
    """The refs of `kind` (finding, run, evidence, score) grouped by a restricted case `principal` is not on."""
    return sa.select(case_members.c.ref).where(
        case_members.c.kind == kind, case_members.c.case_id.in_(closed_to(principal))
    )


def hidden_people(principal: str) -> sa.Select[Any]:
    """The people (stored names) restricted cases `principal` is not on are about."""
    return sa.select(cases.c.subject).where(cases.c.subject.is_not(None), cases.c.id.in_(closed_to(principal)))


def hidden_keys(principal: str) -> sa.CompoundSelect[Any]:
    """`hidden_people` and their pseudonyms (what day scores are keyed by when pseudonymising)."""
    people = hidden_people(principal)
    aliases = sa.select(entities.c.pseudonym).where(entities.c.id.in_(people), entities.c.pseudonym.is_not(None))
    return sa.union_all(people, aliases)


async def conceals(tx: Transaction, kind: str, ref: str, principal: str) -> bool:
    """Whether a restricted case `principal` is not on groups this item."""
    query = hidden(kind, principal).where(case_members.c.ref == ref).limit(1)
    return (await tx.conn.execute(query)).first() is not None


async def conceals_person(tx: Transaction, subject: str, principal: str) -> bool:
    """Whether `subject` is the person of a restricted case `principal` is not on."""
    query = hidden_people(principal).where(cases.c.subject == subject).limit(1)
    return (await tx.conn.execute(query)).first() is not None
