"""Findings open or join their person's case: one open case per person, its priority the highest severity seen,
due for triage by the SLA of that priority (custodes.yaml `cases:`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from custodes.cases.book import due_at, link, open_case, open_case_for, record
from custodes.config import CaseSettings
from custodes.model import Finding, Severity, stable_id, utcnow
from custodes.store import Transaction
from custodes.store.cases import PRIORITIES, cases

FILER = "custodes"


def priority_of(severity: Severity) -> str:
    """The case priority a finding's severity asks for (informational counts as low)."""
    return PRIORITIES[max(0, int(severity) - 1)]


async def file_findings(tx: Transaction, settings: CaseSettings, found: Sequence[Finding]) -> list[str]:
    """Open or join a case for each new finding about a person at or above the configured severity; return the
    ids of the cases opened or joined, in order."""
    if not settings.auto_open:
        return []
    least = Severity.parse(settings.min_severity)
    touched: list[str] = []
    for finding in found:
        if finding.entity is None or finding.severity < least:
            continue
        case = await _join(tx, settings, finding)
        if case not in touched:
            touched.append(case)
    return touched


async def _join(tx: Transaction, settings: CaseSettings, finding: Finding) -> str:
    wanted = priority_of(finding.severity)
    assert finding.entity is not None
    case = await open_case_for(tx, finding.entity)
    if case is None:
        opened = await open_case(
            tx,
            settings,
            actor=FILER,
            title=finding.title,
            subject=finding.entity,
            priority=wanted,
            members=[("finding", finding.id)],
            case_id="case-" + stable_id("case", finding.id)[:16],
        )
        return str(opened["id"])
    await link(tx, case["id"], FILER, "finding", finding.id)
    if PRIORITIES.index(wanted) > PRIORITIES.index(case["priority"]):
        await _raise_priority(tx, settings, case, wanted)
    return str(case["id"])


async def _raise_priority(tx: Transaction, settings: CaseSettings, case: dict[str, Any], priority: str) -> None:
    """A more severe finding raises an open case's priority, and (before triage) brings its due time forward."""
    values: dict[str, Any] = {"priority": priority, "updated_at": utcnow()}
    if case["first_triaged_at"] is None:
        sooner = due_at(settings, priority, case["opened_at"])
        if sooner is not None and (case["due_at"] is None or sooner < case["due_at"]):
            values["due_at"] = sooner
    await tx.conn.execute(sa.update(cases).where(cases.c.id == case["id"]).values(**values))
    await record(tx, case["id"], FILER, "updated", {"priority": {"from": case["priority"], "to": priority}})
