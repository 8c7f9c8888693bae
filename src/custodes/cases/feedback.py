"""Analyst feedback: a verdict on a pattern (a rule id, Sigma or `scoring.*`) for one person, which from then on
suppresses that person's findings of the pattern or lowers their severity, until revoked; or on a cause of a
behaviour score, for the person or everyone of their peer group or department.

Feedback is visible (listed, shown on the finding and the case) and reversible (revoking keeps the record).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from custodes.cases.book import CaseError, aware
from custodes.detections.scoring.baselines import MIN_PEERS
from custodes.detections.scoring.catalog import BY_NAME
from custodes.detections.scoring.feedback import (
    CAUSE,
    DEPARTMENT_SCOPE,
    PEERS_SCOPE,
    PERSON_SCOPE,
    SCOPES,
    CauseFeedback,
    Holder,
    causes_in,
    holder,
)
from custodes.detections.scoring.identity import PERSON, IdentityResolver, Person
from custodes.model import Finding, Severity, utcnow
from custodes.store import Transaction
from custodes.store.cases import feedback

EFFECTS = ("suppress", "downweight")
KINDS = ("rule", CAUSE)
"""What feedback is on: a rule id (Sigma, or `scoring.<reason>`), or a behaviour-scoring cause (a feature)."""
CHUNK = 500
VERDICTS = ("benign", "expected", "false_positive", "malicious", "negligent", "compromised")


async def give(
    tx: Transaction,
    *,
    actor: str,
    entity: str,
    pattern: str,
    verdict: str,
    reason: str,
    effect: str = "suppress",
    weight: float = 0.0,
    case_id: str | None = None,
    finding_id: str | None = None,
    kind: str = "rule",
    scope: str = PERSON_SCOPE,
    scope_name: str | None = None,
) -> dict[str, Any]:
    """Record feedback (audited `feedback.give`) on a rule (`kind` rule: `weight`, 0 to 1, scales the findings'
    severity when the effect is downweight) or on a scoring cause (`kind` cause, `pattern` a feature: it scales
    the cause's points in the day scores of the person, or with `scope` peers or department of everyone in the
    group `scope_name`, as `scope_of` names it)."""
    if kind not in KINDS:
        raise CaseError(f"kind: {kind!r} is not one of {', '.join(KINDS)}", field="kind")
    _check_scope(kind, scope)
    if scope != PERSON_SCOPE and not scope_name:
        raise CaseError("scope: name the peer group or department (scope_of)", field="scope")
    if kind == CAUSE and pattern not in BY_NAME:
        raise CaseError(
            f"cause: {pattern!r} is not a scoring feature (one of {', '.join(sorted(BY_NAME))})",
            field="cause",
        )
    if effect not in EFFECTS:
        raise CaseError(f"effect: {effect!r} is not one of {', '.join(EFFECTS)}", field="effect")
    if verdict not in VERDICTS:
        raise CaseError(f"verdict: {verdict!r} is not one of {', '.join(VERDICTS)}", field="verdict")
    if not 0.0 <= weight < 1.0:
        raise CaseError("weight: must be at least 0 and less than 1", field="weight")
    if not reason.strip():
        raise CaseError("reason: say why (e.g. 'benign: handover before leaving')", field="reason")
    row: dict[str, Any] = {
        "id": "fb-" + uuid.uuid4().hex[:16],
        "entity": entity,
        "pattern_kind": kind,
        "pattern": pattern,
        "scope": scope,
        "scope_name": scope_name if scope != PERSON_SCOPE else None,
        "verdict": verdict,
        "effect": effect,
        "weight": weight if effect == "downweight" else 0.0,
        "reason": reason.strip(),
        "case_id": case_id,
        "finding_id": finding_id,
        "created_by": actor,
        "created_at": utcnow(),
        "revoked_by": None,
        "revoked_at": None,
    }
    await tx.conn.execute(sa.insert(feedback), [row])
    details = {
        k: row[k]
        for k in (
            "entity",
            "pattern_kind",
            "pattern",
            "scope",
            "scope_name",
            "verdict",
            "effect",
            "weight",
            "reason",
            "case_id",
        )
    }
    await tx.audit(actor, "feedback.give", str(row["id"]), details)
    return row


def pattern_of(finding: Finding, cause: str | None) -> tuple[str, str]:
    """What feedback on `finding` is about, (kind, pattern): its rule, or with `cause` one of the causes of a
    behaviour-scoring finding (its tags name them `cause.<feature>`)."""
    if cause is None:
        return "rule", finding.rule_id
    found = causes_in(finding.tags)
    if cause not in found:
        has = (
            f"its causes are {', '.join(sorted(found))}"
            if found
            else "it is not a behaviour-scoring finding with causes"
        )
        raise CaseError(f"cause: {cause!r} is not a cause of {finding.id} ({has})", field="cause")
    return CAUSE, cause


def scope_of(resolver: IdentityResolver | None, entity: str, kind: str, scope: str) -> str | None:
    """The name of the group feedback of `kind` with `scope` on the person `entity` covers (None for the person
    alone): their peer group (department/title) or department, as the directory (`resolver`) has them. Only feedback
    on a cause covers a group, and a group of fewer than `MIN_PEERS` people is refused: its feedback would single
    someone out, and peer statistics do not stand on it either."""
    _check_scope(kind, scope)
    if scope == PERSON_SCOPE:
        return None
    name = None if resolver is None else groups_of(resolver, entity).get(scope)
    part = "department and title" if scope == PEERS_SCOPE else "department"
    if resolver is None or name is None:
        raise CaseError(
            f"scope: the directory has no {part} for this person; give the feedback on the person instead",
            field="scope",
        )
    size = sum(p.kind == PERSON and _groups(p).get(scope) == name for p in resolver.people.values())
    if size < MIN_PEERS:
        raise CaseError(
            f"scope: their {part} counts {size} people in the directory, fewer than {MIN_PEERS}; give the feedback "
            "on the person instead",
            field="scope",
        )
    return name


def _check_scope(kind: str, scope: str) -> None:
    """Refuse a scope that is none, or a group for feedback on a rule (rule feedback is per person)."""
    if scope not in SCOPES:
        raise CaseError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}", field="scope")
    if scope != PERSON_SCOPE and kind != CAUSE:
        raise CaseError(
            "scope: feedback on a rule is for its person; a peer group or department takes feedback on a cause",
            field="scope",
        )


def groups_of(resolver: IdentityResolver, entity: str) -> dict[str, str]:
    """The groups of the person `entity` (by key, a scoring finding's, else by name, a Sigma finding's) feedback can
    be given on, by scope: none outside the directory."""
    person = resolver.person(entity) or resolver.person(resolver.resolve(entity)[0])
    return {} if person is None else _groups(person)


def _groups(person: Person) -> dict[str, str]:
    """A directory entry's department, and its peer group when it has a title too."""
    if not person.department:
        return {}
    found = {DEPARTMENT_SCOPE: person.department}
    if person.title:
        found[PEERS_SCOPE] = person.peer_group
    return found


