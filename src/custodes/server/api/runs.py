"""Playbook runs: list and read runs, start a manual run with typed inputs, undo or cancel a run, approve or deny
a step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictBool

from custodes.cases import needtoknow
from custodes.model import Run, RunStatus, StepRecord
from custodes.playbooks.runner import EngineError, person_of
from custodes.playbooks.schema import input_problems
from custodes.server.endpoints import ApiError, Call, Model, Names, NoInput, RevealQuery, endpoint

RunStatusName = Literal["pending", "running", "waiting", "succeeded", "failed", "cancelled"]


class StepOut(Model):
    """A step of a run as recorded."""

    step_id: str
    action: str
    status: str
    target: str | None
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    plan: list[dict[str, Any]] | None
    plan_hash: str | None
    expires_at: datetime | None

    @classmethod
    def of(cls, step: StepRecord, names: Names, people: Sequence[str] = ()) -> StepOut:
        """The API view of a step record; its arguments, plan and result name people, so they are masked
        unless `names` shows real names, and the `people` of its run are pseudonymised in its error."""
        shown = names("probe") == "probe"
        return cls(
            step_id=step.step_id,
            action=step.action,
            status=step.status.value,
            target=names(step.target),
            arguments=step.arguments if shown else dict.fromkeys(step.arguments, "***"),
            result=step.result if shown or step.result is None else dict.fromkeys(step.result, "***"),
            error=_scrub(step.error, [*people, step.target], names),
            attempt=step.attempt,
            started_at=step.started_at,
            finished_at=step.finished_at,
            plan=step.plan if shown else None,
            plan_hash=step.plan_hash,
            expires_at=step.expires_at,
        )


def _strings(values: Mapping[str, Any]) -> list[str]:
    return [value for value in values.values() if isinstance(value, str)]


def _scrub(text: str | None, people: Iterable[str | None], names: Names) -> str | None:
    """`text` with each of these people's names (the run's entity and text inputs, step targets) shown through
    `names`: pseudonyms unless the call reveals names."""
    if text is None:
        return None
    for person in sorted({p for p in people if p and len(p) >= 3}, key=len, reverse=True):
        text = text.replace(person, names(person) or "***")
    return text


class RunOut(Model):
    """A playbook run as the API shows it."""

    id: str
    playbook: str
    playbook_version: str
    status: RunStatusName
    entity: str | None
    finding_id: str | None
    requested_by: str
    dry_run: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    steps: list[StepOut]

    @classmethod
    def of(cls, run: Run, names: Names) -> RunOut:
        """The API view of a stored run, its person shown through `names` (inputs name people too: they are
        shown only when names are)."""
        revealed = names("probe") == "probe"
        people = [run.entity, *_strings(run.inputs)]
        return cls(
            id=run.id,
            playbook=run.playbook,
            playbook_version=run.playbook_version,
            status=run.status.value,
            entity=names(run.entity),
            finding_id=run.finding_id,
            requested_by=run.requested_by,
            dry_run=run.dry_run,
            inputs=run.inputs if revealed else {key: "***" for key in run.inputs},
            outputs=run.outputs if revealed or run.outputs is None else dict.fromkeys(run.outputs, "***"),
            error=_scrub(run.error, [*people, *(step.target for step in run.steps)], names),
            created_at=run.created_at,
            finished_at=run.finished_at,
            steps=[StepOut.of(step, names, [p for p in people if p]) for step in run.steps],
        )


class RunList(Model):
    """Runs, newest first."""

    runs: list[RunOut]


class RunQuery(RevealQuery):
    """Filters for the run list."""

    limit: int = Field(default=50, ge=1, le=500, description="how many runs")
    status: RunStatusName | None = Field(default=None, description="only runs in this status")
    finding: str | None = Field(default=None, description="only runs started by this finding")


class RunRequest(Model):
    """A manual run: the playbook's typed inputs, an optional entity, and dry run."""

    inputs: dict[str, Any] = Field(default_factory=dict, description="the playbook's declared inputs")
    entity: str | None = Field(default=None, max_length=512, description="the person the run is about")
    dry_run: StrictBool = Field(default=False, description="actions describe what they would do instead of doing it")


class UndoRequest(Model):
    """Why a run is undone."""

    comment: str = Field(default="", max_length=4000)


class UndoOut(Model):
    """The run after undo, and the inverse calls made."""

    run: RunOut
    undone: list[StepOut]


class Decision(Model):
    """An approver's decision on a waiting step's plan."""

    step: str = Field(min_length=1, max_length=256, description="the waiting step's id")
    plan_hash: str = Field(min_length=12, max_length=64, description="the plan's hash (at least 12 characters)")
    comment: str = Field(default="", max_length=4000)


async def _names(call: Call[Any, Any]) -> Names:
    """Approvers and admins see runs with names: they decide on exactly what is done to whom. Other roles see
    pseudonyms and masked arguments, unless a privacy role reveals names."""
    if call.role in {"approver", "admin"}:
        return lambda name: name
    return await call.people()


async def _run(call: Call[Any, Any]) -> Run:
    ident = call.request.match_info["id"]
    async with call.services.store.transaction() as tx:
        run = await tx.get_run(ident)
        if run is not None and await needtoknow.conceals(tx, "run", ident, call.caller):
            run = None
    if run is None:
        raise ApiError(404, "not_found", f"no run {ident!r} you may see")
    return run


