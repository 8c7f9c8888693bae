"""Playbooks tested like code, planned before they act, and back-tested on stored findings.

Everything here runs the real engine on a scratch SQLite store, with actions replaced at the call boundary:
`playbook test` returns the results a test case states, `plan` and `backtest` return what each call would do.
No network is used and nothing outside the scratch store changes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import Field

from custodes.config import DatabaseSettings, PlaybookSettings, ResponderSettings
from custodes.errors import CustodesError
from custodes.model import Finding, Run, RunStatus, Severity, utcnow
from custodes.playbooks.loader import LoadedPlaybook
from custodes.playbooks.runner import Invoker, Runner
from custodes.playbooks.schema import SeverityName, Strict
from custodes.responder.registry import ActionContext, ActionError, ActionSpec, Registry
from custodes.store import Store
from custodes.yamlfile import load_yaml

TESTER = "playbook-test"


class StatedError(Strict):
    """An action failure a test case states."""

    code: str | None = None
    message: str = "stated failure"
    retryable: bool = False


class StatedFinding(Strict):
    """The finding that triggers a test case."""

    rule_id: str = "test-rule"
    title: str = "test finding"
    severity: SeverityName = "high"
    entity: str | None = None
    tags: list[str] = Field(default_factory=list)
    source: str | None = None
    count: int = 1


class ExpectedCall(Strict):
    """A call that must have been made: the action and (a subset of) its arguments."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Expect(Strict):
    """What a test case asserts."""

    status: Literal["succeeded", "failed", "waiting"] | None = None
    steps: dict[str, Literal["succeeded", "failed", "skipped", "waiting", "running", "pending"]] = Field(
        default_factory=dict
    )
    calls: list[ExpectedCall] = Field(default_factory=list)
    not_called: list[str] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)


class TestCase(Strict):
    """One test: a trigger, stated action results (by step id or action name), decisions, expectations."""

    name: str
    finding: StatedFinding | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = TESTER
    results: dict[str, dict[str, Any]] = Field(default_factory=dict, description="step id or action -> result")
    errors: dict[str, StatedError] = Field(default_factory=dict, description="step id or action -> failure")
    approve: dict[str, list[str]] = Field(default_factory=dict, description="step id -> approvers")
    deny: dict[str, str] = Field(default_factory=dict, description="step id -> who denies")
    expect: Expect


class TestFile(Strict):
    """A `<playbook>.tests.yaml` file."""

    playbook: str
    cases: list[TestCase] = Field(min_length=1)


@dataclass(slots=True)
class Call:
    """One action call the engine made during a test."""

    step: str | None
    action: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class CaseResult:
    """A test case's outcome: the failures (empty when it passed), and the run it made."""

    file: Path
    name: str
    failures: list[str] = field(default_factory=list)
    run: Run | None = None

    @property
    def ok(self) -> bool:
        """Whether every expectation held."""
        return not self.failures


def _finding(stated: StatedFinding, index: int) -> Finding:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Finding(
        id=f"test-finding-{index}",
        dedup_key=f"test-{index}",
        detector="test",
        rule_id=stated.rule_id,
        title=stated.title,
        severity=Severity.parse(stated.severity),
        entity=stated.entity,
        event_ids=[],
        tags=stated.tags,
        first_seen=now,
        last_seen=now,
        source=stated.source,
        count=stated.count,
    )


