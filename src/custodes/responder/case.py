"""Case notes: an analyst-readable line on a case (an entity or a finding), kept in the store and audited."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from custodes.model import stable_id, utcnow
from custodes.responder.registry import ActionContext, ActionError, action
from custodes.store import Transaction
from custodes.store.tables import case_notes

MAX_NOTE = 20_000


async def notes_for(tx: Transaction, case: str) -> list[dict[str, Any]]:
    """A case's notes, oldest first."""
    query = sa.select(case_notes).where(case_notes.c.case_id == case).order_by(case_notes.c.created_at)
    return [dict(row) for row in (await tx.conn.execute(query)).mappings()]


@action("case.note", plan="add a note to case {case}", target="case")
async def note(ctx: ActionContext, *, case: str, text: str) -> dict[str, Any]:
    """Add a note to a case (an entity or a finding id) in the store; the audit log records who added it.

    A replayed step (same idempotency key) finds its note and reports ``changed: false``.
    """
    case, text = case.strip(), text.strip()
    if not case or not text:
        raise ActionError("case.note needs a case and a non-empty text", code="invalid_argument")
    if len(text) > MAX_NOTE:
        raise ActionError(f"a case note is at most {MAX_NOTE} characters", code="invalid_argument")
    note_id = stable_id("case-note", ctx.idempotency_key)
    if ctx.dry_run:
        return {"changed": False, "dry_run": True, "would": f"add a note to case {case}"}
    if ctx.store is None:
        raise ActionError("case.note needs the store; run it from a playbook run", code="not_configured")
    async with ctx.store.transaction() as tx:
        exists = (await tx.conn.execute(sa.select(case_notes.c.id).where(case_notes.c.id == note_id))).first()
        if exists is not None:
            return {"changed": False, "note_id": note_id, "case": case}
        row = {
            "id": note_id,
            "case_id": case,
            "author": ctx.actor,
            "text": text,
            "run_id": ctx.run_id,
            "created_at": utcnow(),
        }
        await tx.conn.execute(sa.insert(case_notes), [row])
        await tx.audit(ctx.actor, "case.note", case, {"note": note_id, "run": ctx.run_id, "text": text})
    return {"changed": True, "note_id": note_id, "case": case}
