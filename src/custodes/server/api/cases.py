"""Cases: list (filter, page), open, read (members, timeline, comments), change, comment, link, close, and
grant need-to-know access. A restricted case answers 404 to anyone not on its access list."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import Field

from custodes.cases import book, feedback, needtoknow
from custodes.cases.book import CaseError
from custodes.cases.hold import lift_hold, place_hold
from custodes.model import utcnow
from custodes.responder.registry import ActionError
from custodes.server.endpoints import ApiError, Call, Model, Names, NoInput, RevealQuery, endpoint
from custodes.store import Transaction

OpenStatus = Literal["new", "triage", "investigating", "escalated_hr", "escalated_legal"]
StatusName = OpenStatus | Literal["closed"]
DispositionName = Literal["malicious", "negligent", "compromised", "benign"]
PriorityName = Literal["low", "medium", "high", "critical"]
KindName = Literal["finding", "run", "evidence", "score"]
TEXT = r"[^\s\x1c-\x1f\x85]"
"""Free text must hold something besides white space (as JSON Schema, pydantic and Python's `strip` all count it)."""


REVEAL_VIEW: web.RequestKey[str] = web.RequestKey("reveal_view", str)
"""Request key under which the console names the reveal action a read belongs to (one per sign-in session): such
reads put one `revealed` entry per reason on the case's timeline, not one per page load."""


class CaseOut(Model):
    """A case's header."""

    id: str
    subject: str | None = Field(description="the person (pseudonym unless revealed) or none for an incident")
    title: str
    status: StatusName
    disposition: DispositionName | None
    assignee: str | None
    priority: PriorityName
    due_at: datetime | None
    overdue: bool = Field(description="not yet triaged and past its due time")
    opened_by: str
    opened_at: datetime
    first_triaged_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    restricted: bool
    legal_hold: bool

    @classmethod
    def of(cls, row: Mapping[str, Any], names: Names, now: datetime) -> CaseOut:
        """The API view of a case row, its person shown through `names`."""
        due = row["due_at"]
        late = row["first_triaged_at"] is None and due is not None and due < now
        return cls.model_validate({**row, "subject": names(row["subject"]), "overdue": late})


class Row(Model):
    """A model read from a store row (columns it does not show are left out)."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Self:
        """The model of a row's columns that it has."""
        return cls.model_validate({name: row[name] for name in cls.model_fields})


class MemberOut(Row):
    """Something a case groups."""

    kind: KindName
    ref: str
    added_by: str
    added_at: datetime


class EventOut(Row):
    """An entry on a case's timeline."""

    seq: int
    at: datetime
    actor: str
    kind: str
    details: dict[str, Any]


class CommentOut(Row):
    """A comment on a case."""

    id: str
    author: str
    text: str
    created_at: datetime


class FeedbackOut(Model):
    """Analyst feedback on a pattern for one person, or on a cause for their peer group or department."""

    id: str
    entity: str | None = Field(description="the person of the finding it was given on")
    kind: Literal["rule", "cause"] = Field(description="what `pattern` is: a rule id, or a scoring cause (feature)")
    pattern: str
    scope: Literal["person", "peers", "department"] = Field(
        description="whom it covers: the person, or everyone of the peer group or department `scope_name`"
    )
    scope_name: str | None = Field(description="the peer group (department/title) or department it covers")
    verdict: str
    effect: Literal["suppress", "downweight"]
    weight: float
    reason: str
    case_id: str | None
    finding_id: str | None
    created_by: str
    created_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: Mapping[str, Any], names: Names) -> FeedbackOut:
        """The API view of a feedback record, its person shown through `names`."""
        fields = {k: v for k, v in row.items() if k != "pattern_kind"}
        return cls.model_validate({**fields, "kind": row["pattern_kind"], "entity": names(row["entity"])})


class CaseDetail(CaseOut):
    """A case with what it groups, its timeline, comments, access list and feedback."""

    members: list[MemberOut]
    timeline: list[EventOut]
    comments: list[CommentOut]
    access: list[str] = Field(description="who may see the case while it is restricted")
    feedback: list[FeedbackOut]


class CasePage(Model):
    """One page of cases, newest first."""

    cases: list[CaseOut]
    next_cursor: str | None