def concerns(row: Mapping[str, Any], finding: Finding) -> bool:
    """Whether a feedback record about the finding's person is on its rule, or on one of its causes."""
    if row["pattern_kind"] == CAUSE:
        return row["pattern"] in causes_in(finding.tags)
    return bool(row["pattern"] == finding.rule_id)


async def revoke(tx: Transaction, feedback_id: str, actor: str) -> dict[str, Any]:
    """Revoke feedback (audited `feedback.revoke`): the pattern counts again from now on."""
    row = await get(tx, feedback_id)
    if row is None:
        raise CaseError(f"no feedback {feedback_id!r}", code="not_found")
    if row["revoked_at"] is not None:
        raise CaseError(f"feedback {feedback_id} was already revoked", code="conflict")
    now = utcnow()
    await tx.conn.execute(
        sa.update(feedback).where(feedback.c.id == feedback_id).values(revoked_by=actor, revoked_at=now)
    )
    await tx.audit(actor, "feedback.revoke", feedback_id, {"entity": row["entity"], "pattern": row["pattern"]})
    return {**row, "revoked_by": actor, "revoked_at": now}


async def get(tx: Transaction, feedback_id: str) -> dict[str, Any] | None:
    """One feedback record, or None."""
    row = (await tx.conn.execute(sa.select(feedback).where(feedback.c.id == feedback_id))).mappings().first()
    return None if row is None else aware(row)


