"""The API's own description and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from custodes import __version__
from custodes.server.endpoints import MAX_SEQ, Call, Model, NoInput, endpoint, openapi
from custodes.server.responses import json_response


async def openapi_document(_request: web.Request) -> web.Response:
    """GET /api/openapi.json: the OpenAPI 3.1 document (public, like any API description)."""
    return json_response(openapi(__version__))


class AuditEntry(Model):
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(Model):
    """Audit entries in order."""

    entries: list[AuditEntry]
    next_after: int | None


class AuditQuery(Model):
    """Paging of the audit log."""

    after: int = Field(default=0, ge=0, le=MAX_SEQ, description="sequence number of the last entry already read")
    limit: int = Field(default=200, ge=1, le=1000)


@endpoint(
    "GET",
    "/api/audit",
    role="admin",
    summary="Read the audit log",
    query=AuditQuery,
    response=AuditPage,
    tags=("audit",),
)
async def read_audit(call: Call[AuditQuery, NoInput]) -> AuditPage:
    """Entries after a sequence number, oldest first."""
    async with call.services.store.transaction() as tx:
        entries = await tx.audit_entries(after_seq=call.query.after, limit=call.query.limit)
    return AuditPage(
        entries=[AuditEntry.model_validate(entry, from_attributes=True) for entry in entries],
        next_after=entries[-1].seq if len(entries) == call.query.limit else None,
    )