class CaseQuery(RevealQuery):
    """Filters and paging for the case list."""

    limit: int = Field(default=50, ge=1, le=500, description="page size")
    cursor: str | None = Field(default=None, max_length=64, description="next_cursor of the previous page")
    status: StatusName | None = None
    priority: PriorityName | None = None
    assignee: str | None = Field(default=None, max_length=256)
    subject: str | None = Field(default=None, max_length=512, description="the person's pseudonym (or name, revealing)")


class CaseCreate(Model):
    """A case an analyst opens."""

    title: str = Field(min_length=1, max_length=512, pattern=TEXT)
    subject: str | None = Field(default=None, max_length=512, description="the person's pseudonym (or name)")
    priority: PriorityName = "medium"
    assignee: str | None = Field(default=None, max_length=256)
    findings: list[str] = Field(default_factory=list, max_length=500, description="finding ids to link")


class CaseUpdate(Model):
    """A change to a case (closing is POST /api/cases/{id}/close); escalating to HR or legal restricts it to
    `need_to_know` (and the caller)."""

    status: OpenStatus | None = None
    assignee: str | None = Field(default=None, max_length=256)
    priority: PriorityName | None = None
    need_to_know: list[str] = Field(default_factory=list, max_length=100, description="token or user names")
    reason: str = Field(default="", max_length=4000)


class CaseClose(Model):
    """How a case was decided."""

    disposition: DispositionName
    reason: str = Field(min_length=1, max_length=4000, pattern=TEXT)


class CommentIn(Model):
    """A comment."""

    text: str = Field(min_length=1, max_length=book.MAX_COMMENT, pattern=TEXT)


class MemberIn(Model):
    """A finding, run, evidence bundle or day score (`<scored entity>@<YYYY-MM-DD>`, as `/api/entities/{id}/risk`
    names the entity) to link or unlink."""

    kind: KindName
    ref: str = Field(min_length=1, max_length=512, pattern=TEXT)
    reason: str = Field(default="", max_length=4000)


class AccessIn(Model):
    """People to put on a restricted case's access list."""

    principals: list[str] = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=4000, pattern=TEXT)


class LiftIn(Model):
    """Why a legal hold is lifted."""

    reason: str = Field(min_length=1, max_length=4000, pattern=TEXT)


class Lifted(Model):
    """The evidence bundles a lifted hold released (retention may delete them unless another case holds them)."""

    released: list[str]


class Changed(Model):
    """Whether a change changed anything."""

    changed: bool


def _failed(exc: CaseError) -> ApiError:
    status = {"not_found": 404, "conflict": 409}.get(exc.code, 400)
    return ApiError(status, exc.code if status != 400 else "invalid_body", str(exc), field=exc.field)


async def _case(call: Call[Any, Any], tx: Transaction, ident: str | None = None) -> dict[str, Any]:
    """The case the path (or `ident`) names, when the caller may see it (404 alike for a missing case and a
    restricted one)."""
    ident = ident or call.request.match_info["id"]
    case = await book.get_case(tx, ident)
    if case is None or not await book.visible(tx, case, call.caller):
        raise ApiError(404, "not_found", f"no case {ident!r} you may see")
    return case


async def _stored(call: Call[Any, Any], tx: Transaction, kind: str, ref: str) -> bool:
    """Whether an item to link is stored and the caller may see it (need to know hides the items of restricted
    cases the caller is not on)."""
    return await book.member_exists(tx, kind, ref) and not await needtoknow.conceals(tx, kind, ref, call.caller)


async def detail(call: Call[Any, Any], names: Names, case_id: str) -> CaseDetail:
    """A case's full view for the caller."""
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx, case_id)
        members = await book.members(tx, case_id)
        events = await book.timeline(tx, case_id)
        notes = await book.comments(tx, case_id)
        access = await book.access_list(tx, case_id)
        given = await feedback.listing(tx, case_id=case_id)
    head = CaseOut.of(case, names, utcnow())
    return CaseDetail(
        **head.model_dump(),
        members=[MemberOut.of(m) for m in members],
        timeline=[EventOut.of(e) for e in events],
        comments=[CommentOut.of(c) for c in notes],
        access=access,
        feedback=[FeedbackOut.of(f, names) for f in given],
    )


