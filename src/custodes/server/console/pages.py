"""The console's pages: each reads through the REST API's handlers (or an indexed query of its own) as the
signed-in token, and each change is the API operation of the same name."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from aiohttp import web

from custodes.cases import needtoknow
from custodes.model import utcnow
from custodes.server.api import cases, catalog, connectors, entities, evidence, findings, manage, meta, risk, runs
from custodes.server.console import casepages, queries
from custodes.server.console.bridge import call_for, invoke, may
from custodes.server.console.chart import risk_chart
from custodes.server.console.session import COOKIE, LIFETIME_SECONDS, PRE_COOKIE, Session
from custodes.server.console.web import (
    BAD_FORM,
    console_key,
    cookie,
    local,
    page,
    read_form,
    render,
    same_origin,
    secure,
    see_other,
    signin_page,
)
from custodes.server.context import services_key
from custodes.server.endpoints import ApiError
from custodes.store.tables import audit_log

PAGE_SIZE = 50
AUDIT_PAGE = 50


async def signin_form(request: web.Request) -> web.StreamResponse:
    """GET /signin: the sign-in form."""
    return secure(signin_page(request, local(request.query.get("next"))))


async def signin(request: web.Request) -> web.StreamResponse:
    """POST /signin: check the form's CSRF token and the API token; start a signed session."""
    console = request.app[console_key]
    form = await read_form(request)
    if form is None:
        return secure(signin_page(request, "/", 400, BAD_FORM))
    target = local(str(form.get("next") or "/"))
    if not same_origin(request) or not console.sessions.csrf_ok(
        request.cookies.get(PRE_COOKIE), str(form.get("csrf") or "")
    ):
        problem = "The sign-in form expired or came from another site. Try again."
        return secure(signin_page(request, target, 403, problem))
    value = console.sessions.sign_in(request.app[services_key].settings.server.api_tokens, str(form.get("token") or ""))
    if value is None:
        problem = "That API token is not known here. Check it and try again."
        return secure(signin_page(request, target, 401, problem))
    redirect = see_other(target)
    cookie(redirect, COOKIE, value, max_age=LIFETIME_SECONDS, request=request)
    redirect.del_cookie(PRE_COOKIE, path="/")
    return secure(redirect)


@page
async def signout(request: web.Request, _session: Session) -> web.StreamResponse:
    """POST /signout: forget the session cookie."""
    response = see_other("/signin?done=signed-out")
    response.del_cookie(COOKIE, path="/")
    return response


def _day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "day: must be a date like 2026-11-19", field="day") from None


def _page_number(request: web.Request) -> int:
    text = request.query.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise ApiError(400, "invalid_parameter", "page: must be a whole number from 1 to 10000", field="page")
    return int(text)


