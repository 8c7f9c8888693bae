"""Analyst feedback: list it, give it (on a finding: its rule, or one of its causes), revoke it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from custodes.cases import feedback, needtoknow
from custodes.cases.book import CaseError
from custodes.server.api.cases import TEXT, FeedbackOut
from custodes.server.endpoints import ApiError, Call, Model, NoInput, RevealQuery, endpoint

Verdict = Literal["benign", "expected", "false_positive", "malicious", "negligent", "compromised"]


class FeedbackList(Model):
    """Feedback records, newest first."""

    feedback: list[FeedbackOut]


class FeedbackQuery(RevealQuery):
    """Which feedback."""

    entity: str | None = Field(default=None, max_length=512, description="the person's pseudonym (or name)")
    case: str | None = Field(default=None, max_length=64)
    finding: str | None = Field(default=None, max_length=64)
    active: bool | None = Field(default=None, description="only active (true) or only revoked (false)")
    limit: int = Field(default=200, ge=1, le=1000)


class FeedbackIn(Model):
    """A verdict on a finding: its rule (a Sigma rule, or `scoring.*`) for its person, or one of a behaviour-scoring
    finding's causes (`cause`)."""

    finding: str = Field(max_length=64)
    cause: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z_]+$",
        description="a cause of a behaviour-scoring finding (a feature: other_host, usb, ...; its tags name them "
        "`cause.<feature>`): the feedback scales that cause's points in the person's day scores instead of the "
        "finding's rule",
    )
    scope: Literal["person", "peers", "department"] = Field(
        default="person",
        description="with `cause`, whom the feedback covers: the finding's person, everyone of their peer group "
        "(department and title in the directory) or everyone of their department; a group of fewer than 5 people "
        "is refused",
    )
    case: str | None = Field(default=None, max_length=64)
    verdict: Verdict
    effect: Literal["suppress", "downweight"] = "suppress"
    weight: float = Field(default=0.0, ge=0.0, lt=1.0, description="severity scale when the effect is downweight")
    reason: str = Field(min_length=1, max_length=4000, pattern=TEXT)


@endpoint(
    "GET",
    "/api/feedback",
    role="viewer",
    summary="List analyst feedback",
    query=FeedbackQuery,
    response=FeedbackList,
    tags=("cases",),
)
async def list_feedback(call: Call[FeedbackQuery, NoInput]) -> FeedbackList:
    """Feedback records, newest first, active and revoked (without those about the people of restricted cases the
    caller is not on)."""
    q = call.query
    names = await call.people()
    entity = await call.person(q.entity) if q.entity else None
    groups = feedback.groups_of(await call.resolver(), entity) if entity else None
    async with call.services.store.transaction() as tx:
        rows = await feedback.listing(
            tx,
            entity=entity,
            groups=groups,
            case_id=q.case,
            finding_id=q.finding,
            active=q.active,
            limit=q.limit,
            hide=needtoknow.hidden_people(call.caller),
        )
    return FeedbackList(feedback=[FeedbackOut.of(row, names) for row in rows])


@endpoint(
    "POST",
    "/api/feedback",
    role="analyst",
    summary="Give feedback on a pattern for a person (a cause: or their peer group or department)",
    body=FeedbackIn,
    response=FeedbackOut,
    status=201,
    tags=("cases",),
)
async def give_feedback(call: Call[NoInput, FeedbackIn]) -> FeedbackOut:
    """From now on, the person's findings of the rule are suppressed or down-weighted, or with `cause`, that cause's
    points in their day scores, or with `scope`, in the day scores of their peer group or department (audited)."""
    body = call.body
    resolver = await call.resolver() if body.scope != "person" else None
    async with call.services.store.transaction() as tx:
        finding = await tx.get_finding(body.finding)
        if finding is not None and await needtoknow.conceals(tx, "finding", finding.id, call.caller):
            finding = None
        if finding is None or finding.entity is None:
            raise ApiError(404, "not_found", f"no finding {body.finding!r} about a person", field="finding")
        try:
            kind, pattern = feedback.pattern_of(finding, body.cause)
            scope_name = feedback.scope_of(resolver, finding.entity, kind, body.scope)
            row = await feedback.give(
                tx,
                actor=f"api:{call.caller}",
                entity=finding.entity,
                pattern=pattern,
                kind=kind,
                scope=body.scope,
                scope_name=scope_name,
                verdict=body.verdict,
                reason=body.reason,
                effect=body.effect,
                weight=body.weight,
                case_id=body.case,
                finding_id=body.finding,
            )
        except CaseError as exc:
            raise ApiError(400, "invalid_body", str(exc), field=exc.field) from None
    return FeedbackOut.of(row, await call.people())


@endpoint(
    "POST",
    "/api/feedback/{id}/revoke",
    role="analyst",
    summary="Revoke feedback",
    response=FeedbackOut,
    tags=("cases",),
    errors={409: "already revoked"},
)
async def revoke_feedback(call: Call[NoInput, NoInput]) -> FeedbackOut:
    """The pattern counts again for the person from now on; the record stays, marked revoked."""
    ident = call.request.match_info["id"]
    async with call.services.store.transaction() as tx:
        given = await feedback.get(tx, ident)
        if given is not None and await needtoknow.conceals_person(tx, str(given["entity"]), call.caller):
            raise ApiError(404, "not_found", f"no feedback {ident!r} you may see")
        try:
            row = await feedback.revoke(tx, ident, f"api:{call.caller}")
        except CaseError as exc:
            raise ApiError(404 if exc.code == "not_found" else 409, exc.code, str(exc)) from None
    return FeedbackOut.of(row, await call.people())
