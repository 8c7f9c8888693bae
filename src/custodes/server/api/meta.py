"""The API's own description and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from custodes import __version__
from custodes.playbooks.schema import Playbook
from custodes.server.context import services_key
from custodes.server.endpoints import MAX_SEQ, Call, Model, NoInput, endpoint, openapi
from custodes.server.responses import json_response


async def openapi_document(request: web.Request) -> web.Response:
    """GET /api/openapi.json: the OpenAPI 3.1 document (public, like any API description), with the typed inputs
    of each loaded playbook that can be started by hand."""
    document = openapi(__version__)
    manual = [item.playbook for item in request.app[services_key].playbooks if item.playbook.trigger.manual]
    generic = document["paths"]["/api/playbooks/{name}/runs"]["post"]
    document["paths"].update(manual_run_paths(generic, manual))
    if manual:  # the generic path stands for every other name (unknown: 404; not manual: 409)
        named = next(parameter for parameter in generic["parameters"] if parameter["name"] == "name")
        named["schema"] = {"type": "string", "not": {"enum": [playbook.name for playbook in manual]}}
    return json_response(document)


INPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},  # beyond, JSON decodes a float
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array"},
    "object": {"type": "object"},
}


def manual_run_paths(generic: dict[str, Any], playbooks: list[Playbook]) -> dict[str, Any]:
    """`POST /api/playbooks/<name>/runs` for each playbook, its body's `inputs` described exactly (types, required
    inputs, nothing else)."""
    paths: dict[str, Any] = {}
    for playbook in playbooks:
        inputs = {
            "type": "object",
            "properties": {
                name: {**INPUT_SCHEMAS[spec.type], "description": spec.description}
                for name, spec in playbook.inputs.items()
            },
            "required": sorted(name for name, spec in playbook.inputs.items() if spec.required),
            "additionalProperties": False,
        }
        body = {
            "type": "object",
            "properties": {
                "inputs": inputs,
                "entity": {"anyOf": [{"type": "string", "maxLength": 512}, {"type": "null"}]},
                "dry_run": {"type": "boolean"},
            },
            "required": ["inputs"] if inputs["required"] else [],
            "additionalProperties": False,
        }
        operation = {
            **generic,
            "operationId": f"start_run_{playbook.name}",
            "summary": f"Start a manual run of {playbook.name}",
            "parameters": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        }
        paths[f"/api/playbooks/{playbook.name}/runs"] = {"post": operation}
    return paths


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
