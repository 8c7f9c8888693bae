"""The playbook format, as pydantic models. `custodes playbook schema` prints it as JSON Schema."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from custodes.hunts.definition import cron_trigger
from custodes.model import Finding, Severity

SeverityName = Literal["informational", "low", "medium", "high", "critical"]
IDENTIFIER = r"^[a-z][a-z0-9_]*$"
PLAYBOOK_NAME = r"^[a-z][a-z0-9_-]*$"
CONTEXT_NAMES = frozenset({"finding", "entity", "events", "steps", "run", "playbook", "inputs", "secrets"})
WEBHOOK_NAMES = frozenset({"record", "event", "receiver"})
"""Variables of a webhook trigger's input expressions: the raw record, its envelope and the receiver's name."""
SCHEDULE_NAMES = frozenset({"slot", "playbook"})
"""Variables of a schedule trigger's input expressions: the slot (ISO 8601, UTC) and the playbook."""
ITEM_NAMES = frozenset({"item", "index"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: write seconds (90) or a number with s, m, h or d (30m)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?[smhd]?$"},
            ],
            "description": "seconds, or a number with a unit: 90s, 30m, 4h, 1d",
        }
    ),
]


class Strict(BaseModel):
    """Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FindingTrigger(Strict):
    """Start a run for findings that match every criterion given (an empty list matches anything)."""

    min_severity: SeverityName | None = Field(default=None, description="lowest severity that triggers")
    rules: list[str] = Field(default_factory=list, description="rule ids; any of them")
    tags: list[str] = Field(default_factory=list, description="tags (e.g. attack.exfiltration); any of them")
    sources: list[str] = Field(default_factory=list, description="configured source names; any of them")
    min_entity_risk: float | None = Field(
        default=None,
        ge=0,
        description="lowest behaviour-scoring risk of the finding's entity (its latest scored day) that triggers",
    )

    def matches(self, finding: Finding) -> bool:
        """Whether a finding satisfies this trigger."""
        if self.min_severity is not None and finding.severity < Severity.parse(self.min_severity):
            return False
        if self.rules and finding.rule_id not in self.rules:
            return False
        if self.tags and not {tag.lower() for tag in self.tags} & {tag.lower() for tag in finding.tags}:
            return False
        return not self.sources or finding.source in self.sources


class WebhookTrigger(Strict):
    """Start a run for each record a configured webhook receiver accepts (once per record)."""

    receiver: str = Field(min_length=1, description="the webhook receiver's name (a key of `webhooks:`)")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="input name -> expression over record (the raw record), event (its envelope) and receiver",
    )


class ScheduleTrigger(Strict):
    """Start a run on a cron schedule, once per slot across restarts and processes."""

    cron: str = Field(description="minute hour day month day-of-week; 6 fields = seconds first")
    timezone: str = Field(default="UTC", description="IANA time zone the cron is read in")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="input name -> value or expression over slot (ISO 8601, UTC) and playbook"
    )

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleTrigger:
        cron_trigger(self.cron, self.timezone)
        return self


class Trigger(Strict):
    """What starts a playbook: matching findings, webhook records, a schedule, and/or a person."""

    findings: FindingTrigger | None = Field(default=None, description="start for each matching new finding")
    webhook: WebhookTrigger | None = Field(default=None, description="start for each record a receiver accepts")
    schedule: ScheduleTrigger | None = Field(default=None, description="start on a cron schedule")
    manual: bool = Field(default=False, description="may be started by hand with `custodes playbook run`")

    @model_validator(mode="after")
    def _something_triggers(self) -> Trigger:
        if self.findings is None and self.webhook is None and self.schedule is None and not self.manual:
            raise ValueError("a trigger needs 'findings', 'webhook', 'schedule' or 'manual: true'")
        return self


class InputSpec(Strict):
    """A typed input of the playbook, available as `inputs.<name>`."""

    type: Literal["string", "integer", "number", "boolean", "list", "object"] = "string"
    required: bool = False
    default: Any = None
    description: str = ""


class Retry(Strict):
    """Try a failing action again: exponential backoff from `backoff` seconds, capped, with jitter."""

    attempts: int = Field(default=3, ge=1, le=20, description="total attempts, the first included")
    backoff: float = Field(default=1.0, ge=0, description="first wait in seconds; doubles each attempt")
    max_backoff: float = Field(default=60.0, ge=0, description="longest single wait in seconds")
    jitter: bool = Field(default=True, description="wait a random time up to the computed backoff")
    on: list[str] = Field(
        default_factory=lambda: ["retryable", "timeout"],
        description="errors to retry: 'retryable' (throttling, 5xx, connection), 'timeout', 'any', or error codes",
    )

    def applies(self, code: str | None, retryable: bool) -> bool:
        """Whether an error with this code (and retryable flag) is retried."""
        return "any" in self.on or (retryable and "retryable" in self.on) or (code is not None and code in self.on)


class Approval(Strict):
    """People must approve the step's exact plan before it runs."""

    approvers: list[str] = Field(default_factory=list, description="who may approve; empty: anyone")
    count: int = Field(default=1, ge=1, description="how many distinct approvals are needed")
    expires_after: Duration = Field(default=86400.0, description="how long the request stays open")
    on_expiry: Literal["fail", "skip"] = Field(default="fail", description="what an unanswered request does")

    @model_validator(mode="after")
    def _enough_approvers(self) -> Approval:
        if self.approvers and len(set(self.approvers)) < self.count:
            raise ValueError(f"{self.count} approvals are needed but only {len(set(self.approvers))} approvers listed")
        return self