@endpoint("GET", "/api/cases", role="viewer", summary="List cases", query=CaseQuery, response=CasePage, tags=("cases",))
async def list_cases(call: Call[CaseQuery, NoInput]) -> CasePage:
    """Newest first, cursor paging; restricted cases only for the people on their access list."""
    q = call.query
    names = await call.people()
    subject = await call.person(q.subject) if q.subject else None
    async with call.services.store.transaction() as tx:
        before = None
        if q.cursor:
            anchor = await book.get_case(tx, q.cursor)
            if anchor is None:
                raise ApiError(404, "unknown_cursor", "the cursor's case no longer exists", field="cursor")
            before = (anchor["opened_at"], anchor["id"])
        rows = await book.list_cases(
            tx,
            principal=call.caller,
            limit=q.limit + 1,
            before=before,
            status=q.status,
            subject=subject,
            assignee=q.assignee,
            priority=q.priority,
        )
    page = rows[: q.limit]
    now = utcnow()
    return CasePage(
        cases=[CaseOut.of(row, names, now) for row in page],
        next_cursor=page[-1]["id"] if len(rows) > q.limit else None,
    )


@endpoint(
    "POST",
    "/api/cases",
    role="analyst",
    summary="Open a case",
    body=CaseCreate,
    response=CaseDetail,
    status=201,
    tags=("cases",),
)
async def create_case(call: Call[NoInput, CaseCreate]) -> CaseDetail:
    """Open a case (status new, due by the SLA of its priority), linking the given findings."""
    body = call.body
    subject = await call.person(body.subject) if body.subject else None
    actor = f"api:{call.caller}"
    async with call.services.store.transaction() as tx:
        for ident in body.findings:
            if not await _stored(call, tx, "finding", ident):
                raise ApiError(404, "not_found", f"no finding {ident!r}", field="findings")
        try:
            row = await book.open_case(
                tx,
                call.services.settings.cases,
                actor=actor,
                title=body.title,
                subject=subject,
                priority=body.priority,
                assignee=body.assignee,
                members=[("finding", ident) for ident in body.findings],
            )
        except CaseError as exc:
            raise _failed(exc) from None
    return await detail(call, await call.people(), str(row["id"]))


@endpoint(
    "GET",
    "/api/cases/{id}",
    role="viewer",
    summary="Read a case",
    query=RevealQuery,
    response=CaseDetail,
    tags=("cases",),
)
async def get_case(call: Call[RevealQuery, NoInput]) -> CaseDetail:
    """A case with its members, timeline, comments, access list and feedback. Revealing names here is audited and
    written on the case's timeline (`revealed`, with the reason): once per request, or once per console session
    and reason."""
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
    names = await call.people()
    if call.revealed:
        view = call.request.get(REVEAL_VIEW)
        async with call.services.store.transaction() as tx:
            await book.reveal(tx, case["id"], f"api:{call.caller}", str(call.query.reveal), view=view)
    return await detail(call, names, case["id"])


@endpoint(
    "PATCH",
    "/api/cases/{id}",
    role="analyst",
    summary="Change a case's status, assignee or priority",
    body=CaseUpdate,
    response=CaseDetail,
    tags=("cases",),
)
async def update_case(call: Call[NoInput, CaseUpdate]) -> CaseDetail:
    """Move a case on (closing needs POST /api/cases/{id}/close); escalating to HR or legal restricts it to the
    named people and places a legal hold on its evidence (recorded in each bundle's chain of custody)."""
    body = call.body
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
        try:
            change = await book.update(
                tx,
                call.services.settings.cases,
                case["id"],
                f"api:{call.caller}",
                status=body.status,
                assignee=body.assignee,
                priority=body.priority,
                need_to_know=body.need_to_know,
                reason=body.reason,
            )
        except CaseError as exc:
            raise _failed(exc) from None
    if change.case["legal_hold"] and not case["legal_hold"]:
        await place_hold(call.services, case["id"], f"api:{call.caller}", body.reason or str(body.status))
    return await detail(call, await call.people(), case["id"])


@endpoint(
    "POST",
    "/api/cases/{id}/close",
    role="analyst",
    summary="Close a case with a disposition",
    body=CaseClose,
    response=CaseDetail,
    tags=("cases",),
    errors={409: "the case is already closed"},
)
async def close_case(call: Call[NoInput, CaseClose]) -> CaseDetail:
    """Close a case as malicious, negligent, compromised or benign (the reason goes on the timeline)."""
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
        if case["status"] == "closed":
            raise ApiError(409, "conflict", f"case {case['id']} is already closed")
        try:
            await book.update(
                tx,
                call.services.settings.cases,
                case["id"],
                f"api:{call.caller}",
                status="closed",
                disposition=call.body.disposition,
                reason=call.body.reason,
            )
        except CaseError as exc:
            raise _failed(exc) from None
    return await detail(call, await call.people(), case["id"])