@endpoint("GET", "/api/runs", role="viewer", summary="List runs", query=RunQuery, response=RunList, tags=("runs",))
async def list_runs(call: Call[RunQuery, NoInput]) -> RunList:
    """Newest first, with their steps."""
    q = call.query
    names = await _names(call)
    async with call.services.store.transaction() as tx:
        found = await tx.list_runs(
            limit=q.limit,
            finding_id=q.finding,
            status=RunStatus(q.status) if q.status else None,
            hide=needtoknow.hidden("run", call.caller),
        )
    return RunList(runs=[RunOut.of(run, names) for run in found])


@endpoint("GET", "/api/runs/{id}", role="viewer", summary="Read a run", response=RunOut, tags=("runs",))
async def get_run(call: Call[NoInput, NoInput]) -> RunOut:
    """One run with its steps, plans and plan hashes."""
    return RunOut.of(await _run(call), await _names(call))


@endpoint(
    "POST",
    "/api/playbooks/{name}/runs",
    role="analyst",
    summary="Start a manual run",
    body=RunRequest,
    response=RunOut,
    status=201,
    tags=("runs",),
    errors={409: "not_manual: the playbook's trigger does not allow manual runs"},
)
async def start_run(call: Call[NoInput, RunRequest]) -> RunOut:
    """Start a playbook whose trigger allows manual runs; inputs are checked against their declared types."""
    name = call.request.match_info["name"]
    loaded = next((item for item in call.services.playbooks if item.playbook.name == name), None)
    if loaded is None:
        raise ApiError(404, "not_found", f"no playbook {name!r} is loaded")
    if not loaded.playbook.trigger.manual:
        raise ApiError(409, "not_manual", f"playbook {name!r} cannot be started by hand (trigger.manual is false)")
    problems = input_problems(loaded.playbook, call.body.inputs)
    if problems:
        field, message = problems[0]
        raise ApiError(400, "invalid_body", f"inputs.{field}: {message}", field=f"inputs.{field}")
    await call.audit(
        "run.request",
        name,
        {
            "inputs": call.services.runner.redact(call.body.inputs),
            "entity": call.body.entity,
            "dry_run": call.body.dry_run,
        },
    )
    try:
        run = await call.services.runner.start_manual(
            loaded,
            call.body.inputs,
            requested_by=f"api:{call.caller}",
            entity=call.body.entity,
            dry_run=call.body.dry_run,
        )
    except EngineError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    return RunOut.of(run, await _names(call))


@endpoint(
    "POST",
    "/api/runs/{id}/undo",
    role="analyst",
    summary="Undo a finished run",
    body=UndoRequest,
    response=UndoOut,
    tags=("runs",),
    errors={409: "conflict: the run has not finished"},
)
async def undo_run(call: Call[NoInput, UndoRequest]) -> UndoOut:
    """Call the inverse of every succeeded step that changed something, newest first, once."""
    run = await _run(call)
    await call.audit("run.undo.request", run.id, {"comment": call.body.comment})
    try:
        undone = await call.services.runner.undo(run.id, f"api:{call.caller}")
    except EngineError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return UndoOut(
        run=RunOut.of(await _run(call), await _names(call)),
        undone=[StepOut.of(step, await _names(call)) for step in undone],
    )


class CancelRequest(Model):
    """Why a run is cancelled."""

    comment: str = Field(default="", max_length=4000)


@endpoint(
    "POST",
    "/api/runs/{id}/cancel",
    role="analyst",
    summary="Cancel a run",
    body=CancelRequest,
    response=RunOut,
    tags=("runs",),
    errors={409: "conflict: the run has already finished"},
)
async def cancel_run(call: Call[NoInput, CancelRequest]) -> RunOut:
    """A pending or waiting run is cancelled at once; a running run stops before its next step (409 when the run
    has finished)."""
    run = await _run(call)
    await call.audit("run.cancel.request", run.id, {"comment": call.body.comment})
    try:
        cancelled = await call.services.runner.cancel(run.id, f"api:{call.caller}")
    except EngineError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return RunOut.of(cancelled, await _names(call))


async def _decide(call: Call[NoInput, Decision], *, approve: bool) -> RunOut:
    run = await _run(call)
    person = call.caller
    if person_of(person) == person_of(run.requested_by):
        raise ApiError(403, "separation_of_duties", f"{call.caller} requested this run and cannot also decide on it")
    await call.audit(
        "approval.approve" if approve else "approval.deny",
        run.id,
        {"step": call.body.step, "plan_hash": call.body.plan_hash, "comment": call.body.comment},
    )
    try:
        decided = await call.services.runner.decide(
            run.id,
            call.body.step,
            person,
            approve=approve,
            plan_hash=call.body.plan_hash,
            comment=call.body.comment or None,
        )
    except EngineError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return RunOut.of(decided, await _names(call))


@endpoint(
    "POST",
    "/api/runs/{id}/approve",
    role="approver",
    summary="Approve a waiting step's plan",
    body=Decision,
    response=RunOut,
    tags=("runs",),
    errors={409: "conflict: no such step waiting, a plan hash that does not match, already decided, expired"},
)
async def approve_step(call: Call[NoInput, Decision]) -> RunOut:
    """Approve exactly the plan with this hash; the approver must not be the run's requester."""
    return await _decide(call, approve=True)


@endpoint(
    "POST",
    "/api/runs/{id}/deny",
    role="approver",
    summary="Deny a waiting step's plan",
    body=Decision,
    response=RunOut,
    tags=("runs",),
    errors={409: "conflict: no such step waiting, a plan hash that does not match, already decided, expired"},
)
async def deny_step(call: Call[NoInput, Decision]) -> RunOut:
    """Deny the step (its on_error applies); the decider must not be the run's requester."""
    return await _decide(call, approve=False)