@page
async def board(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /: the day's people in review order (by risk while the day is open), with the strongest reasons in
    sentences; paged (without the people of restricted cases the user is not on)."""
    number = _page_number(request)
    call = call_for(request, session)
    names = await call.people()
    async with call.services.store.transaction() as tx:
        day = _day(request.query.get("day")) or await queries.score_day(tx)
        hide = needtoknow.hidden_keys(session.token_name)
        offset = (number - 1) * PAGE_SIZE
        closed, rows, before, after = False, [], None, None
        if day is not None:
            closed = await queries.day_closed(tx, day)
            rows = await queries.ranked(tx, day, closed=closed, limit=PAGE_SIZE + 1, offset=offset, hide=hide)
            before = await queries.score_day(tx, before=day)
            after = await queries.score_day(tx, after=day)
    people = [
        {"entity": names(row.entity) or row.entity, "kind": row.kind, "risk": row.risk, "reasons": row.reasons}
        for row in rows[:PAGE_SIZE]
    ]
    return render(
        request,
        session,
        "board.html",
        day=day,
        before=before,
        after=after,
        people=people,
        closed=closed,
        number=number,
        first_rank=(number - 1) * PAGE_SIZE + 1,
        more=len(rows) > PAGE_SIZE,
    )


@page
async def find_person(request: web.Request, _session: Session) -> web.StreamResponse:
    """GET /people?q=: go to the page of the person named (a name or a pseudonym)."""
    wanted = request.query.get("q", "").strip()
    if not wanted or len(wanted) > 512 or "/" in wanted:
        raise ApiError(400, "invalid_parameter", "q: give a name or a pseudonym (up to 512 characters, no '/')")
    return see_other(f"/people/{quote(wanted, safe='@')}")


@page
async def person(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /people/{id}: a person's risk over time, its reasons, events, findings, runs and evidence."""
    call = call_for(request, session)
    names = await call.people()
    wanted = request.match_info["id"]
    stored = await call.person(wanted)  # a name (not a pseudonym) needs the reveal role and is audited, as in the API
    scored = await invoke(request, session, risk.entity_risk, query={"days": 30})
    timeline = await invoke(request, session, entities.entity_timeline, query={"limit": 50})
    found = await invoke(request, session, findings.list_findings, query={"entity": wanted, "limit": 20})
    bundles = await invoke(request, session, evidence.list_evidence, query={"entity": wanted, "limit": 20})
    async with call.services.store.transaction() as tx:
        about = await queries.runs_about(tx, stored)
    casework = await casepages.cases_of_person(request, session, wanted, [f.id for f in found.findings])
    return render(
        request,
        session,
        "person.html",
        **casework,
        create_case=cases.create_case,
        entity=timeline.entity,
        scored=scored,
        chart=risk_chart([(score.day, score.risk) for score in scored.scores]),
        events=timeline.events,
        findings=found.findings,
        runs=[runs.RunOut.of(run, names) for run in about],
        bundles=bundles.bundles,
        update_finding=findings.update_finding,
    )


@page
async def finding_status(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /findings/{id}/status: acknowledge, close or reopen a finding (audited by the API)."""
    form = await request.post()
    await invoke(
        request,
        session,
        findings.update_finding,
        body={"status": str(form.get("status") or ""), "comment": str(form.get("comment") or "")},
    )
    return see_other(f"{local(str(form.get('next') or '/'))}?done=updated#finding-{request.match_info['id']}")


@page
async def approvals(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /approvals: runs waiting for a decision, each waiting step with its exact plan and plan hash."""
    waiting = await invoke(request, session, runs.list_runs, query={"status": "waiting", "limit": 100})
    return render(request, session, "approvals.html", runs=waiting.runs, decide=runs.approve_step)


async def _decide(request: web.Request, session: Session, *, approve: bool) -> web.StreamResponse:
    form = await request.post()
    await invoke(
        request,
        session,
        runs.approve_step if approve else runs.deny_step,
        body={
            "step": str(form.get("step") or ""),
            "plan_hash": str(form.get("plan_hash") or ""),
            "comment": str(form.get("comment") or ""),
        },
    )
    return see_other(f"/runs/{request.match_info['id']}?done={'approved' if approve else 'denied'}")


@page
async def approve(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /runs/{id}/approve: approve exactly the plan whose hash the form carries."""
    return await _decide(request, session, approve=True)


@page
async def deny(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /runs/{id}/deny."""
    return await _decide(request, session, approve=False)


@page
async def run(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /runs/{id}: a run's steps, plans and results."""
    shown = await invoke(request, session, runs.get_run)
    return render(request, session, "run.html", run=shown, decide=runs.approve_step)


@page
async def playbooks(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /playbooks: loaded playbooks, each file on disk validated again (analysts and up), recent runs."""
    return await _playbooks(request, session, None)


@page
async def validate(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /playbooks/validate: check a pasted playbook as loading would, and show the problems."""
    form = await request.post()
    source = str(form.get("yaml") or "")
    result = await invoke(request, session, manage.validate_playbook, body={"yaml": source, "name": "pasted.yml"})
    return await _playbooks(request, session, (source, result))


async def _playbooks(
    request: web.Request, session: Session, pasted: tuple[str, manage.Validation] | None
) -> web.StreamResponse:
    listed = await invoke(request, session, catalog.list_playbooks)
    checks: dict[str, manage.Validation] = {}
    if may(session, manage.validate_playbook):
        for item in listed.playbooks:
            path = Path(item.file)
            text = await asyncio.to_thread(_read, path)
            checks[item.name] = await invoke(
                request, session, manage.validate_playbook, body={"yaml": text, "name": path.name}
            )
    recent = await invoke(request, session, runs.list_runs, query={"limit": 20})
    return render(
        request,
        session,
        "playbooks.html",
        playbooks=listed.playbooks,
        checks=checks,
        runs=recent.runs,
        pasted=pasted,
        validate=manage.validate_playbook,
    )


def _read(path: Path) -> str:
    """A playbook file's text as it is on disk now (empty when it is gone: validation then says so)."""
    return path.read_text(encoding="utf-8") if path.is_file() else ""


@page
async def rules(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /rules: loaded and rejected rules, their findings in the last 30 days, enable/disable for admins."""
    listed = await invoke(request, session, catalog.list_rules)
    services = request.app[services_key]
    since = utcnow() - queries.MATCH_WINDOW
    async with services.store.transaction() as tx:
        matches = await queries.rule_matches(tx, since)
    return render(
        request,
        session,
        "rules.html",
        rules=listed.rules,
        rejected=listed.rejected,
        matches=matches,
        toggle=manage.disable_rule,
        window_days=queries.MATCH_WINDOW.days,
    )


async def _toggle(request: web.Request, session: Session, *, enabled: bool) -> web.StreamResponse:
    await invoke(request, session, manage.enable_rule if enabled else manage.disable_rule)
    return see_other(f"/rules?done={'enabled' if enabled else 'disabled'}#rule-{request.match_info['id']}")


@page
async def enable_rule(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /rules/{id}/enable."""
    return await _toggle(request, session, enabled=True)


@page
async def disable_rule(request: web.Request, session: Session) -> web.StreamResponse:
    """POST /rules/{id}/disable."""
    return await _toggle(request, session, enabled=False)


@page
async def connectors_page(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /connectors: each connector's lag, throughput, last success and last error."""
    listed = await invoke(request, session, connectors.list_connectors)
    return render(request, session, "connectors.html", connectors=listed.connectors)


@page
async def audit(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /audit: the audit log, newest page first (admins, as the API allows); `?verify=1` recomputes the whole
    hash chain first and says whether it holds."""
    if not may(session, meta.read_audit):
        raise ApiError(403, "forbidden", f"the audit log needs the admin role; you are signed in as {session.role}")
    services = request.app[services_key]
    async with services.store.transaction() as tx:
        last = int((await tx.conn.execute(sa.select(sa.func.max(audit_log.c.seq)))).scalar() or 0)
    verification = None
    if request.query.get("verify") == "1":
        async with services.store.transaction() as tx:
            verification = await tx.verify_audit()
    text = request.query.get("upto", "")
    upto = min(int(text), last) if text.isdigit() else last
    start = max(0, upto - AUDIT_PAGE)
    listed = await invoke(request, session, meta.read_audit, query={"after": start, "limit": upto - start or 1})
    entries = [entry for entry in listed.entries if entry.seq <= upto]
    return render(
        request,
        session,
        "audit.html",
        entries=list(reversed(entries)),
        older=start if start > 0 else None,
        newer=min(upto + AUDIT_PAGE, last) if upto < last else None,
        verification=verification,
    )


def routes(app: web.Application) -> None:
    """Add the console's pages."""
    app.router.add_get("/signin", signin_form)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/", board)
    app.router.add_get("/people", find_person)
    app.router.add_get("/people/{id}", person)
    app.router.add_post("/findings/{id}/status", finding_status)
    app.router.add_get("/approvals", approvals)
    app.router.add_get("/runs/{id}", run)
    app.router.add_post("/runs/{id}/approve", approve)
    app.router.add_post("/runs/{id}/deny", deny)
    app.router.add_get("/playbooks", playbooks)
    app.router.add_post("/playbooks/validate", validate)
    app.router.add_get("/rules", rules)
    app.router.add_post("/rules/{id}/enable", enable_rule)
    app.router.add_post("/rules/{id}/disable", disable_rule)
    app.router.add_get("/connectors", connectors_page)
    app.router.add_get("/audit", audit)
    casepages.routes(app)
