"""Durable playbook runs: a state machine in the store, every transition committed before its side effect.

A run belongs to one worker at a time (`runs.owner`), which refreshes `runs.heartbeat_at` while it works and
with every transition; a transition by a worker that lost the run is refused, so two workers never drive it.
The reaper takes over runs whose worker stopped heartbeating and resumes them from their records: completed
steps are never called again, and a step caught between its request and its commit is called again with the
same idempotency key (actions read current state first, so a change already made reports `changed: false`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from custodes.config import PlaybookSettings, ResponderSettings, Settings, remember_secrets
from custodes.errors import CustodesError
from custodes.model import Event, Finding, Run, RunStatus, StepRecord, stable_id, utcnow
from custodes.playbooks.expressions import ExpressionError, render
from custodes.playbooks.graph import execution_order, handler_ids
from custodes.playbooks.loader import LoadedPlaybook
from custodes.playbooks.schema import GotoStep, HandlerPlaybook, Playbook, Retry, Step, bind_inputs
from custodes.playbooks.secrets import secrets_context
from custodes.redaction import MASK, REDACTOR
from custodes.responder.registry import ActionContext, ActionError, ActionSpec, ArgumentError, Registry
from custodes.store import Store, Transaction
from custodes.store.database import RunNotHeld

log = logging.getLogger(__name__)

KILL_SWITCH = "kill_switch"
CANCEL_PREFIX = "cancel:"
"""Engine control `cancel:<run id>`: a running run stops before its next step."""
UNDO_PREFIX = "undo."
AFTER_CRASH = "requested before a crash; the vendor already showed the change, so it is counted as this run's"
"""Why a resumed call that found nothing to change is recorded as changed (its result is the vendor's state)."""
Invoker = Callable[[ActionSpec, ActionContext, dict[str, Any]], Awaitable[dict[str, Any]]]
Write = Callable[[Transaction], Awaitable[Any]]
Staged = Callable[[Transaction], None]


async def call_action(spec: ActionSpec, ctx: ActionContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a registered action (the default invoker; `custodes playbook test` replaces it)."""
    return await spec.fn(ctx, **arguments)


def person_of(identity: str) -> str:
    """One namespace for people: an API token's name whether the API (`api:NAME`) or the CLI (`NAME`) recorded
    it, compared without case."""
    return identity.removeprefix("api:").strip().casefold()


def worker_id() -> str:
    """A name for this worker process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def finding_context(finding: Finding) -> dict[str, Any]:
    """A finding as expression data (plain values only)."""
    return {
        "id": finding.id,
        "rule_id": finding.rule_id,
        "title": finding.title,
        "severity": finding.severity.label,
        "entity": finding.entity,
        "tags": list(finding.tags),
        "event_ids": list(finding.event_ids),
        "source": finding.source,
        "count": finding.count,
        "detector": finding.detector,
        "first_seen": finding.first_seen.isoformat(),
        "last_seen": finding.last_seen.isoformat(),
    }


def plan_hash(run_id: str, step_id: str, plan: list[dict[str, Any]]) -> str:
    """The hash an approval is given for: the run, the step and exactly what it would do."""
    return hashlib.sha256(orjson.dumps([run_id, step_id, plan], option=orjson.OPT_SORT_KEYS)).hexdigest()


class LostRun(Exception):
    """This worker no longer holds the run (the reaper handed it to another worker)."""


class _Cancelled(Exception):
    """Someone cancelled the run while it was running; it stops before its next step."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


class EngineError(CustodesError):
    """A request to the engine that cannot be done (approving a finished run, undoing an unknown one)."""


@dataclass(slots=True)
class _State:
    run: Run
    playbook: Playbook
    context: dict[str, Any]
    records: dict[str, StepRecord] = field(default_factory=dict)
    owned: bool = True
    pending: list[Staged] = field(default_factory=list)
    """Final step records not committed yet: they go in the run's next transition, before its next effect."""
    queued: str | None = None
    cancelled_by: str | None = None


@dataclass(slots=True)
class _Failure:
    message: str
    code: str | None = None
    retryable: bool = False


class Runner:
    """Starts, executes, resumes, approves and undoes playbook runs, recording everything in the store."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: ResponderSettings,
        http: aiohttp.ClientSession,
        *,
        playbooks: Sequence[LoadedPlaybook] = (),
        engine: PlaybookSettings | None = None,
        actor: str = "custodes",
        invoke: Invoker = call_action,
        worker: str | None = None,
        app: Settings | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.http = http
        self.engine = engine or PlaybookSettings()
        self.actor = actor
        self.invoke = invoke
        self.worker = worker or worker_id()
        self.redact = REDACTOR
        remember_secrets(self.engine.secrets)
        self.playbooks = {item.playbook.ref: item for item in playbooks}
        self.app = app

    # starting runs --------------------------------------------------------------------------------
    async def start(self, loaded: LoadedPlaybook, finding: Finding, *, dry_run: bool = False) -> Run | None:
        """Run a playbook for a finding; None when this playbook already ran for it (trigger dedup)."""
        playbook = loaded.playbook
        run = self._new_run(
            playbook,
            stable_id("run", playbook.name, finding.id),
            entity=finding.entity,
            trigger={"kind": "finding", "finding": finding_context(finding)},
            inputs=bind_inputs(playbook, {}),
            requested_by=self.actor,
            dry_run=dry_run,
        )
        run.finding_id = finding.id
        return await self._launch(run, playbook)

    async def start_webhook(self, loaded: LoadedPlaybook, receiver: str, event: Event) -> Run | None:
        """Run a playbook for a record a webhook receiver accepted; None when it already ran for that record.

        The trigger's input expressions are evaluated over the record as data (`record`, `event`, `receiver`):
        a value in the record holding `{{ ... }}` is inserted as text, never rendered.
        """
        playbook = loaded.playbook
        assert playbook.trigger.webhook is not None
        envelope = {
            "id": event.id,
            "time": event.time.isoformat(),
            "source": event.source,
            "actor": event.actor,
            "action": event.action,
            "target": event.target,
            "outcome": event.outcome.value,
            "src_ip": event.src_ip,
        }
        context = {"record": event.raw, "event": envelope, "receiver": receiver}
        try:
            inputs = bind_inputs(playbook, render(playbook.trigger.webhook.inputs, context))
        except (ExpressionError, ValueError) as exc:
            raise EngineError(f"{playbook.name}: webhook record {event.id}: {exc}") from None
        run = self._new_run(
            playbook,
            stable_id("run", playbook.name, "webhook", event.id),
            entity=event.actor,
            trigger={"kind": "webhook", "receiver": receiver, "event_ids": [event.id], "event": envelope},
            inputs=inputs,
            requested_by=self.actor,
            dry_run=False,
        )
        return await self._launch(run, playbook)

    async def start_scheduled(self, loaded: LoadedPlaybook, slot: datetime) -> Run | None:
        """Run a playbook for a schedule slot; None when a worker already started it for that slot (its run id
        is derived from the slot, so the run's row is the slot's claim)."""
        playbook = loaded.playbook
        assert playbook.trigger.schedule is not None
        at = slot.astimezone(UTC).isoformat()
        context = {"slot": at, "playbook": {"name": playbook.name, "version": playbook.version}}
        try:
            inputs = bind_inputs(playbook, render(playbook.trigger.schedule.inputs, context))
        except (ExpressionError, ValueError) as exc:
            raise EngineError(f"{playbook.name}: schedule slot {at}: {exc}") from None
        run = self._new_run(
            playbook,
            stable_id("run", playbook.name, "schedule", at),
            entity=None,
            trigger={"kind": "schedule", "slot": at, "cron": playbook.trigger.schedule.cron},
            inputs=inputs,
            requested_by=self.actor,
            dry_run=False,
        )
        return await self._launch(run, playbook)

    async def start_manual(
        self,
        loaded: LoadedPlaybook,
        inputs: dict[str, Any],
        *,
        requested_by: str,
        entity: str | None = None,
        finding: Finding | None = None,
        dry_run: bool = False,
    ) -> Run:
        """Start a run by hand (or from a test or back-test) with typed inputs and an optional finding."""
        playbook = loaded.playbook
        try:
            bound = bind_inputs(playbook, inputs)
        except ValueError as exc:
            raise EngineError(f"{playbook.name}: {exc}") from None
        trigger: dict[str, Any] = {"kind": "manual"}
        if finding is not None:
            trigger = {"kind": "finding", "finding": finding_context(finding)}
            entity = entity or finding.entity
        run = self._new_run(
            playbook,
            stable_id("run", playbook.name, "manual", uuid.uuid4().hex),
            entity=entity,
            trigger=trigger,
            inputs=bound,
            requested_by=requested_by,
            dry_run=dry_run,
        )
        started = await self._launch(run, playbook)
        assert started is not None
        return started

    def _new_run(
        self,
        playbook: Playbook,
        run_id: str,
        *,
        entity: str | None,
        trigger: dict[str, Any],
        inputs: dict[str, Any],
        requested_by: str,
        dry_run: bool,
        parent: str | None = None,
    ) -> Run:
        return Run(
            id=run_id,
            playbook=playbook.name,
            playbook_version=playbook.version,
            status=RunStatus.PENDING,
            created_at=utcnow(),
            entity=entity,
            dry_run=dry_run or playbook.dry_run,
            requested_by=requested_by,
            parent_run_id=parent,
            inputs=inputs,
            trigger=trigger,
            definition=playbook.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        )

    async def _launch(self, run: Run, playbook: Playbook) -> Run | None:
        async def write(tx: Transaction) -> tuple[str, list[dict[str, Any]]] | None:
            if not await tx.create_run(run):
                return None
            holder = run.id
            if playbook.entity_lock and run.entity and run.parent_run_id is None:
                holder = await tx.acquire_entity_lock(run.entity.casefold(), run.id)
            details = {"playbook": run.playbook, "version": run.playbook_version, "dry_run": run.dry_run}
            if holder != run.id:
                tx.stage_audit(self.actor, "run.queued", run.id, {**details, "behind": holder, "entity": run.entity})
                return holder, []
            tx.stage_run(run.id, RunStatus.RUNNING, self.worker)
            tx.stage_audit(
                self.actor,
                "run.started",
                run.id,
                {
                    **details,
                    "finding": run.finding_id,
                    "requested_by": run.requested_by,
                    "inputs": self.redact(run.inputs),
                },
            )
            return holder, [event.raw for event in await tx.get_events(_event_ids(run))]

        launched = await self.store.group.run(write)
        if launched is None:
            return None
        holder, events = launched
        if holder != run.id:
            return run
        run.status, run.owner = RunStatus.RUNNING, self.worker
        return await self._drive(run, fresh=(playbook, events))

    # resuming -------------------------------------------------------------------------------------
    async def resume(self, run_id: str) -> Run:
        """Continue a waiting run, a queued run whose entity is free, or a running run whose worker is stale."""
        async with self.store.transaction() as tx:
            run = await tx.get_run(run_id)
            if run is None:
                raise EngineError(f"no run {run_id!r}")
            if run.status is RunStatus.WAITING:
                await tx.set_run_owner(run_id, RunStatus.RUNNING, self.worker)
            elif run.status is RunStatus.PENDING:
                if run.entity and await tx.acquire_entity_lock(run.entity.casefold(), run.id) != run.id:
                    return run
                await tx.set_run_owner(run_id, RunStatus.RUNNING, self.worker)
            elif run.status is RunStatus.RUNNING:
                stale = utcnow() - timedelta(seconds=self.engine.stale_after_seconds)
                if run.heartbeat_at is not None and run.heartbeat_at >= stale and run.owner != self.worker:
                    raise EngineError(f"run {run_id} is being run by {run.owner}")
                if await tx.claim_run(run_id, self.worker, seen_heartbeat=run.heartbeat_at) is None:
                    raise EngineError(f"run {run_id} was taken over by another worker")
            else:
                return run
            await tx.audit(self.actor, "run.resumed", run_id, {"from": run.status.value, "worker": self.worker})
        run.status, run.owner = RunStatus.RUNNING, self.worker
        return await self._drive(run)

    async def reap(self) -> list[Run]:
        """Resume (or, past `max_resumes`, fail) runs whose worker stopped heartbeating; resume runs whose
        approval expired and queued runs whose entity is free. Returns the runs it touched."""
        touched: list[Run] = []
        stale = utcnow() - timedelta(seconds=self.engine.stale_after_seconds)
        async with self.store.transaction() as tx:
            candidates = await tx.stale_runs(stale)
        for run_id, heartbeat in candidates:
            async with self.store.transaction() as tx:
                resumes = await tx.claim_run(run_id, self.worker, seen_heartbeat=heartbeat)
                if resumes is None:
                    continue
                if resumes > self.engine.max_resumes:
                    run = await tx.get_run(run_id)
                    error = f"the run's worker stopped {resumes} times; giving up"
                    await tx.finish_run(run_id, RunStatus.FAILED, error)
                    if run is not None and run.entity:
                        await tx.release_entity_lock(run.entity.casefold(), run_id)
                    await tx.audit(self.actor, "run.abandoned", run_id, {"resumes": resumes})
                    abandoned = await tx.get_run(run_id)
                    if abandoned is not None:
                        touched.append(abandoned)
                    continue
                await tx.audit(self.actor, "run.reaped", run_id, {"resumes": resumes, "worker": self.worker})
                run = await tx.get_run(run_id)
            if run is not None:
                touched.append(await self._drive(run))
        async with self.store.transaction() as tx:
            expired = await tx.expired_waits(utcnow())
            queued = await tx.run_ids(RunStatus.PENDING)
        for run_id in [*expired, *queued]:
            resumed = await self.resume(run_id)
            if resumed.status is not RunStatus.PENDING:
                touched.append(resumed)
        return touched

    # approvals ------------------------------------------------------------------------------------
    async def decide(
        self, run_id: str, step_id: str, person: str, *, approve: bool, plan_hash: str, comment: str | None = None
    ) -> Run:
        """Approve or deny a waiting step's plan (identified by its hash); continue the run once decided.

        `person` is an authenticated identity (an API token's name, `api:` prefix or not): it is recorded as
        `person_of(person)`, so one person counts once towards a quorum and never decides on a run they requested.
        """
        async with self.store.transaction() as tx:
            run = await tx.get_run(run_id)
            if run is None:
                raise EngineError(f"no run {run_id!r}")
            record = next((s for s in run.steps if s.step_id == step_id), None)
            if run.status is not RunStatus.WAITING or record is None or record.status is not RunStatus.WAITING:
                raise EngineError(f"run {run_id} has no step {step_id!r} waiting for approval")
            assert record.plan_hash is not None
            if len(plan_hash) < 12 or not record.plan_hash.startswith(plan_hash):
                raise EngineError(
                    f"the plan hash does not match: step {step_id!r} asks approval for plan {record.plan_hash[:16]}",
                    hint="review the plan with `custodes run show RUN` and pass its hash",
                )
            person = person_of(person)
            if person == person_of(run.requested_by):
                raise EngineError(f"{person} requested this run and cannot also approve it (separation of duties)")
            step = next((s for s in Playbook.model_validate(run.definition).steps if s.id == step_id), None)
            assert step is not None and step.approval is not None
            if step.approval.approvers and person not in {person_of(name) for name in step.approval.approvers}:
                raise EngineError(f"{person} is not an approver of {step_id!r} ({', '.join(step.approval.approvers)})")
            if record.expires_at is not None and utcnow() >= record.expires_at:
                raise EngineError(f"the approval request for {step_id!r} expired at {record.expires_at.isoformat()}")
            decision = "approve" if approve else "deny"
            if not await tx.record_approval(run_id, step_id, person, decision, record.plan_hash, comment):
                raise EngineError(f"{person} already decided on {step_id!r}")
            await tx.audit(
                person,
                "approval.granted" if approve else "approval.denied",
                run_id,
                {"step": step_id, "plan_hash": record.plan_hash, "plan": record.plan, "comment": comment},
            )
            decisions = await tx.approvals_for(run_id, step_id)
        approvals = sum(1 for d in decisions if d["decision"] == "approve")
        if approve and approvals < step.approval.count:
            return run
        return await self.resume(run_id)

    # cancelling -----------------------------------------------------------------------------------
    async def cancel(self, run_id: str, by: str) -> Run:
        """Cancel a run: a pending or waiting run is cancelled at once (releasing its entity lock); a running run
        stops before its next step (the step in flight finishes and is recorded)."""
        queued: str | None = None
        async with self.store.transaction() as tx:
            run = await tx.get_run(run_id)
            if run is None:
                raise EngineError(f"no run {run_id!r}")
            if run.status.final:
                raise EngineError(f"run {run_id} is {run.status.value}: only an unfinished run can be cancelled")
            if run.status is RunStatus.RUNNING:
                await tx.set_control(CANCEL_PREFIX + run_id, {"by": by}, by)
                await tx.audit(by, "run.cancel_requested", run_id, {"step_in_flight": _in_flight(run)})
                return run
            error = f"cancelled by {by}"
            if not await tx.finish_run_from(run_id, run.status, RunStatus.CANCELLED, error):
                raise EngineError(f"run {run_id} changed state while being cancelled; try again")
            await tx.audit(by, "run.cancelled", run_id, {"from": run.status.value})
            if run.entity:
                await tx.release_entity_lock(run.entity.casefold(), run_id)
                if run.parent_run_id is None:
                    queued = await tx.next_pending_run(run.entity.casefold())
            cancelled = await tx.get_run(run_id)
        assert cancelled is not None
        if queued is not None:
            await self.resume(queued)
        return cancelled

    # kill switch ----------------------------------------------------------------------------------
    async def set_kill_switch(self, on: bool, by: str) -> None:
        """Stop (or allow again) every action call of every run, everywhere."""
        async with self.store.transaction() as tx:
            await tx.set_control(KILL_SWITCH, on, by)
            await tx.audit(by, "engine.kill_switch", None, {"on": on})

    # undo -----------------------------------------------------------------------------------------
    async def undo(self, run_id: str, by: str) -> list[StepRecord]:
        """Revert a run's changes: call each succeeded step's inverse action, newest first, once (an inverse that
        failed is tried again by the next undo)."""
        async with self.store.transaction() as tx:
            run = await tx.get_run(run_id)
            if run is None:
                raise EngineError(f"no run {run_id!r}")
            if not run.status.final:
                raise EngineError(f"run {run_id} is {run.status.value}; undo a finished run")
            await tx.audit(by, "run.undo", run_id, {})
        if run.dry_run:
            return []
        state = _State(run, Playbook.model_validate(run.definition), {}, {s.step_id: s for s in run.steps}, False)
        done: list[StepRecord] = []
        for record in sorted(run.steps, key=lambda s: (s.position, s.step_id), reverse=True):
            if record.status is not RunStatus.SUCCEEDED or record.step_id.startswith(UNDO_PREFIX):
                continue
            if record.action not in self.registry or (record.result or {}).get("changed") is False:
                continue
            inverse = self.registry.get(record.action).undo
            if inverse is None:
                continue
            if MASK in orjson.dumps(record.arguments).decode():
                raise EngineError(f"step {record.step_id!r} used a secret; undo it by hand")
            spec = self.registry.get(inverse)
            key = UNDO_PREFIX + record.step_id
            earlier = state.records.pop(key, None)
            if earlier is not None and earlier.status is RunStatus.FAILED:
                earlier = replace(earlier, status=RunStatus.PENDING)
            position = 10_000 + record.position
            done.append(await self._call(state, spec, key, position, dict(record.arguments), None, None, earlier))
        await self._commit(state, _nothing)
        return done

    # driving a run --------------------------------------------------------------------------------
    async def _drive(self, run: Run, *, fresh: tuple[Playbook, list[dict[str, Any]]] | None = None) -> Run:
        """Execute a run this worker holds; `fresh` (its playbook and events) for a run just created, which
        has no step records to read back."""
        state = await self._load(run) if fresh is None else self._state(run, fresh[0], fresh[1], [])
        beat = asyncio.create_task(self._beat(run.id))
        try:
            try:
                await self._execute(state)
            except _Cancelled as exc:
                await self._finish(state, RunStatus.CANCELLED, f"cancelled by {exc.by}")
        except LostRun:
            log.warning("run %s was taken over by another worker; %s stops driving it", run.id, self.worker)
        finally:
            beat.cancel()
        state.run.steps = sorted(state.records.values(), key=lambda s: (s.position, s.step_id))
        if state.run.status.final:
            await self._after_finish(state.run, state.queued)
        return state.run

    async def _beat(self, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.engine.heartbeat_seconds)
            async with self.store.transaction() as tx:
                if not await tx.heartbeat(run_id, self.worker):
                    return

    async def _load(self, run: Run) -> _State:
        async with self.store.transaction() as tx:
            stored = await tx.get_run(run.id)
            events = [event.raw for event in await tx.get_events(_event_ids(run))]
        assert stored is not None
        run.steps = stored.steps
        return self._state(run, Playbook.model_validate(run.definition), events, stored.steps)

    def _state(self, run: Run, playbook: Playbook, events: list[dict[str, Any]], records: list[StepRecord]) -> _State:
        context: dict[str, Any] = {
            "finding": run.trigger.get("finding"),
            "entity": run.entity,
            "events": events,
            "steps": {step.id: {"status": "pending", "result": {}, "error": None} for step in playbook.steps},
            "run": {"id": run.id, "dry_run": run.dry_run, "requested_by": run.requested_by},
            "playbook": {"name": playbook.name, "version": playbook.version},
            "inputs": run.inputs,
            "secrets": secrets_context(self.engine.secrets),
        }
        state = _State(run, playbook, context, {s.step_id: s for s in records})
        for record in records:
            self._remember(state, record)
        return state

    def _remember(self, state: _State, record: StepRecord) -> None:
        known = state.context.get("steps")
        if known is not None and record.step_id in known:
            known[record.step_id] = {
                "status": record.status.value,
                "result": record.result or {},
                "error": record.error,
            }

    async def _execute(self, state: _State) -> None:
        handlers = handler_ids(state.playbook.steps)
        for step in execution_order(state.playbook.steps):
            if step.id in handlers:
                continue
            record = await self._step(state, step)
            if record.status is RunStatus.WAITING:
                await self._wait(state)
                return
            if record.status is RunStatus.FAILED and step.on_error != "continue":
                error = f"step {step.id!r} failed: {record.error}"
                if await self._handle_failure(state, step, record):
                    return
                await self._finish(state, RunStatus.FAILED, error)
                return
        await self._finish(state, RunStatus.SUCCEEDED, None)

    async def _handle_failure(self, state: _State, step: Step, record: StepRecord) -> bool:
        """Run the failure's handler step chain or handler playbook; True when the run must wait."""
        by_id = {s.id: s for s in state.playbook.steps}
        visited: set[str] = set()
        current = step
        while isinstance(current.on_error, GotoStep) and current.on_error.goto not in visited:
            visited.add(current.on_error.goto)
            current = by_id[current.on_error.goto]
            handled = await self._step(state, current, as_handler=True)
            if handled.status is RunStatus.WAITING:
                await self._wait(state)
                return True
            if handled.status is not RunStatus.FAILED:
                break
        if isinstance(step.on_error, HandlerPlaybook):
            inputs = {"run_id": state.run.id, "step": step.id, "error": record.error}
            await self._child(state, f"{step.id}.on_error", step.on_error.playbook, inputs, lenient=True)
        return False

    async def _wait(self, state: _State) -> None:
        async def write(tx: Transaction) -> None:
            if await self._cancel_requested(tx, state):
                return
            tx.stage_run(state.run.id, RunStatus.WAITING, None)
            tx.stage_audit(self.actor, "run.waiting", state.run.id, {})

        await self._commit(state, write)
        if state.cancelled_by is not None:
            raise _Cancelled(state.cancelled_by)
        state.run.status, state.run.owner = RunStatus.WAITING, None

    async def _cancel_requested(self, tx: Transaction, state: _State) -> bool:
        """Whether someone asked this run to stop (read in the transition about to commit); sets `cancelled_by`."""
        if not state.owned:  # undo of a finished run
            return False
        request = await tx.get_control(CANCEL_PREFIX + state.run.id)
        state.cancelled_by = str(request.get("by", "someone")) if isinstance(request, dict) else None
        return state.cancelled_by is not None

    async def _finish(self, state: _State, status: RunStatus, error: str | None) -> None:
        outputs: dict[str, Any] | None = None
        if status is RunStatus.SUCCEEDED and state.playbook.outputs:
            try:
                outputs = self.redact(render(state.playbook.outputs, state.context))
            except ExpressionError as exc:
                status, error = RunStatus.FAILED, f"outputs: {exc}"
        error = self.redact.text(error) if error else None
        run = state.run

        async def write(tx: Transaction) -> str | None:
            tx.stage_run(run.id, status, None, error=error, outputs=outputs)
            tx.stage_audit(self.actor, "run.finished", run.id, {"status": status.value, "error": error})
            if not run.entity:
                return None
            await tx.release_entity_lock(run.entity.casefold(), run.id)
            return None if run.parent_run_id is not None else await tx.next_pending_run(run.entity.casefold())

        state.queued = await self._commit(state, write)
        run.status, run.error, run.outputs = status, error, outputs
        run.finished_at, run.owner = utcnow(), None

    async def _after_finish(self, run: Run, queued: str | None) -> None:
        """Start the next run queued on the entity; continue a parent that waited for this child."""
        if queued is not None:
            await self.resume(queued)
        if run.parent_run_id is not None:
            async with self.store.transaction() as tx:
                parent = await tx.get_run(run.parent_run_id)
            if parent is not None and parent.status is RunStatus.WAITING:
                await self.resume(parent.id)

    def _check_owner(self, tx: Transaction, state: _State) -> None:
        if state.owned:
            tx.stage_held(state.run.id, self.worker)

    async def _commit(self, state: _State, write: Write) -> Any:
        """Commit a transition of the run (with its deferred records) and return what `write` returned.

        The transaction is shared with the transitions of other runs waiting at the same moment (group
        commit); it is committed when this returns, so the caller may act on it.
        """
        deferred, state.pending = state.pending, []

        async def unit(tx: Transaction) -> Any:
            self._check_owner(tx, state)
            for earlier in deferred:
                earlier(tx)
            return await write(tx)

        try:
            return await self.store.group.run(unit)
        except RunNotHeld:
            raise LostRun(state.run.id) from None

    def _defer(self, state: _State, record: StepRecord, action: str, details: dict[str, Any]) -> None:
        """Record a step's final state with the run's next transition: nothing happens outside before it.

        A worker that dies in between leaves the step `running`; the run is resumed and the call repeated
        with the same idempotency key, as for a worker that dies between the call and its commit.
        """
        snapshot, run_id = replace(record), state.run.id

        def write(tx: Transaction) -> None:
            tx.stage_step(run_id, snapshot)
            tx.stage_audit(self.actor, action, run_id, details)

        state.pending.append(write)

    # steps ----------------------------------------------------------------------------------------
    async def _step(self, state: _State, step: Step, *, as_handler: bool = False) -> StepRecord:
        existing = state.records.get(step.id)
        if existing is not None and existing.status.final:
            return existing
        position = [s.id for s in state.playbook.steps].index(step.id)
        base = StepRecord(
            step_id=step.id,
            position=position,
            action=step.target_name,
            arguments={},
            status=RunStatus.PENDING,
            idempotency_key=stable_id(state.run.id, step.id, step.target_name),
            started_at=utcnow(),
        )
        record = existing or base
        if not as_handler and step.needs and existing is None:
            done = [state.records[n].status is RunStatus.SUCCEEDED for n in step.needs if n in state.records]
            met = all(done) and len(done) == len(step.needs) if step.join == "all" else any(done)
            if not met:
                return await self._settle(state, record, RunStatus.SKIPPED, error=f"needs not met ({step.join})")
        try:
            if step.if_ is not None and existing is None and not render("{{ " + step.if_ + " }}", state.context):
                return await self._settle(state, record, RunStatus.SKIPPED)
            if step.playbook is not None:
                return await self._sub_playbook(state, step, record)
            assert step.uses is not None
            spec = self.registry.get(step.uses)
            calls = self._calls(state, step, spec, position)
        except (ExpressionError, ArgumentError, KeyError, ValueError) as exc:
            return await self._settle(state, record, RunStatus.FAILED, error=str(exc).strip("'\""))
        if step.approval is not None and not state.run.dry_run:
            record = await self._approval(state, step, record, spec, calls)
            if record.status is not RunStatus.RUNNING:
                return record
        if step.for_each is None:
            key, item_position, arguments = calls[0]
            return await self._call(state, spec, key, item_position, arguments, step.retry, step.timeout, record)
        gate = asyncio.Semaphore(step.concurrency)

        async def one(call: tuple[str, int, dict[str, Any]]) -> StepRecord:
            async with gate:
                return await self._call(state, spec, call[0], call[1], call[2], step.retry, step.timeout)

        outcomes = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # after every item in flight finished (and deferred its record)
        items = [outcome for outcome in outcomes if isinstance(outcome, StepRecord)]
        failed = [item for item in items if item.status is RunStatus.FAILED]
        result = {"items": [item.result for item in items], "count": len(items)}
        error = f"{len(failed)} of {len(items)} items failed: {failed[0].error}" if failed else None
        status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        return await self._settle(state, record, status, result=result, error=error)

    def _calls(
        self, state: _State, step: Step, spec: ActionSpec, position: int
    ) -> list[tuple[str, int, dict[str, Any]]]:
        """Each call the step makes: (record key, position, validated arguments); one per item for for_each."""
        if step.for_each is None:
            return [(step.id, position, spec.validate(spec.render(step.with_, state.context, self.settings)))]
        items = render("{{ " + step.for_each + " }}", state.context)
        if not isinstance(items, list | tuple):
            raise ValueError(f"for_each must give a list, not {type(items).__name__}")
        calls = []
        for index, item in enumerate(items):
            context = {**state.context, "item": item, "index": index}
            calls.append(
                (f"{step.id}[{index}]", position, spec.validate(spec.render(step.with_, context, self.settings)))
            )
        return calls

    def _plan(self, spec: ActionSpec, calls: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            {
                "step": key,
                "action": spec.name,
                "target": self.redact(spec.target_of(arguments)),
                "destructive": spec.destructive,
                "description": self.redact.text(spec.describe(arguments)),
                "arguments": self.redact(arguments),
            }
            for key, _, arguments in calls
        ]

    async def _approval(
        self,
        state: _State,
        step: Step,
        record: StepRecord,
        spec: ActionSpec,
        calls: list[tuple[str, int, dict[str, Any]]],
    ) -> StepRecord:
        """Ask for approval of the step's plan, or read the decisions; RUNNING once approved."""
        assert step.approval is not None
        plan = self._plan(spec, calls)
        digest = plan_hash(state.run.id, step.id, plan)
        if record.status is RunStatus.PENDING:
            record.status, record.plan, record.plan_hash = RunStatus.WAITING, plan, digest
            record.arguments = plan[0]["arguments"] if step.for_each is None else {}
            record.expires_at = utcnow() + timedelta(seconds=step.approval.expires_after)
            details = {
                "step": step.id,
                "plan": plan,
                "plan_hash": digest,
                "approvers": step.approval.approvers,
                "count": step.approval.count,
                "expires_at": record.expires_at.isoformat(),
            }

            async def write(tx: Transaction) -> None:
                tx.stage_step(state.run.id, record)
                tx.stage_audit(self.actor, "approval.requested", state.run.id, details)

            await self._commit(state, write)
            state.records[step.id] = record
            return record
        if record.status is not RunStatus.WAITING:
            return record
        if record.plan_hash != digest:
            return await self._settle(state, record, RunStatus.FAILED, error="the plan changed after it was submitted")
        async with self.store.transaction() as tx:
            decisions = await tx.approvals_for(state.run.id, step.id)
        denied = [d["approver"] for d in decisions if d["decision"] == "deny"]
        approved = [d["approver"] for d in decisions if d["decision"] == "approve" and d["plan_hash"] == digest]
        if denied:
            return await self._settle(state, record, RunStatus.FAILED, error=f"denied by {', '.join(denied)}")
        if len(approved) >= step.approval.count:
            record.status = RunStatus.RUNNING
            return record
        if record.expires_at is not None and utcnow() >= record.expires_at:
            status = RunStatus.FAILED if step.approval.on_expiry == "fail" else RunStatus.SKIPPED
            return await self._settle(state, record, status, error="the approval request expired")
        return record

    async def _settle(
        self,
        state: _State,
        record: StepRecord,
        status: RunStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> StepRecord:
        """Settle a step's final status without calling anything (committed with the run's next transition)."""
        record.status, record.result, record.finished_at = status, self.redact(result), utcnow()
        record.error = self.redact.text(error) if error else None
        self._defer(state, record, "step." + status.value, {"step": record.step_id, "error": record.error})
        state.records[record.step_id] = record
        self._remember(state, record)
        return record

    async def _call(
        self,
        state: _State,
        spec: ActionSpec,
        key: str,
        position: int,
        arguments: dict[str, Any],
        retry: Retry | None,
        limit_seconds: float | None,
        record: StepRecord | None = None,
    ) -> StepRecord:
        """Call one action: commit `running` (guards checked in the same transaction), call, commit the result."""
        run = state.run
        target = spec.target_of(arguments)
        record = state.records.get(key) or record
        interrupted = record is not None and record.status is RunStatus.RUNNING and record.attempt > 0
        """A call requested before a crash: whether it reached the vendor is unknown."""
        if record is None or record.step_id != key:
            record = StepRecord(key, position, spec.name, {}, RunStatus.PENDING, "", started_at=utcnow())
        if record.status.final:
            return record
        record.action, record.arguments = spec.name, self.redact(arguments)
        record.target = None if target is None else self.redact.text(target)
        record.idempotency_key = stable_id(run.id, key, spec.name, target)
        record.destructive = spec.destructive and not run.dry_run
        destructive = record.destructive
        result: dict[str, Any] = {}
        while True:
            record.attempt += 1
            started = utcnow()
            plan = self.redact.text(spec.describe(arguments))

            async def request(tx: Transaction, started: datetime = started, plan: str = plan) -> str | None:
                # Runs again from the top if a shared transaction is rolled back: set every field it uses.
                if await self._cancel_requested(tx, state):
                    return None  # nothing of this call is recorded; the run stops before it
                record.status, record.error, record.started_at = RunStatus.RUNNING, None, started
                record.finished_at, record.destructive = None, destructive
                refusal = await self._guard(tx, spec, record, run.dry_run)
                if refusal is not None:
                    record.status, record.error, record.finished_at = RunStatus.FAILED, refusal, utcnow()
                    record.destructive = False  # refused calls do not count against the hourly cap
                tx.stage_step(run.id, record)
                tx.stage_audit(
                    self.actor,
                    "action.refused" if refusal else "action.request",
                    run.id,
                    {
                        "step": key,
                        "action": spec.name,
                        "target": target,
                        "arguments": record.arguments,
                        "plan": plan,
                        "idempotency_key": record.idempotency_key,
                        "attempt": record.attempt,
                        "error": refusal,
                    },
                )
                return refusal

            refusal = await self._commit(state, request)
            if state.cancelled_by is not None:
                raise _Cancelled(state.cancelled_by)
            state.records[key] = record
            if refusal is not None:
                self._remember(state, record)
                return record
            ctx = ActionContext(
                self.settings,
                self.http,
                record.idempotency_key,
                dry_run=run.dry_run,
                run_id=run.id,
                store=self.store,
                actor=run.requested_by,
                app=self.app,
            )
            failure: _Failure | None = None
            try:
                result = await asyncio.wait_for(self.invoke(spec, ctx, arguments), limit_seconds)
            except ActionError as exc:
                failure = _Failure(f"{exc}" + (f" [{exc.code}]" if exc.code else ""), exc.code, exc.retryable)
            except TimeoutError:
                failure = _Failure(f"no answer within {limit_seconds}s [timeout]", "timeout", False)
            except aiohttp.ClientError as exc:
                failure = _Failure(f"{type(exc).__name__}: {exc}", "connection_error", True)
            if (
                failure is not None
                and retry is not None
                and record.attempt < retry.attempts
                and retry.applies(failure.code, failure.retryable)
            ):
                record.error = self.redact.text(failure.message)
                retrying = replace(record)

                async def retried(tx: Transaction, retrying: StepRecord = retrying) -> None:
                    tx.stage_step(run.id, retrying)
                    tx.stage_audit(self.actor, "action.retry", run.id, {"step": key, "error": retrying.error})

                await self._commit(state, retried)
                await asyncio.sleep(_backoff(retry, record.attempt))
                continue
            break
        record.finished_at = utcnow()
        if failure is None:
            if interrupted and not run.dry_run and result.get("changed") is False:
                result = {**result, "changed": True, "after_crash": AFTER_CRASH}
            record.status, record.result = RunStatus.SUCCEEDED, self.redact(result)
        else:
            record.status, record.result, record.error = RunStatus.FAILED, None, self.redact.text(failure.message)
            log.warning("run %s step %s failed: %s", run.id, key, record.error)
        details = {"step": key, "status": record.status.value, "result": record.result, "error": record.error}
        self._defer(state, record, "action.response", details)
        self._remember(state, record)
        return record

    async def _guard(self, tx: Transaction, spec: ActionSpec, record: StepRecord, dry_run: bool) -> str | None:
        """Why a call must not happen (protected target, kill switch, hourly cap), or None."""
        protected = {account.strip().casefold() for account in self.settings.protected_accounts}
        if spec.destructive and record.target and record.target.strip().casefold() in protected:
            return f"{record.target} is a protected account: Custodes will not act on it [protected_account]"
        if dry_run:
            return None
        if await tx.get_control(KILL_SWITCH):
            return "the kill switch is on: no action runs until it is turned off [kill_switch]"
        if spec.destructive:
            since = utcnow() - timedelta(hours=1)
            used = await tx.destructive_calls_since(since, excluding=record.idempotency_key)
            if used >= self.engine.max_destructive_per_hour:
                cap = self.engine.max_destructive_per_hour
                return f"{used} destructive actions in the last hour reach the cap of {cap} [rate_cap]"
        return None

    # sub-playbooks --------------------------------------------------------------------------------
    async def _sub_playbook(self, state: _State, step: Step, record: StepRecord) -> StepRecord:
        assert step.playbook is not None
        inputs = render(step.with_, state.context)
        child = await self._child(state, step.id, step.playbook, inputs, lenient=False)
        if child is None:
            return await self._settle(state, record, RunStatus.FAILED, error=f"no playbook {step.playbook} is loaded")
        if child.status is RunStatus.WAITING:
            record.status, record.result = RunStatus.WAITING, {"run_id": child.id}
            waiting = replace(record)

            async def write(tx: Transaction) -> None:
                tx.stage_step(state.run.id, waiting)

            await self._commit(state, write)
            state.records[step.id] = record
            return record
        status = RunStatus.SUCCEEDED if child.status is RunStatus.SUCCEEDED else RunStatus.FAILED
        result = {"run_id": child.id, "outputs": child.outputs or {}}
        return await self._settle(state, record, status, result=result, error=child.error)

    async def _child(self, state: _State, key: str, ref: str, inputs: dict[str, Any], *, lenient: bool) -> Run | None:
        """Create (once) and drive a child run of `ref`; None when that playbook is not loaded."""
        loaded = self.playbooks.get(ref)
        if loaded is None:
            return None
        if lenient:
            inputs = {k: v for k, v in inputs.items() if k in loaded.playbook.inputs}
        child_id = stable_id("child", state.run.id, key)
        async with self.store.transaction() as tx:
            child = await tx.get_run(child_id)
        if child is None:
            child = self._new_run(
                loaded.playbook,
                child_id,
                entity=state.run.entity,
                trigger=state.run.trigger,
                inputs=bind_inputs(loaded.playbook, inputs),
                requested_by=state.run.requested_by,
                dry_run=state.run.dry_run,
                parent=state.run.id,
            )
            child.status, child.owner = RunStatus.RUNNING, self.worker
            created = child

            async def write(tx: Transaction) -> None:
                await tx.create_run(created)
                tx.stage_run(child_id, RunStatus.RUNNING, self.worker)
                tx.stage_audit(self.actor, "run.started", child_id, {"playbook": ref, "parent": state.run.id})

            await self._commit(state, write)
            return await self._drive(child)
        if child.status.final or child.status is RunStatus.WAITING:
            return child
        async with self.store.transaction() as tx:
            await tx.set_run_owner(child_id, RunStatus.RUNNING, self.worker)
        return await self._drive(child)


def _in_flight(run: Run) -> list[str]:
    return [step.step_id for step in run.steps if step.status is RunStatus.RUNNING]


def _event_ids(run: Run) -> list[str]:
    """The events behind a run: its finding's, or the webhook record that started it."""
    finding = run.trigger.get("finding") or {}
    ids: list[str] = finding.get("event_ids") or run.trigger.get("event_ids") or []
    return ids


async def _nothing(_tx: Transaction) -> None:
    """A transition that only commits what the run deferred."""


def _backoff(retry: Retry, attempt: int) -> float:
    wait = min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1))
    return random.uniform(0, wait) if retry.jitter else wait