class GotoStep(Strict):
    """On failure, run this handler step, then fail the run."""

    goto: str = Field(pattern=IDENTIFIER)


class HandlerPlaybook(Strict):
    """On failure, run this playbook (`name@version`) with inputs run_id, step and error, then fail the run."""

    playbook: str


OnError = Literal["fail", "continue"] | GotoStep | HandlerPlaybook


class Step(Strict):
    """One action call, or one sub-playbook run. Strings in `with` may hold expressions over the run's context."""

    id: str = Field(pattern=IDENTIFIER, description="unique step id, used as steps.<id> in expressions")
    name: str | None = Field(default=None, description="what the step does, for people")
    uses: str | None = Field(default=None, description="the action to call, e.g. okta.suspend_user")
    playbook: str | None = Field(default=None, description="a sub-playbook to run, pinned: name@version")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="arguments (or sub-playbook inputs)")
    if_: str | None = Field(default=None, alias="if", description="expression; the step runs only when true")
    needs: list[str] = Field(default_factory=list, description="steps that must finish first")
    join: Literal["all", "any"] = Field(default="all", description="run when all needs succeeded, or any of them")
    for_each: str | None = Field(default=None, description="expression giving a list; one call per item (item, index)")
    concurrency: int = Field(default=1, ge=1, le=64, description="for_each: items in flight at once")
    retry: Retry | None = None
    timeout: Duration | None = Field(default=None, description="longest time one attempt may take")
    on_error: OnError = Field(default="fail", description="fail, continue, {goto: step} or {playbook: name@version}")
    approval: Approval | None = None

    @field_validator("if_", "for_each")
    @classmethod
    def _bare_expression(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "{{" in value:
            key = "if" if info.field_name == "if_" else info.field_name
            raise ValueError(f"'{key}' is a bare expression: write `entity is not none` without {{{{ }}}}")
        return value

    @field_validator("playbook")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z][a-z0-9_-]*@[^@\s]+", value):
            raise ValueError("a sub-playbook is pinned to a version: write name@version (e.g. notify-soc@1)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.uses is None) == (self.playbook is None):
            raise ValueError("a step has exactly one of 'uses' (an action) or 'playbook' (name@version)")
        return self

    @property
    def target_name(self) -> str:
        """What the step calls: an action name or `playbook:name@version`."""
        return self.uses if self.uses is not None else f"playbook:{self.playbook}"


class Playbook(Strict):
    """A response playbook."""

    name: str = Field(pattern=PLAYBOOK_NAME, description="unique name")
    version: str = Field(default="1", description="version, recorded on every run")
    description: str = ""
    enabled: bool = True
    dry_run: bool = Field(default=False, description="describe actions instead of performing them")
    entity_lock: bool = Field(
        default=True, description="one run at a time per entity: later runs for the same entity queue"
    )
    max_runs_per_hour: int | None = Field(
        default=None,
        ge=0,
        description="runs its findings and webhook records start in any rolling hour (0: no cap; default "
        "playbooks.max_runs_per_hour); later starts wait in the outbox, none is dropped",
    )
    trigger: Trigger
    inputs: dict[str, InputSpec] = Field(default_factory=dict, description="typed inputs, as inputs.<name>")
    steps: list[Step] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict, description="name -> expression, evaluated at the end")

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in value:
            if not re.fullmatch(IDENTIFIER, name):
                raise ValueError(f"input name {name!r} must be lower case letters, digits and _")
        return value

    @property
    def ref(self) -> str:
        """`name@version`, as sub-playbook steps pin it."""
        return f"{self.name}@{self.version}"


INPUT_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "list": list,
    "object": dict,
}


def input_problems(playbook: Playbook, given: dict[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with given inputs, as (input name, message): unknown, missing required, wrong type."""
    problems = [(name, "is not a declared input") for name in sorted(set(given) - set(playbook.inputs))]
    for name, spec in playbook.inputs.items():
        if name in given:
            value = _integral(given[name]) if spec.type == "integer" else given[name]
            wrong_bool = isinstance(value, bool) and spec.type in {"integer", "number"}
            if not isinstance(value, INPUT_TYPES[spec.type]) or wrong_bool:
                problems.append((name, f"must be of type {spec.type}, not {type(value).__name__}"))
            elif isinstance(value, int) and spec.type == "integer" and not -(2**63) <= value < 2**63:
                problems.append((name, "must be a 64-bit integer"))
        elif spec.required:
            problems.append((name, "is required"))
    return problems


def bind_inputs(playbook: Playbook, given: dict[str, Any]) -> dict[str, Any]:
    """Check given inputs against the declared ones (types, required, unknown) and apply defaults."""
    problems = input_problems(playbook, given)
    if problems:
        raise ValueError("; ".join(f"input {name!r} {message}" for name, message in problems))
    return {
        name: _integral(given[name]) if name in given and spec.type == "integer" else given.get(name, spec.default)
        for name, spec in playbook.inputs.items()
    }


def _integral(value: Any) -> Any:
    """A whole float that is exact (JSON `2016.0`) as the integer it is; anything else unchanged (a float
    beyond 2**53 stands for many integers)."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value


def json_schema() -> str:
    """The published JSON Schema of the playbook format, as indented JSON text."""
    import orjson

    schema = Playbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://custodes.dev/schema/playbook.json"
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