async def listing(
    tx: Transaction,
    *,
    entity: str | None = None,
    case_id: str | None = None,
    finding_id: str | None = None,
    active: bool | None = None,
    limit: int = 200,
    hide: sa.Select[Any] | None = None,
    groups: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Feedback records, newest first, filtered; about `entity`, also the feedback on its `groups` (by scope, as
    `groups_of` gives them); `hide` selects people whose feedback to leave out."""
    query = sa.select(feedback).order_by(feedback.c.created_at.desc(), feedback.c.id).limit(limit)
    if hide is not None:
        query = query.where(feedback.c.entity.not_in(hide))
    if entity is not None:
        covered = [feedback.c.entity == entity]
        for scope, name in (groups or {}).items():
            covered.append(sa.and_(feedback.c.scope == scope, feedback.c.scope_name == name))
        query = query.where(sa.or_(*covered))
    for column, value in (
        (feedback.c.case_id, case_id),
        (feedback.c.finding_id, finding_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if active is not None:
        query = query.where(feedback.c.revoked_at.is_(None) if active else feedback.c.revoked_at.is_not(None))
    return [aware(row) for row in (await tx.conn.execute(query)).mappings()]


def governing(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Of the active feedback on one pattern for one person, the one that counts: suppress wins, then the lowest
    weight."""
    return min(rows, key=lambda r: (r["effect"] != "suppress", r["weight"])) if rows else None


async def active_for(tx: Transaction, entities: Iterable[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Active rule feedback about these people, by (entity, rule)."""
    wanted = sorted(set(entities))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for start in range(0, len(wanted), CHUNK):
        query = sa.select(feedback).where(
            feedback.c.entity.in_(wanted[start : start + CHUNK]),
            feedback.c.pattern_kind == "rule",
            feedback.c.revoked_at.is_(None),
        )
        for row in (await tx.conn.execute(query)).mappings():
            found.setdefault((row["entity"], row["pattern"]), []).append(dict(row))
    return found


async def causes(tx: Transaction) -> dict[Holder, list[CauseFeedback]]:
    """Every feedback on scoring causes, in force or revoked (a re-score of the days it covered applies it), by
    whom it covers (`custodes.detections.scoring.feedback.holder`)."""
    query = sa.select(feedback).where(feedback.c.pattern_kind == CAUSE).order_by(feedback.c.created_at, feedback.c.id)
    found: dict[Holder, list[CauseFeedback]] = {}
    for row in (await tx.conn.execute(query)).mappings():
        given = aware(row)
        factor = 0.0 if given["effect"] == "suppress" else float(given["weight"])
        item = CauseFeedback(given["id"], given["pattern"], factor, given["created_at"], given["revoked_at"])
        found.setdefault(holder(given["scope"], given["entity"], given["scope_name"]), []).append(item)
    return found


async def apply(tx: Transaction, candidates: Sequence[Finding]) -> tuple[list[Finding], int]:
    """The candidates as feedback leaves them: suppressed ones dropped, down-weighted ones at a lower severity
    (tagged `feedback.<id>`); with how many were suppressed. One query per batch."""
    active = await active_for(tx, (c.entity for c in candidates if c.entity is not None))
    if not active:
        return list(candidates), 0
    kept: list[Finding] = []
    suppressed = 0
    for candidate in candidates:
        rule = governing(active.get((candidate.entity or "", candidate.rule_id), []))
        if rule is None:
            kept.append(candidate)
        elif rule["effect"] == "suppress":
            suppressed += 1
        else:
            lowered = Severity(int(int(candidate.severity) * float(rule["weight"])))
            kept.append(replace(candidate, severity=lowered, tags=[*candidate.tags, f"feedback.{rule['id']}"]))
    return kept, suppressed
