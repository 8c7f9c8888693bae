"""Changing what runs: validate a playbook before it is deployed; enable or disable playbooks and rules.

Toggles are kept in the store (read again at every start) and applied at once: a disabled playbook is not started
by any trigger, a disabled rule raises no findings.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from custodes.errors import CustodesError, Problem
from custodes.playbooks.loader import check
from custodes.responder import catalog
from custodes.server.endpoints import ApiError, Call, Model, NoInput, endpoint
from custodes.toggles import Kind, set_toggle
from custodes.yamlfile import parse_yaml

MAX_PLAYBOOK_CHARS = 50_000
"""Far above any real playbook, and within `server.max_body_bytes` however the text is escaped."""


class PlaybookSource(Model):
    """A playbook's YAML text to check."""

    yaml: str = Field(max_length=MAX_PLAYBOOK_CHARS, description="the playbook file's content")
    name: str | None = Field(
        default=None, min_length=1, max_length=256, description="its file name, used in the positions of problems"
    )


class ProblemOut(Model):
    """One located problem of a playbook."""

    line: int | None
    column: int | None
    field: str | None = Field(description="the dotted path of the field, when known")
    message: str


class Validation(Model):
    """Whether a playbook would load, and what is wrong with it."""

    valid: bool
    problems: list[ProblemOut]


class Toggle(Model):
    """A playbook or rule as now switched."""

    kind: Kind
    name: str
    enabled: bool


def _validate(source: PlaybookSource, secrets: list[str], receivers: list[str]) -> list[Problem]:
    file = source.name or "<playbook>"
    try:
        document = parse_yaml(source.yaml, file)
    except CustodesError as exc:
        return exc.problems
    return check(document, catalog, secrets=secrets, receivers=receivers)[1]


@endpoint(
    "POST",
    "/api/playbooks/validate",
    role="analyst",
    summary="Validate a playbook",
    body=PlaybookSource,
    response=Validation,
    tags=("catalog",),
)
async def validate_playbook(call: Call[NoInput, PlaybookSource]) -> Validation:
    """Parse and check a playbook as loading would (schema, actions and their arguments, the step graph,
    expressions, secrets and webhook receivers of this configuration); nothing is stored."""
    settings = call.services.settings
    problems = await asyncio.to_thread(
        _validate, call.body, sorted(settings.playbooks.secrets), sorted(settings.webhooks)
    )
    return Validation(
        valid=not problems,
        problems=[
            ProblemOut(line=p.location.line, column=p.location.column, field=p.location.field, message=p.message)
            for p in problems
        ],
    )


async def _toggle(call: Call[NoInput, NoInput], kind: Kind, *, enabled: bool) -> Toggle:
    name = call.request.match_info["name" if kind == "playbook" else "id"]
    pipeline = call.services.pipeline
    if kind == "playbook":
        if name not in {loaded.playbook.name for loaded in pipeline.playbooks}:
            raise ApiError(404, "not_found", f"no playbook {name!r} is loaded")
        disabled = pipeline.disabled_playbooks
    else:
        if name not in {rule.id for rule in call.services.rules.rules}:
            raise ApiError(404, "not_found", f"no rule {name!r} is loaded")
        disabled = pipeline.disabled_rules
    was = name not in disabled
    async with call.services.store.transaction() as tx:
        await set_toggle(tx, kind, name, enabled=enabled, by=f"api:{call.caller}")
        await tx.audit(
            f"api:{call.caller}",
            f"{kind}.{'enable' if enabled else 'disable'}",
            name,
            {"role": call.role, "from": was, "to": enabled},
        )
    if enabled:
        disabled.discard(name)
    else:
        disabled.add(name)
    return Toggle(kind=kind, name=name, enabled=enabled)


@endpoint(
    "POST",
    "/api/playbooks/{name}/enable",
    role="admin",
    summary="Enable a playbook",
    response=Toggle,
    tags=("catalog",),
)
async def enable_playbook(call: Call[NoInput, NoInput]) -> Toggle:
    """Let the playbook's triggers start it again; audited (`playbook.enable`)."""
    return await _toggle(call, "playbook", enabled=True)


@endpoint(
    "POST",
    "/api/playbooks/{name}/disable",
    role="admin",
    summary="Disable a playbook",
    response=Toggle,
    tags=("catalog",),
)
async def disable_playbook(call: Call[NoInput, NoInput]) -> Toggle:
    """No trigger starts the playbook until it is enabled (runs under way go on); audited (`playbook.disable`)."""
    return await _toggle(call, "playbook", enabled=False)


@endpoint(
    "POST",
    "/api/rules/{id}/enable",
    role="admin",
    summary="Enable a rule",
    response=Toggle,
    tags=("catalog",),
)
async def enable_rule(call: Call[NoInput, NoInput]) -> Toggle:
    """The rule's matches raise findings again; audited (`rule.enable`)."""
    return await _toggle(call, "rule", enabled=True)


@endpoint(
    "POST",
    "/api/rules/{id}/disable",
    role="admin",
    summary="Disable a rule",
    response=Toggle,
    tags=("catalog",),
)
async def disable_rule(call: Call[NoInput, NoInput]) -> Toggle:
    """The rule's matches raise no findings until it is enabled; audited (`rule.disable`)."""
    return await _toggle(call, "rule", enabled=False)
