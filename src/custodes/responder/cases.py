"""Case actions: playbooks open (or join), update and close cases; each has an inverse the run's undo calls.

`case` arguments take a case id or a person: a person means the case about them that is not closed. A replayed
step (same idempotency key) changes nothing and reports ``changed: false``.
"""

from __future__ import annotations

from typing import Any

from custodes.cases import book, hold
from custodes.cases.book import CaseError
from custodes.config import CaseSettings
from custodes.model import stable_id
from custodes.responder.registry import ActionContext, ActionError, action
from custodes.store import Store, Transaction


def _store(ctx: ActionContext) -> Store:
    if ctx.store is None:
        raise ActionError("case actions need the store; run them from a playbook run", code="not_configured")
    return ctx.store


def _settings(ctx: ActionContext) -> CaseSettings:
    return CaseSettings() if ctx.app is None else ctx.app.cases


async def _resolve(tx: Transaction, case: str) -> dict[str, Any]:
    found = await book.get_case(tx, case) or await book.open_case_for(tx, case)
    if found is None:
        raise ActionError(f"no case {case!r} and no open case about it", code="not_found")
    return found


def _dry(ctx: ActionContext, would: str) -> dict[str, Any] | None:
    return {"changed": False, "dry_run": True, "would": would} if ctx.dry_run else None


def _failed(exc: CaseError) -> ActionError:
    return ActionError(str(exc), code="invalid_argument" if exc.code == "invalid" else exc.code)


@action("case.open", undo="case.withdraw", plan="open or join the case about {subject}", target="subject")
async def open_case(
    ctx: ActionContext,
    *,
    subject: str,
    title: str,
    priority: str = "medium",
    assignee: str | None = None,
    finding: str | None = None,
) -> dict[str, Any]:
    """Open a case about a person (or join the one open about them), linking the finding when given."""
    if (dry := _dry(ctx, f"open or join the case about {subject}")) is not None:
        return dry
    async with _store(ctx).transaction() as tx:
        ident = "case-" + stable_id("case", ctx.idempotency_key)[:16]
        if await book.get_case(tx, ident) is not None:
            return {"changed": False, "case": ident, "opened": True}
        existing = await book.open_case_for(tx, subject)
        members = [] if finding is None else [("finding", finding)]
        try:
            if existing is None:
                await book.open_case(
                    tx,
                    _settings(ctx),
                    actor=ctx.actor,
                    title=title,
                    subject=subject,
                    priority=priority,
                    assignee=assignee,
                    case_id=ident,
                    run_id=ctx.run_id,
                )
                for kind, ref in members:
                    await book.link(tx, ident, ctx.actor, kind, ref, run_id=ctx.run_id)
                return {"changed": True, "case": ident, "opened": True}
            linked = [await book.link(tx, existing["id"], ctx.actor, k, r, run_id=ctx.run_id) for k, r in members]
        except CaseError as exc:
            raise _failed(exc) from None
    return {"changed": any(linked), "case": existing["id"], "opened": False}


@action("case.withdraw", undo="case.open", plan="withdraw what this run opened or linked about {subject}")
async def withdraw(
    ctx: ActionContext,
    *,
    subject: str,
    title: str = "",
    priority: str = "medium",
    assignee: str | None = None,
    finding: str | None = None,
) -> dict[str, Any]:
    """Undo `case.open`: close the case this run opened (status closed, no disposition), or unlink the finding
    it linked into an existing case."""
    if (dry := _dry(ctx, f"withdraw this run's case about {subject}")) is not None:
        return dry
    async with _store(ctx).transaction() as tx:
        case = await book.open_case_for(tx, subject)
        if case is None:
            return {"changed": False}
        events = await book.timeline(tx, case["id"])
        mine = [e for e in events if e["details"].get("run") == ctx.run_id and ctx.run_id is not None]
        if any(e["kind"] == "opened" for e in mine):
            await book.withdraw(tx, case["id"], ctx.actor, run_id=ctx.run_id)
            return {"changed": True, "case": case["id"], "withdrawn": True}
        unlinked = False
        for event in mine:
            if event["kind"] == "linked":
                details = event["details"]
                unlinked |= await book.unlink(
                    tx, case["id"], ctx.actor, details["kind"], details["ref"], reason=f"undo of run {ctx.run_id}"
                )
    return {"changed": unlinked, "case": case["id"], "withdrawn": False}