async def describe_only(spec: ActionSpec, ctx: ActionContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """An invoker that calls nothing and says what the call would do (plans and back-tests)."""
    return {"changed": False, "dry_run": True, "would": spec.describe(arguments)}


@asynccontextmanager
async def scratch_runner(
    registry: Registry,
    playbooks: Sequence[LoadedPlaybook],
    invoke: Invoker,
    *,
    settings: ResponderSettings | None = None,
    engine: PlaybookSettings | None = None,
) -> AsyncIterator[Runner]:
    """A runner on a throwaway SQLite store, calling actions through `invoke`."""
    with tempfile.TemporaryDirectory(prefix="custodes-") as folder:
        store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{Path(folder) / 'scratch.db'}"))
        try:
            async with aiohttp.ClientSession() as http:
                yield Runner(
                    store,
                    registry,
                    settings or ResponderSettings(),
                    http,
                    playbooks=playbooks,
                    engine=engine,
                    invoke=invoke,
                    worker="scratch",
                )
        finally:
            await store.close()


def cases_file_for(playbook_file: Path) -> Path | None:
    """The `<name>.tests.yaml` file next to a playbook, if there is one."""
    for suffix in (".tests.yaml", ".tests.yml"):
        candidate = playbook_file.with_name(playbook_file.stem + suffix)
        if candidate.exists():
            return candidate
    return None


async def run_tests(
    file: Path, playbooks: Sequence[LoadedPlaybook], registry: Registry, settings: ResponderSettings | None = None
) -> list[CaseResult]:
    """Run every case of a test file against the playbook it names."""
    doc = load_yaml(file)
    spec = doc.validate(TestFile)
    loaded = next((p for p in playbooks if p.playbook.name == spec.playbook), None)
    if loaded is None:
        raise CustodesError.at(file, f"no playbook named {spec.playbook!r} is loaded", line=1, column=1)
    return [
        await _case(file, loaded, playbooks, registry, case, index, settings) for index, case in enumerate(spec.cases)
    ]


async def _case(
    file: Path,
    loaded: LoadedPlaybook,
    playbooks: Sequence[LoadedPlaybook],
    registry: Registry,
    case: TestCase,
    index: int,
    settings: ResponderSettings | None,
) -> CaseResult:
    calls: list[Call] = []

    async def stated(spec: ActionSpec, ctx: ActionContext, arguments: dict[str, Any]) -> dict[str, Any]:
        step = await _step_of(runner, ctx)
        calls.append(Call(step, spec.name, arguments))
        base = step.split("[")[0] if step else None
        for key in (step, base, spec.name):
            if key is not None and key in case.errors:
                error = case.errors[key]
                raise ActionError(error.message, code=error.code, retryable=error.retryable)
        for key in (step, base, spec.name):
            if key is not None and key in case.results:
                return dict(case.results[key])
        return {}

    result = CaseResult(file, case.name)
    engine = PlaybookSettings(max_destructive_per_hour=1_000_000)
    async with scratch_runner(registry, playbooks, stated, settings=settings, engine=engine) as runner:
        finding = _finding(case.finding, index) if case.finding else None
        try:
            run = await runner.start_manual(loaded, case.inputs, requested_by=case.requested_by, finding=finding)
            decided: set[str] = set()
            while run.status is RunStatus.WAITING:
                waiting = [s for s in run.steps if s.status is RunStatus.WAITING and s.step_id not in decided]
                step = next((s for s in waiting if s.step_id in case.approve or s.step_id in case.deny), None)
                if step is None or step.plan_hash is None:
                    break
                decided.add(step.step_id)
                if step.step_id in case.deny:
                    run = await runner.decide(
                        run.id, step.step_id, case.deny[step.step_id], approve=False, plan_hash=step.plan_hash
                    )
                    continue
                for person in case.approve[step.step_id]:
                    run = await runner.decide(run.id, step.step_id, person, approve=True, plan_hash=step.plan_hash)
        except CustodesError as exc:
            result.failures.append(f"the run could not go on: {exc}")
            return result
    result.run = run
    result.failures = _check(case.expect, run, calls)
    return result


async def _step_of(runner: Runner, ctx: ActionContext) -> str | None:
    async with runner.store.transaction() as tx:
        run = await tx.get_run(ctx.run_id) if ctx.run_id else None
    if run is None:
        return None
    return next((s.step_id for s in run.steps if s.idempotency_key == ctx.idempotency_key), None)


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def _check(expect: Expect, run: Run, calls: list[Call]) -> list[str]:
    failures: list[str] = []
    if expect.status is not None and run.status.value != expect.status:
        failures.append(f"run status is {run.status.value}, expected {expect.status} ({run.error or 'no error'})")
    statuses = {s.step_id: s.status.value for s in run.steps}
    for step, status in expect.steps.items():
        if statuses.get(step, "pending") != status:
            failures.append(f"step {step} is {statuses.get(step, 'not run')}, expected {status}")
    for wanted in expect.calls:
        if not any(c.action == wanted.action and _subset(wanted.with_, c.arguments) for c in calls):
            made = "; ".join(f"{c.action}({c.arguments})" for c in calls) or "none"
            failures.append(f"no call {wanted.action} with {wanted.with_} (calls: {made})")
    for action in expect.not_called:
        if any(c.action == action for c in calls):
            failures.append(f"{action} was called")
    if expect.outputs and not _subset(expect.outputs, run.outputs or {}):
        failures.append(f"outputs are {run.outputs}, expected {expect.outputs}")
    return failures


@dataclass(slots=True)
class StepFiring:
    """How often a step would act in a back-test, and against whom."""

    fired: int = 0
    skipped: int = 0
    failed: int = 0
    targets: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class BacktestReport:
    """What a draft playbook would have done over stored findings."""

    findings: int = 0
    matched: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    steps: dict[str, StepFiring] = field(default_factory=dict)


async def backtest(
    store: Store,
    loaded: LoadedPlaybook,
    registry: Registry,
    *,
    days: float,
    playbooks: Sequence[LoadedPlaybook] = (),
) -> BacktestReport:
    """Replay the last `days` of stored findings through a playbook in dry run (nothing is called)."""
    async with store.transaction() as tx:
        found = await tx.findings_since(utcnow() - timedelta(days=days))
    report = BacktestReport(findings=len(found))
    report.steps = {step.id: StepFiring() for step in loaded.playbook.steps}
    trigger = loaded.playbook.trigger.findings
    async with scratch_runner(registry, [*playbooks, loaded], describe_only) as runner:
        for finding in found:
            if trigger is None or not trigger.matches(finding):
                continue
            report.matched += 1
            async with store.transaction() as tx:
                events = await tx.get_events(finding.event_ids)
            async with runner.store.transaction() as tx:
                await tx.insert_events(events)
            run = await runner.start_manual(
                loaded, {}, requested_by="backtest", finding=finding, entity=finding.entity, dry_run=True
            )
            report.runs[run.status.value] += 1
            for record in run.steps:
                base = record.step_id.split("[")[0]
                firing = report.steps.get(base)
                if firing is None:
                    continue
                if record.status is RunStatus.SUCCEEDED and "[" not in record.step_id:
                    firing.fired += 1
                elif record.status is RunStatus.SKIPPED:
                    firing.skipped += 1
                elif record.status is RunStatus.FAILED:
                    firing.failed += 1
                if record.target and record.status is RunStatus.SUCCEEDED:
                    firing.targets[record.target] += 1
    return report


def parse_inputs(pairs: Sequence[str]) -> Mapping[str, Any]:
    """`name=value` pairs, values read as YAML scalars (so 3 is a number and true a boolean)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CustodesError(f"--input takes name=value, not {pair!r}")
        parsed[name.strip()] = yaml.load(value) if value.strip() else value
    return parsed
