"""The case book: open, read, list, change and close cases in the store, each change on the case's timeline and in
the audit log, in the caller's transaction.

Need to know: a restricted case (escalated to HR or legal) is seen only by the principals on its access list;
`visible` decides, and the lists leave the others' cases out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from custodes.config import CaseSettings
from custodes.model import utcnow
from custodes.store import Transaction
from custodes.store.cases import (
    CASE_STATUSES,
    DISPOSITIONS,
    MEMBER_KINDS,
    PRIORITIES,
    case_access,
    case_comments,
    case_events,
    case_members,
    cases,
)
from custodes.store.tables import evidence_bundles, scoring_scores

ESCALATED = ("escalated_hr", "escalated_legal")
MAX_COMMENT = 20_000


class CaseError(Exception):
    """A case change that cannot be made; `code` says why (`not_found`, `invalid`, `conflict`)."""

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class Change:
    """What a case change did: the case after it, and the fields it changed (name -> (before, after))."""

    case: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]


def aware(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored row as a dict, its timestamps in UTC (SQLite hands them back without a zone)."""
    return {
        str(key): value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


def new_case_id() -> str:
    """A fresh case id."""
    return "case-" + uuid.uuid4().hex[:16]


def due_at(settings: CaseSettings, priority: str, opened: datetime) -> datetime | None:
    """When a case of `priority` opened at `opened` is due for triage (None without an SLA for it)."""
    hours = next((h for name, h in settings.sla_hours.items() if name == priority), None)
    return None if hours is None else opened + timedelta(hours=float(hours))


def _check(value: str | None, allowed: tuple[str, ...], field: str) -> None:
    if value is not None and value not in allowed:
        raise CaseError(f"{field}: {value!r} is not one of {', '.join(allowed)}", field=field)


async def record(tx: Transaction, case_id: str, actor: str, kind: str, details: Mapping[str, Any]) -> None:
    """Add an entry to a case's timeline and the audit log (`case.<kind>`)."""
    await tx.conn.execute(
        sa.insert(case_events),
        [{"case_id": case_id, "at": utcnow(), "actor": actor, "kind": kind, "details": dict(details)}],
    )
    await tx.audit(actor, f"case.{kind}", case_id, dict(details))


async def reveal(tx: Transaction, case_id: str, actor: str, reason: str, *, view: str | None = None) -> bool:
    """Record on a case's timeline that `actor` saw it with real names, for `reason` (`revealed`). A `view` names
    one reveal action that spans several reads (a console session): it is recorded once per view and reason.
    Return whether an entry was added."""
    details = {"reason": reason} if view is None else {"reason": reason, "view": view}
    if view is not None:
        seen = [(e["actor"], e["details"]) for e in await timeline(tx, case_id) if e["kind"] == "revealed"]
        if (actor, details) in seen:
            return False
    await record(tx, case_id, actor, "revealed", details)
    return True


async def open_case(
    tx: Transaction,
    settings: CaseSettings,
    *,
    actor: str,
    title: str,
    subject: str | None,
    priority: str = "medium",
    assignee: str | None = None,
    members: Iterable[tuple[str, str]] = (),
    case_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Open a case (status new, due by the SLA of its priority) with its first members."""
    _check(priority, PRIORITIES, "priority")
    if not title.strip():
        raise CaseError("title: must not be empty", field="title")
    now = utcnow()
    ident = case_id or new_case_id()
    row: dict[str, Any] = {
        "id": ident,
        "subject": subject,
        "title": title.strip(),
        "status": "new",
        "disposition": None,
        "assignee": assignee,
        "priority": priority,
        "due_at": due_at(settings, priority, now),
        "opened_by": actor,
        "opened_at": now,
        "first_triaged_at": None,
        "closed_at": None,
        "updated_at": now,
        "restricted": False,
        "legal_hold": False,
    }
    await tx.conn.execute(sa.insert(cases), [row])
    await record(tx, ident, actor, "opened", {"priority": priority, "run": run_id})
    for kind, ref in members:
        await link(tx, ident, actor, kind, ref)
    return row


async def get_case(tx: Transaction, case_id: str) -> dict[str, Any] | None:
    """A case's row, or None."""
    row = (await tx.conn.execute(sa.select(cases).where(cases.c.id == case_id))).mappings().first()
    return None if row is None else aware(row)


async def open_case_for(tx: Transaction, subject: str) -> dict[str, Any] | None:
    """The most recently opened case about `subject` that is not closed, or None."""
    query = (
        sa.select(cases)
        .where(cases.c.subject == subject, cases.c.status != "closed")
        .order_by(cases.c.opened_at.desc())
        .limit(1)
    )
    row = (await tx.conn.execute(query)).mappings().first()
    return None if row is None else aware(row)


async def cases_with(tx: Transaction, kind: str, ref: str) -> list[dict[str, Any]]:
    """The cases a finding, run, bundle or score belongs to."""
    query = sa.select(cases).join(case_members, case_members.c.case_id == cases.c.id)
    query = query.where(case_members.c.kind == kind, case_members.c.ref == ref).order_by(cases.c.opened_at)
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


async def access_list(tx: Transaction, case_id: str) -> list[str]:
    """The principals a restricted case is open to, sorted."""
    query = sa.select(case_access.c.principal).where(case_access.c.case_id == case_id).order_by(case_access.c.principal)
    return [str(name) for name in (await tx.conn.execute(query)).scalars()]


async def visible(tx: Transaction, case: Mapping[str, Any], principal: str) -> bool:
    """Whether `principal` may see the case: any case not restricted, a restricted one only from its access list."""
    if not case["restricted"]:
        return True
    query = sa.select(case_access.c.principal).where(
        case_access.c.case_id == case["id"], case_access.c.principal == principal
    )
    return (await tx.conn.execute(query)).first() is not None


async def list_cases(
    tx: Transaction,
    *,
    principal: str,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    status: str | None = None,
    subject: str | None = None,
    assignee: str | None = None,
    priority: str | None = None,
    include_restricted: bool = False,
) -> list[dict[str, Any]]:
    """Cases `principal` may see (every case with `include_restricted`, for the system's own actions), newest
    first, filtered; `before` (opened_at, id) pages on."""
    query = sa.select(cases)
    if not include_restricted:
        allowed = sa.select(case_access.c.case_id).where(case_access.c.principal == principal)
        query = query.where(sa.or_(cases.c.restricted.is_(False), cases.c.id.in_(allowed)))
    for column, value in ((cases.c.status, status), (cases.c.subject, subject), (cases.c.assignee, assignee)):
        if value is not None:
            query = query.where(column == value)
    if priority is not None:
        query = query.where(cases.c.priority == priority)
    if before is not None:
        at, ident = before
        query = query.where(sa.or_(cases.c.opened_at < at, sa.and_(cases.c.opened_at == at, cases.c.id < ident)))
    query = query.order_by(cases.c.opened_at.desc(), cases.c.id.desc()).limit(limit)
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


async def timeline(tx: Transaction, case_id: str) -> list[dict[str, Any]]:
    """A case's timeline, oldest first."""
    query = sa.select(case_events).where(case_events.c.case_id == case_id).order_by(case_events.c.seq)
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


async def members(tx: Transaction, case_id: str) -> list[dict[str, Any]]:
    """What a case groups, in the order it was linked."""
    query = sa.select(case_members).where(case_members.c.case_id == case_id)
    query = query.order_by(case_members.c.added_at, case_members.c.kind, case_members.c.ref)
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


async def comments(tx: Transaction, case_id: str) -> list[dict[str, Any]]:
    """A case's comments, oldest first."""
    query = sa.select(case_comments).where(case_comments.c.case_id == case_id)
    query = query.order_by(case_comments.c.created_at, case_comments.c.id)
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


async def member_exists(tx: Transaction, kind: str, ref: str) -> bool:
    """Whether the finding, run, evidence bundle or day score (`<scored entity>@<YYYY-MM-DD>`, the entity as
    scoring keys it: its pseudonym when pseudonymising) a member names is stored."""
    _check(kind, MEMBER_KINDS, "kind")
    if kind == "finding":
        return await tx.get_finding(ref) is not None
    if kind == "run":
        return await tx.get_run(ref) is not None
    if kind == "evidence":
        found = await tx.conn.execute(sa.select(evidence_bundles.c.id).where(evidence_bundles.c.id == ref))
        return found.first() is not None
    entity, _, day = ref.rpartition("@")
    try:
        scored = date.fromisoformat(day)
    except ValueError:
        return False
    query = sa.select(scoring_scores.c.risk).where(scoring_scores.c.entity == entity, scoring_scores.c.day == scored)
    return (await tx.conn.execute(query)).first() is not None


async def link(tx: Transaction, case_id: str, actor: str, kind: str, ref: str, *, run_id: str | None = None) -> bool:
    """Add a member to a case; False when it already was one."""
    _check(kind, MEMBER_KINDS, "kind")
    if not ref.strip():
        raise CaseError("ref: must not be empty", field="ref")
    exists = sa.select(case_members.c.ref).where(
        case_members.c.case_id == case_id, case_members.c.kind == kind, case_members.c.ref == ref
    )
    if (await tx.conn.execute(exists)).first() is not None:
        return False
    row = {"case_id": case_id, "kind": kind, "ref": ref, "added_by": actor, "added_at": utcnow()}
    await tx.conn.execute(sa.insert(case_members), [row])
    await record(tx, case_id, actor, "linked", {"kind": kind, "ref": ref, "run": run_id})
    return True


async def unlink(tx: Transaction, case_id: str, actor: str, kind: str, ref: str, *, reason: str = "") -> bool:
    """Remove a member from a case; False when it was not one."""
    _check(kind, MEMBER_KINDS, "kind")
    result = await tx.conn.execute(
        sa.delete(case_members).where(
            case_members.c.case_id == case_id, case_members.c.kind == kind, case_members.c.ref == ref
        )
    )
    if not result.rowcount:
        return False
    await record(tx, case_id, actor, "unlinked", {"kind": kind, "ref": ref, "reason": reason})
    return True


async def comment(tx: Transaction, case_id: str, actor: str, text: str) -> dict[str, Any]:
    """Add a comment to a case."""
    text = text.strip()
    if not text:
        raise CaseError("text: must not be empty", field="text")
    if len(text) > MAX_COMMENT:
        raise CaseError(f"text: a comment is at most {MAX_COMMENT} characters", field="text")
    row = {"id": uuid.uuid4().hex, "case_id": case_id, "author": actor, "text": text, "created_at": utcnow()}
    await tx.conn.execute(sa.insert(case_comments), [row])
    await record(tx, case_id, actor, "commented", {"comment": row["id"]})
    return row


async def grant(tx: Transaction, case_id: str, actor: str, principals: Iterable[str]) -> list[str]:
    """Put principals on a case's access list; return those newly added."""
    known = set(await access_list(tx, case_id))
    added = sorted({p.strip() for p in principals if p.strip()} - known)
    if added:
        now = utcnow()
        rows = [{"case_id": case_id, "principal": p, "granted_by": actor, "granted_at": now} for p in added]
        await tx.conn.execute(sa.insert(case_access), rows)
        await record(tx, case_id, actor, "access_granted", {"principals": added})
    return added


async def grant_access(tx: Transaction, case_id: str, actor: str, principals: Iterable[str], reason: str) -> list[str]:
    """An admin puts people on any case's access list, even one they cannot see; audited `case.access` with the
    reason. Return those newly added."""
    if not reason.strip():
        raise CaseError("reason: granting access needs one", field="reason")
    if await get_case(tx, case_id) is None:
        raise CaseError(f"no case {case_id!r}", code="not_found")
    added = await grant(tx, case_id, actor, principals)
    await tx.audit(actor, "case.access", case_id, {"added": added, "reason": reason.strip()})
    return added


async def update(
    tx: Transaction,
    settings: CaseSettings,
    case_id: str,
    actor: str,
    *,
    status: str | None = None,
    assignee: str | None = None,
    priority: str | None = None,
    disposition: str | None = None,
    need_to_know: Iterable[str] = (),
    reason: str = "",
    run_id: str | None = None,
    revert_of: int | None = None,
) -> Change:
    """Change a case's status, assignee, priority or disposition (timeline + audit).

    The first move out of `new` stamps `first_triaged_at`; `closed` needs a disposition and stamps `closed_at`;
    escalating to HR or legal restricts the case to `need_to_know` and the actor, and places a legal hold on it.
    A changed priority moves an untriaged case's due time to the new SLA.
    """
    _check(status, CASE_STATUSES, "status")
    _check(priority, PRIORITIES, "priority")
    _check(disposition, DISPOSITIONS, "disposition")
    case = await get_case(tx, case_id)
    if case is None:
        raise CaseError(f"no case {case_id!r}", code="not_found")
    if status == "closed" and disposition is None and case["disposition"] is None:
        raise CaseError("disposition: closing a case needs one of " + ", ".join(DISPOSITIONS), field="disposition")
    if disposition is not None and status not in (None, "closed"):
        raise CaseError("disposition: only a closed case has a disposition", field="disposition")
    if disposition is not None and status is None and case["status"] != "closed":
        status = "closed"
    wanted = {"status": status, "assignee": assignee, "priority": priority, "disposition": disposition}
    changed: dict[str, tuple[Any, Any]] = {k: (case[k], v) for k, v in wanted.items() if v is not None and case[k] != v}
    now = utcnow()
    values: dict[str, Any] = {k: after for k, (_, after) in changed.items()}
    if "status" in changed:
        if case["first_triaged_at"] is None and status != "new":
            values["first_triaged_at"] = now
        if status == "closed":
            values["closed_at"] = now
        elif case["status"] == "closed":
            values["closed_at"] = None
            values["disposition"] = None
            if case["disposition"] is not None:
                changed["disposition"] = (case["disposition"], None)
    if "priority" in changed and case["first_triaged_at"] is None:
        values["due_at"] = due_at(settings, str(priority), case["opened_at"])
    if status in ESCALATED:
        for flag in ("restricted", "legal_hold"):
            if not case[flag]:
                values[flag] = True
                changed[flag] = (False, True)
    if not values:
        return Change(case, {})
    values["updated_at"] = now
    await tx.conn.execute(sa.update(cases).where(cases.c.id == case_id).values(**values))
    details: dict[str, Any] = {name: {"from": before, "to": after} for name, (before, after) in changed.items()}
    kind = "closed" if status == "closed" and "status" in changed else "updated"
    extra = {} if revert_of is None else {"revert_of": revert_of}
    await record(tx, case_id, actor, kind, {**details, "reason": reason, "run": run_id, **extra})
    if status in ESCALATED:
        await grant(tx, case_id, actor, [*need_to_know, principal_of(actor)])
        if not case["legal_hold"]:
            await record(tx, case_id, actor, "legal_hold", {"placed": True, "reason": reason or str(status)})
    return Change({**case, **values}, changed)


async def withdraw(tx: Transaction, case_id: str, actor: str, *, run_id: str | None) -> None:
    """Close a case without a disposition: it was opened in error (the undo of the run that opened it)."""
    now = utcnow()
    await tx.conn.execute(
        sa.update(cases).where(cases.c.id == case_id).values(status="closed", closed_at=now, updated_at=now)
    )
    await record(tx, case_id, actor, "withdrawn", {"run": run_id})


def principal_of(actor: str) -> str:
    """The access-list name of an actor: the token name of `api:<name>` or `cli:<name>`."""
    return actor.removeprefix("api:").removeprefix("cli:")


async def unrestrict(tx: Transaction, case_id: str, actor: str, reason: str) -> None:
    """Open a restricted case to every viewer again (the undo of the escalation that restricted it); timeline
    `unrestricted`, audit `case.unrestricted`. Its access list is kept."""
    await tx.conn.execute(sa.update(cases).where(cases.c.id == case_id).values(restricted=False, updated_at=utcnow()))
    await record(tx, case_id, actor, "unrestricted", {"reason": reason})


def liftable(case: Mapping[str, Any] | None, case_id: str, reason: str) -> None:
    """CaseError unless the case exists, is under legal hold and a reason is given."""
    if case is None:
        raise CaseError(f"no case {case_id!r}", code="not_found")
    if not case["legal_hold"]:
        raise CaseError(f"case {case_id} is not under legal hold", code="conflict")
    if not reason.strip():
        raise CaseError("reason: lifting a legal hold needs one", field="reason")


async def lift_hold(tx: Transaction, case_id: str, actor: str, reason: str) -> None:
    """Lift a case's legal hold (its restriction stays): timeline `hold_lifted` and audit `case.hold_lifted`."""
    liftable(await get_case(tx, case_id), case_id, reason)
    await tx.conn.execute(sa.update(cases).where(cases.c.id == case_id).values(legal_hold=False, updated_at=utcnow()))
    await record(tx, case_id, actor, "hold_lifted", {"reason": reason.strip()})


async def held_bundles(tx: Transaction) -> dict[str, list[str]]:
    """Evidence bundles under legal hold: bundle id -> the cases holding it."""
    query = (
        sa.select(case_members.c.ref, cases.c.id)
        .join(cases, cases.c.id == case_members.c.case_id)
        .where(case_members.c.kind == "evidence", cases.c.legal_hold.is_(True))
    )
    held: dict[str, list[str]] = {}
    for ref, case_id in (await tx.conn.execute(query)).all():
        held.setdefault(str(ref), []).append(str(case_id))
    return held