@action("case.update", undo="case.revert", plan="update case {case}", target="case")
async def update(
    ctx: ActionContext,
    *,
    case: str,
    status: str | None = None,
    assignee: str | None = None,
    priority: str | None = None,
    need_to_know: list[str] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Change a case's status, assignee or priority (escalating to HR or legal restricts it to `need_to_know`)."""
    if (dry := _dry(ctx, f"update case {case}")) is not None:
        return dry
    return await _change(ctx, case, status=status, assignee=assignee, priority=priority, need=need_to_know, why=reason)


@action("case.close", undo="case.revert", plan="close case {case} as {disposition}", target="case")
async def close(ctx: ActionContext, *, case: str, disposition: str, reason: str = "") -> dict[str, Any]:
    """Close a case with a disposition: malicious, negligent, compromised or benign."""
    if (dry := _dry(ctx, f"close case {case} as {disposition}")) is not None:
        return dry
    return await _change(ctx, case, status="closed", disposition=disposition, why=reason)


async def _change(
    ctx: ActionContext,
    case: str,
    *,
    status: str | None = None,
    assignee: str | None = None,
    priority: str | None = None,
    disposition: str | None = None,
    need: list[str] | None = None,
    why: str = "",
) -> dict[str, Any]:
    async with _store(ctx).transaction() as tx:
        found = await _resolve(tx, case)
        try:
            change = await book.update(
                tx,
                _settings(ctx),
                found["id"],
                ctx.actor,
                status=status,
                assignee=assignee,
                priority=priority,
                disposition=disposition,
                need_to_know=need or (),
                reason=why,
                run_id=ctx.run_id,
            )
        except CaseError as exc:
            raise _failed(exc) from None
    if "legal_hold" in change.changed:
        await hold.hold_bundles(_store(ctx), ctx.settings.evidence, found["id"], ctx.actor, why or str(status))
    changed = {name: {"from": before, "to": after} for name, (before, after) in change.changed.items()}
    return {"changed": bool(changed), "case": found["id"], "fields": changed}


@action("case.revert", plan="revert this run's change to case {case}", target="case")
async def revert(
    ctx: ActionContext,
    *,
    case: str,
    status: str | None = None,
    assignee: str | None = None,
    priority: str | None = None,
    disposition: str | None = None,
    need_to_know: list[str] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Undo `case.update` or `case.close`: put back the values this run's latest change replaced; when that change
    escalated the case, lift the restriction and the legal hold it placed."""
    if (dry := _dry(ctx, f"revert this run's change to case {case}")) is not None:
        return dry
    found, last = await _last_change(ctx, case)
    if last is None:
        return {"changed": False, "case": found["id"]}
    why = f"undo of run {ctx.run_id}"
    before = {name: value["from"] for name, value in last["details"].items() if isinstance(value, dict)}
    lift = before.get("legal_hold") is False and bool(found["legal_hold"])
    if lift:  # first, so that storage failing leaves the change in place for a retry
        await hold.lift_hold(_store(ctx), ctx.settings.evidence, found["id"], ctx.actor, why)
    async with _store(ctx).transaction() as tx:
        try:
            change = await book.update(
                tx,
                _settings(ctx),
                found["id"],
                ctx.actor,
                status=before.get("status"),
                assignee=before.get("assignee"),
                priority=before.get("priority"),
                reason=why,
                run_id=ctx.run_id,
                revert_of=int(last["seq"]),
            )
        except CaseError as exc:
            raise _failed(exc) from None
        unrestrict = before.get("restricted") is False and bool(change.case["restricted"])
        if unrestrict:
            await book.unrestrict(tx, found["id"], ctx.actor, why)
    return {"changed": bool(change.changed) or unrestrict or lift, "case": found["id"]}


async def _last_change(ctx: ActionContext, case: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The case and this run's latest change to it not yet reverted (None when there is none)."""
    async with _store(ctx).transaction() as tx:
        found = await _resolve_any(tx, case)
        events = await book.timeline(tx, found["id"])
    reverted = {e["details"].get("revert_of") for e in events}
    changes = [
        e
        for e in events
        if e["kind"] in ("updated", "closed")
        and ctx.run_id is not None
        and e["details"].get("run") == ctx.run_id
        and "revert_of" not in e["details"]
        and e["seq"] not in reverted
    ]
    return found, changes[-1] if changes else None


async def _resolve_any(tx: Transaction, case: str) -> dict[str, Any]:
    """A case by id, or the newest case about a person, closed or not (a closed case is reverted too)."""
    found = await book.get_case(tx, case)
    if found is not None:
        return found
    rows = await book.list_cases(tx, principal="", subject=case, limit=1, include_restricted=True)
    if not rows:
        raise ActionError(f"no case {case!r} and no case about it", code="not_found")
    return rows[0]