@endpoint(
    "POST",
    "/api/cases/{id}/comments",
    role="analyst",
    summary="Comment on a case",
    body=CommentIn,
    response=CommentOut,
    status=201,
    tags=("cases",),
)
async def comment_case(call: Call[NoInput, CommentIn]) -> CommentOut:
    """Add a comment (audited `case.commented`)."""
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
        try:
            row = await book.comment(tx, case["id"], f"api:{call.caller}", call.body.text)
        except CaseError as exc:
            raise _failed(exc) from None
    return CommentOut.of(row)


@endpoint(
    "POST",
    "/api/cases/{id}/members",
    role="analyst",
    summary="Link a finding, run, evidence bundle or score to a case",
    body=MemberIn,
    response=Changed,
    tags=("cases",),
)
async def link_member(call: Call[NoInput, MemberIn]) -> Changed:
    """Link an item (a bundle linked to a case under legal hold is held too)."""
    ref = call.body.ref
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
        if not await _stored(call, tx, call.body.kind, ref):
            raise ApiError(404, "not_found", f"no {call.body.kind} {ref!r}", field="ref")
        changed = await book.link(tx, case["id"], f"api:{call.caller}", call.body.kind, ref)
    if changed and call.body.kind == "evidence" and case["legal_hold"]:
        await place_hold(call.services, case["id"], f"api:{call.caller}", call.body.reason or "linked")
    return Changed(changed=changed)


@endpoint(
    "POST",
    "/api/cases/{id}/members/remove",
    role="analyst",
    summary="Unlink an item from a case",
    body=MemberIn,
    response=Changed,
    tags=("cases",),
)
async def unlink_member(call: Call[NoInput, MemberIn]) -> Changed:
    """Unlink an item (the timeline keeps that it was linked)."""
    async with call.services.store.transaction() as tx:
        case = await _case(call, tx)
        changed = await book.unlink(
            tx, case["id"], f"api:{call.caller}", call.body.kind, call.body.ref, reason=call.body.reason
        )
    if not changed:
        raise ApiError(404, "not_found", f"{call.body.kind} {call.body.ref!r} is not on case {case['id']}", field="ref")
    return Changed(changed=True)


@endpoint(
    "POST",
    "/api/cases/{id}/access",
    role="admin",
    summary="Put people on a restricted case's access list",
    body=AccessIn,
    response=Changed,
    tags=("cases",),
)
async def grant_access(call: Call[NoInput, AccessIn]) -> Changed:
    """An admin may add people to any case's access list, even one they cannot see (audited with the reason)."""
    ident = call.request.match_info["id"]
    async with call.services.store.transaction() as tx:
        try:
            added = await book.grant_access(tx, ident, f"api:{call.caller}", call.body.principals, call.body.reason)
        except CaseError as exc:
            raise _failed(exc) from None
    return Changed(changed=bool(added))


@endpoint(
    "POST",
    "/api/cases/{id}/hold/lift",
    role="legal",
    summary="Lift a case's legal hold",
    body=LiftIn,
    response=Lifted,
    tags=("cases",),
    errors={409: "the case is not under legal hold", 502: "a bundle's storage could not be changed (the hold stays)"},
)
async def lift_case_hold(call: Call[NoInput, LiftIn]) -> Lifted:
    """Legal or an admin lifts the hold (the restriction stays), even on a case they cannot see: audited
    (`case.hold_lifted`), written in each held bundle's chain of custody, and the S3 Object Lock legal hold cleared
    unless another case still holds the bundle."""
    ident, evidence = call.request.match_info["id"], call.services.settings.responder.evidence
    try:
        released = await lift_hold(call.services.store, evidence, ident, f"api:{call.caller}", call.body.reason)
    except CaseError as exc:
        raise _failed(exc) from None
    except ActionError as exc:
        raise ApiError(502, "evidence_unreachable", f"the hold stays; a bundle's storage failed: {exc}") from None
    return Lifted(released=released)
