"""The console's case pages: the queue, a case (timeline, members, comments, status changes), and triaging a finding
into a case. Every read and change is the API operation of the same name, as the signed-in token."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from custodes.cases import book, needtoknow
from custodes.detections.scoring.feedback import causes_in
from custodes.server.api import cases, feedback, findings
from custodes.server.console.bridge import call_for, invoke
from custodes.server.console.session import Session
from custodes.server.console.web import local, page, render, see_other
from custodes.server.endpoints import ApiError
from custodes.store.cases import CASE_STATUSES, DISPOSITIONS, PRIORITIES

QUEUE_PAGE = 50


def _form_text(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@page
async def queue(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /cases: the case queue, newest first, filtered by status, paged by cursor."""
    wanted = {k: request.query[k] for k in ("status", "priority", "cursor") if request.query.get(k)}
    listed = await invoke(request, session, cases.list_cases, query={**wanted, "limit": QUEUE_PAGE})
    return render(
        request,
        session,
        "cases.html",
        cases=listed.cases,
        next_cursor=listed.next_cursor,
        statuses=CASE_STATUSES,
        chosen=wanted.get("status", ""),
    )


@page
async def case_page(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /cases/{id}: a case with its members, timeline and comments, and the changes the role may make. With
    `?reveal=` the first view in a sign-in session (per reason) puts `revealed` on the timeline; reloads do not."""
    query = {"reveal": request.query["reveal"]} if request.query.get("reveal") else {}
    request[cases.REVEAL_VIEW] = hashlib.sha256(session.sid.encode()).hexdigest()[:16]
    case = await invoke(request, session, cases.get_case, query=query)
    titles, causes = await _findings(request, session, [m.ref for m in case.members if m.kind == "finding"])
    return render(
        request,
        session,
        "case.html",
        case=case,
        titles=titles,
        causes=causes,
        statuses=[s for s in CASE_STATUSES if s not in ("closed", case.status)],
        priorities=PRIORITIES,
        dispositions=DISPOSITIONS,
        update_case=cases.update_case,
        close_case=cases.close_case,
        lift_case_hold=cases.lift_case_hold,
        comment_case=cases.comment_case,
        give_feedback=feedback.give_feedback,
        revoke_feedback=feedback.revoke_feedback,
    )


async def _findings(
    request: web.Request, session: Session, ids: list[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The case's findings' titles, and the causes of its behaviour-scoring findings (feedback can be on one)."""
    call = call_for(request, session)
    titles: dict[str, str] = {}
    causes: dict[str, list[str]] = {}
    async with call.services.store.transaction() as tx:
        for ident in ids:
            found = await tx.get_finding(ident)
            if found is not None:
                titles[ident] = f"{found.title} ({found.severity.label}, {found.rule_id})"
                causes[ident] = causes_in(found.tags)
    return titles, causes


def _back(case_id: str, done: str) -> web.Response:
    return see_other(f"/cases/{case_id}?done={done}")


@page
async def update(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/update: change status, assignee or priority (escalation names who may see the case)."""
    form = await request.post()
    body: dict[str, Any] = {"reason": _form_text(form, "reason")}
    for name in ("status", "assignee", "priority"):
        if _form_text(form, name):
            body[name] = _form_text(form, name)
    people = [p.strip() for p in _form_text(form, "need_to_know").split(",") if p.strip()]
    if people:
        body["need_to_know"] = people
    await invoke(request, session, cases.update_case, body=body)
    return _back(request.match_info["id"], "updated")


@page
async def close(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/close: close with a disposition and a reason."""
    form = await request.post()
    body = {"disposition": _form_text(form, "disposition"), "reason": _form_text(form, "reason")}
    await invoke(request, session, cases.close_case, body=body)
    return _back(request.match_info["id"], "updated")


@page
async def lift(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/hold/lift: lift the case's legal hold, with a reason (legal or admin)."""
    form = await request.post()
    await invoke(request, session, cases.lift_case_hold, body={"reason": _form_text(form, "reason")})
    return _back(request.match_info["id"], "updated")


@page
async def comment(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/comment: add a comment."""
    form = await request.post()
    await invoke(request, session, cases.comment_case, body={"text": _form_text(form, "text")})
    return _back(request.match_info["id"], "commented")


@page
async def triage(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/triage: link a finding into this case (the open case about its person)."""
    form = await request.post()
    body = {"kind": "finding", "ref": _form_text(form, "finding")}
    await invoke(request, session, cases.link_member, body=body)
    return _back(request.match_info["id"], "triaged")


@page
async def open_from_finding(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases: open a case from a finding (its title, person and severity), the finding linked."""
    form = await request.post()
    ident = _form_text(form, "finding")
    finding = await _finding(request, session, ident)
    priority = {"critical": "critical", "high": "high", "medium": "medium"}.get(finding["severity"], "low")
    body = {"title": finding["title"], "subject": finding["entity"], "priority": priority, "findings": [ident]}
    created = await invoke(request, session, cases.create_case, body=body)
    return _back(created.id, "triaged")


async def _finding(request: web.Request, session: Session, ident: str) -> Mapping[str, Any]:
    call = call_for(request, session)
    names = await call.people()
    async with call.services.store.transaction() as tx:
        found = await tx.get_finding(ident)
        if found is not None and await needtoknow.conceals(tx, "finding", ident, session.token_name):
            found = None
    if found is None:
        raise ApiError(404, "not_found", f"no finding {ident!r}")
    return findings.FindingOut.of(found, names).model_dump()


@page
async def give(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /cases/{id}/feedback: a verdict on a finding of the case (suppress or down-weight its pattern: its rule,
    or one cause of a behaviour-scoring finding, for the person or their peer group or department)."""
    form = await request.post()
    body: dict[str, Any] = {
        "finding": _form_text(form, "finding"),
        "case": request.match_info["id"],
        "verdict": _form_text(form, "verdict"),
        "effect": _form_text(form, "effect") or "suppress",
        "reason": _form_text(form, "reason"),
    }
    for optional in ("weight", "cause", "scope"):
        if _form_text(form, optional):
            body[optional] = _form_text(form, optional)
    await invoke(request, session, feedback.give_feedback, body=body)
    return _back(request.match_info["id"], "updated")


@page
async def revoke(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /feedback/{id}/revoke: revoke feedback, back to the page it was revoked on."""
    form = await request.post()
    await invoke(request, session, feedback.revoke_feedback)
    return see_other(f"{local(_form_text(form, 'next'))}?done=updated")


async def cases_of_person(request: web.Request, session: Session, person: str, ids: list[str]) -> dict[str, Any]:
    """For a person's page: the open case about them the caller may see (or None), and the case each of the given
    findings is in."""
    listed = await invoke(request, session, cases.list_cases, query={"subject": person, "limit": 50})
    current = next((c for c in listed.cases if c.status != "closed"), None)
    call = call_for(request, session)
    async with call.services.store.transaction() as tx:
        member = {ident: [c["id"] for c in await book.cases_with(tx, "finding", ident)] for ident in ids}
    visible = {c.id for c in listed.cases}
    return {"open_case": current, "in_case": {k: [c for c in v if c in visible] for k, v in member.items()}}


def routes(app: web.Application) -> None:
    """Add the case pages."""
    app.router.add_get("/cases", queue)
    app.router.add_post("/cases", open_from_finding)
    app.router.add_get("/cases/{id}", case_page)
    app.router.add_post("/cases/{id}/update", update)
    app.router.add_post("/cases/{id}/close", close)
    app.router.add_post("/cases/{id}/hold/lift", lift)
    app.router.add_post("/cases/{id}/comment", comment)
    app.router.add_post("/cases/{id}/triage", triage)
    app.router.add_post("/cases/{id}/feedback", give)
    app.router.add_post("/feedback/{id}/revoke", revoke)
