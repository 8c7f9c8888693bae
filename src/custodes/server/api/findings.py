"""Findings: list (filter, page), read, and update status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from custodes.cases import book, feedback, needtoknow
from custodes.model import Finding, FindingStatus, Severity
from custodes.server.endpoints import ApiError, Call, Model, Names, NoInput, RevealQuery, endpoint

SeverityName = Literal["informational", "low", "medium", "high", "critical"]
StatusName = Literal["open", "acknowledged", "closed"]


class FindingOut(Model):
    """A finding as the API shows it."""

    id: str
    rule_id: str
    title: str
    detector: str
    severity: SeverityName
    entity: str | None
    source: str | None
    tags: list[str]
    event_ids: list[str]
    count: int
    status: StatusName
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, finding: Finding, names: Names) -> FindingOut:
        """The API view of a stored finding, its person shown through `names`."""
        return cls.model_validate(
            {
                "id": finding.id,
                "rule_id": finding.rule_id,
                "title": finding.title,
                "detector": finding.detector,
                "severity": finding.severity.label,
                "entity": names(finding.entity),
                "source": finding.source,
                "tags": finding.tags,
                "event_ids": finding.event_ids,
                "count": finding.count,
                "status": finding.status.value,
                "first_seen": finding.first_seen,
                "last_seen": finding.last_seen,
            }
        )


class FindingDetail(FindingOut):
    """A finding with the cases it is in and the analyst feedback on its pattern for its person."""

    cases: list[str] = Field(description="ids of the cases grouping it that the caller may see")
    feedback: list[str] = Field(
        description="ids of active feedback on its rule, or on one of its causes, for its person (docs/cases.md)"
    )


class FindingPage(Model):
    """One page of findings, newest first."""

    findings: list[FindingOut]
    next_cursor: str | None


class FindingQuery(RevealQuery):
    """Filters and paging for the findings list."""

    limit: int = Field(default=50, ge=1, le=500, description="page size")
    cursor: str | None = Field(default=None, max_length=64, description="next_cursor of the previous page")
    min_severity: SeverityName | None = Field(default=None, description="lowest severity to include")
    status: StatusName | None = None
    entity: str | None = Field(default=None, max_length=512, description="exact entity id or its pseudonym")


class FindingUpdate(Model):
    """A change an analyst makes to a finding."""

    status: StatusName
    comment: str = Field(default="", max_length=4000)


@endpoint(
    "GET",
    "/api/findings",
    role="viewer",
    summary="List findings",
    query=FindingQuery,
    response=FindingPage,
    tags=("findings",),
)
async def list_findings(call: Call[FindingQuery, NoInput]) -> FindingPage:
    """Newest first, cursor paging."""
    q = call.query
    names = await call.people()
    entity = await call.person(q.entity) if q.entity else None
    async with call.services.store.transaction() as tx:
        before = None
        if q.cursor:
            created = await tx.finding_created_at(q.cursor)
            if created is None:
                raise ApiError(
                    404,
                    "unknown_cursor",
                    "the cursor's finding no longer exists; start again without one",
                    field="cursor",
                )
            before = (created, q.cursor)
        found = await tx.list_findings(
            limit=q.limit + 1,
            before=before,
            entity=entity,
            min_severity=Severity.parse(q.min_severity) if q.min_severity else None,
            status=FindingStatus(q.status) if q.status else None,
            hide=needtoknow.hidden("finding", call.caller),
        )
    page = found[: q.limit]
    return FindingPage(
        findings=[FindingOut.of(f, names) for f in page], next_cursor=page[-1].id if len(found) > q.limit else None
    )


async def _finding(call: Call[Any, Any]) -> Finding:
    ident = call.request.match_info["id"]
    async with call.services.store.transaction() as tx:
        finding = await tx.get_finding(ident)
        if finding is not None and await needtoknow.conceals(tx, "finding", ident, call.caller):
            finding = None
    if finding is None:
        raise ApiError(404, "not_found", f"no finding {ident!r} you may see")
    return finding


@endpoint(
    "GET",
    "/api/findings/{id}",
    role="viewer",
    summary="Read a finding",
    query=RevealQuery,
    response=FindingDetail,
    tags=("findings",),
)
async def get_finding(call: Call[RevealQuery, NoInput]) -> FindingDetail:
    """One finding by id, with its cases and the active feedback on its rule or one of its causes."""
    finding = await _finding(call)
    shown = FindingOut.of(finding, await call.people())
    groups = feedback.groups_of(await call.resolver(), finding.entity) if finding.entity else None
    async with call.services.store.transaction() as tx:
        grouped = [
            c["id"] for c in await book.cases_with(tx, "finding", finding.id) if await book.visible(tx, c, call.caller)
        ]
        active = await feedback.listing(tx, entity=finding.entity, groups=groups, active=True) if finding.entity else []
    given = [row["id"] for row in active if feedback.concerns(row, finding)]
    return FindingDetail(**shown.model_dump(), cases=grouped, feedback=given)


@endpoint(
    "PATCH",
    "/api/findings/{id}",
    role="analyst",
    summary="Change a finding's status",
    body=FindingUpdate,
    response=FindingOut,
    tags=("findings",),
)
async def update_finding(call: Call[NoInput, FindingUpdate]) -> FindingOut:
    """Acknowledge or close a finding (audited with the comment)."""
    finding = await _finding(call)
    previous = finding.status.value
    async with call.services.store.transaction() as tx:
        await tx.set_finding_status(finding.id, FindingStatus(call.body.status))
        await tx.audit(
            f"api:{call.caller}",
            "finding.update",
            finding.id,
            {"role": call.role, "from": previous, "to": call.body.status, "comment": call.body.comment},
        )
    finding.status = FindingStatus(call.body.status)
    return FindingOut.of(finding, await call.people())
