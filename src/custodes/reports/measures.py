"""The evidence measures: numbers read from the store for a period, one function per measure.

Each measure answers a flat mapping of figure name -> number (int, float, bool, None when undefined) or a mapping of
label -> count. The period is half-open: [start, end). docs/compliance.md says how each figure is computed."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from custodes.config import Settings
from custodes.model import Severity
from custodes.store import Store
from custodes.store.cases import case_members, cases
from custodes.store.tables import audit_log, events, findings, identity_accounts, identity_grants, runs, steps

Value = int | float | bool | str | dict[str, int] | None
Figures = dict[str, Value]
REVIEW_FIGURES = ("dormant", "privileged_without_mfa", "unused_access", "sod_conflicts")
"""The counts an `access.review` audit entry carries (custodes.inventory.review.Review.figures)."""


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open period [start, end) a report covers, both in UTC, and the time the report is made."""

    start: datetime
    end: datetime
    as_of: datetime

    def holds(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        """The SQL condition that a timestamp column falls in the period."""
        return sa.and_(column >= self.start, column < self.end)

    @property
    def cutoff(self) -> datetime:
        """The end of the period, or the report's time when the period runs on past it."""
        return min(self.end, self.as_of)


@dataclass(frozen=True, slots=True)
class Source:
    """What a measure reads: the store and the settings (audit key, checkpoints)."""

    store: Store
    settings: Settings


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _counts(values: Iterable[str | None], weights: Iterable[int] | None = None) -> dict[str, int]:
    counter: Counter[str] = Counter()
    for value, weight in zip(values, weights or iter(lambda: 1, None), strict=False):
        counter[value or "none"] += weight
    return dict(sorted(counter.items()))


async def _rows(source: Source, query: sa.Select[Any]) -> list[sa.RowMapping]:
    async with source.store.transaction() as tx:
        return list((await tx.conn.execute(query)).mappings())


async def access_reviews(source: Source, period: Period) -> Figures:
    """Access reviews run in the period (`access.review` audit entries) and what they found, summed."""
    query = sa.select(audit_log.c.at, audit_log.c.details).where(
        audit_log.c.action == "access.review", period.holds(audit_log.c.at)
    )
    rows = await _rows(source, query.order_by(audit_log.c.seq))
    figures: Figures = {"reviews": len(rows)}
    for name in REVIEW_FIGURES:
        figures[name] = sum(int(dict(row["details"]).get(name, 0)) for row in rows)
    figures["last_review_at"] = _utc(rows[-1]["at"]).isoformat() if rows else None
    return figures


async def privileged_monitoring(source: Source, period: Period) -> Figures:
    """Enabled inventory accounts holding a privileged grant, and how many of their people had activity in the
    period (an event whose actor is the person's entity id or one of those accounts' logins)."""
    query = (
        sa.select(identity_accounts.c.id, identity_accounts.c.entity, identity_accounts.c.login)
        .where(
            identity_accounts.c.enabled.is_(True),
            sa.exists().where(
                identity_grants.c.account_id == identity_accounts.c.id, identity_grants.c.privileged.is_(True)
            ),
        )
        .order_by(identity_accounts.c.id)
    )
    accounts = await _rows(source, query)
    names: dict[str, str] = {}
    for row in accounts:
        names[row["entity"]] = row["entity"]
        if row["login"]:
            names[row["login"]] = row["entity"]
    seen: set[str] = set()
    keys = sorted(names)
    for first in range(0, len(keys), 500):
        chunk = keys[first : first + 500]
        active = sa.select(events.c.actor).where(events.c.actor.in_(chunk), period.holds(events.c.time)).distinct()
        seen.update(names[row["actor"]] for row in await _rows(source, active))
    people = {row["entity"] for row in accounts}
    return {
        "privileged_accounts": len(accounts),
        "privileged_people": len(people),
        "monitored_people": len(seen),
        "unmonitored_people": len(people - seen),
        "coverage_percent": round(100 * len(seen) / len(people), 1) if people else None,
    }


async def alerts(source: Source, period: Period) -> Figures:
    """Findings raised in the period, by severity and status; investigated: acknowledged, closed or in a case."""
    linked = sa.select(case_members.c.ref).where(case_members.c.kind == "finding").distinct().subquery()
    in_case = sa.case((linked.c.ref.is_not(None), 1), else_=0).label("in_case")
    query = (
        sa.select(findings.c.severity, findings.c.status, in_case, sa.func.count().label("n"))
        .select_from(findings.outerjoin(linked, linked.c.ref == findings.c.id))
        .where(period.holds(findings.c.created_at))
        .group_by(findings.c.severity, findings.c.status, in_case)
    )
    rows = await _rows(source, query)
    weights = [int(row["n"]) for row in rows]
    return {
        "findings": sum(weights),
        "by_severity": _counts((Severity(int(row["severity"])).label for row in rows), weights),
        "by_status": _counts((row["status"] for row in rows), weights),
        "in_a_case": sum(int(row["n"]) for row in rows if row["in_case"]),
        "investigated": sum(int(row["n"]) for row in rows if row["status"] != "open" or row["in_case"]),
    }


async def case_figures(source: Source, period: Period) -> Figures:
    """Cases opened in the period (status, priority, time to triage against their due time) and cases closed in
    the period (dispositions)."""
    opened = await _rows(source, sa.select(cases).where(period.holds(cases.c.opened_at)))
    closed = await _rows(source, sa.select(cases.c.disposition).where(period.holds(cases.c.closed_at)))
    triage = [
        (_utc(row["first_triaged_at"]), _utc(row["opened_at"]), row["due_at"] and _utc(row["due_at"]))
        for row in opened
        if row["first_triaged_at"] is not None
    ]
    minutes = [(triaged - start).total_seconds() / 60 for triaged, start, _ in triage]
    cutoff = period.cutoff
    return {
        "opened": len(opened),
        "by_status": _counts(row["status"] for row in opened),
        "by_priority": _counts(row["priority"] for row in opened),
        "escalated": sum(1 for row in opened if str(row["status"]).startswith("escalated")),
        "legal_hold": sum(1 for row in opened if row["legal_hold"]),
        "triaged": len(triage),
        "triaged_within_sla": sum(1 for triaged, _, due in triage if due is not None and triaged <= due),
        "triaged_late": sum(1 for triaged, _, due in triage if due is not None and triaged > due),
        "untriaged_overdue": sum(
            1
            for row in opened
            if row["first_triaged_at"] is None and row["due_at"] is not None and _utc(row["due_at"]) < cutoff
        ),
        "median_minutes_to_triage": round(statistics.median(minutes), 1) if minutes else None,
        "mean_minutes_to_triage": round(statistics.fmean(minutes), 1) if minutes else None,
        "closed": len(closed),
        "dispositions": _counts(row["disposition"] for row in closed),
    }


async def containment(source: Source, period: Period) -> Figures:
    """Playbook runs started in the period (dry runs apart) and their steps by action and outcome."""
    started = await _rows(
        source,
        sa.select(runs.c.status, runs.c.dry_run, sa.func.count().label("n"))
        .where(period.holds(runs.c.created_at))
        .group_by(runs.c.status, runs.c.dry_run),
    )
    live = [row for row in started if not row["dry_run"]]
    query = (
        sa.select(steps.c.action, steps.c.status, steps.c.destructive, sa.func.count().label("n"))
        .join(runs, runs.c.id == steps.c.run_id)
        .where(period.holds(runs.c.created_at), runs.c.dry_run.is_(False))
        .group_by(steps.c.action, steps.c.status, steps.c.destructive)
    )
    done = await _rows(source, query)
    return {
        "runs": sum(int(row["n"]) for row in live),
        "dry_runs": sum(int(row["n"]) for row in started if row["dry_run"]),
        "runs_by_status": _counts((row["status"] for row in live), (int(row["n"]) for row in live)),
        "steps_by_action_and_outcome": _counts(
            (f"{row['action']} {row['status']}" for row in done), (int(row["n"]) for row in done)
        ),
        "destructive_steps_succeeded": sum(
            int(row["n"]) for row in done if row["destructive"] and row["status"] == "succeeded"
        ),
    }


async def audit_chain(source: Source, period: Period) -> Figures:
    """Audit entries written in the period, and the whole chain verified now as `custodes audit verify` does
    (HMAC with the audit key, compared with the checkpoints; an intact head is checkpointed)."""
    from custodes.responder.evidence import checkpoint_objects
    from custodes.store.checkpoints import verify_checkpointed

    database = source.settings.database
    count = sa.select(sa.func.count()).select_from(audit_log).where(period.holds(audit_log.c.at))
    async with source.store.transaction() as tx:
        written = int((await tx.conn.execute(count)).scalar_one())
    report, problems = await verify_checkpointed(
        source.store, Path(database.audit_checkpoint), checkpoint_objects(database)
    )
    return {
        "entries_in_period": written,
        "chain_verified": report.ok and not problems,
        "entries_verified": report.checked,
        "first_broken_entry": report.broken_seq,
        "checkpoint_problems": len(problems),
        "keyed": database.audit_key is not None,
        "entries_without_key": report.unkeyed,
    }


Measure = Callable[[Source, Period], Awaitable[Figures]]
MEASURES: dict[str, Measure] = {
    "access_reviews": access_reviews,
    "privileged_monitoring": privileged_monitoring,
    "alerts": alerts,
    "cases": case_figures,
    "containment": containment,
    "audit_log": audit_chain,
}
"""Every measure by the name the control catalogue uses."""
