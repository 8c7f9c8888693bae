"""The nouns every layer shares: events, entities, findings and playbook runs."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class Severity(enum.IntEnum):
    """Sigma levels, ordered so that triggers can compare them."""

    INFORMATIONAL = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str) -> Severity:
        """Parse a Sigma level name (case-insensitive); raise ValueError naming the valid levels."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            valid = ", ".join(level.label for level in cls)
            raise ValueError(f"unknown severity {value!r} (expected one of: {valid})") from None

    @property
    def label(self) -> str:
        """Lower-case name as written in Sigma rules and playbooks."""
        return self.name.lower()


class Outcome(enum.StrEnum):
    """Normalised result of the action an event records."""

    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class LogSource:
    """Sigma logsource triple a source declares for its events."""

    product: str | None = None
    service: str | None = None
    category: str | None = None

    def __str__(self) -> str:
        return "/".join(part or "*" for part in (self.product, self.service, self.category))


@dataclass(slots=True)
class Event:
    """A vendor record kept untouched (`raw`) plus the small envelope Custodes reasons about."""

    id: str
    time: datetime
    source: str
    logsource: LogSource
    raw: dict[str, Any]
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: Outcome = Outcome.UNKNOWN
    src_ip: str | None = None
    bytes: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Entity:
    """A person or a service account, identified across sources."""

    id: str
    kind: str = "person"
    display_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class FindingStatus(enum.StrEnum):
    """Where an analyst is with a finding."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


@dataclass(slots=True)
class Finding:
    """A detection outcome: one rule or model, one entity, the events behind it.

    Findings with the same `dedup_key` inside the deduplication window are merged: the count grows and
    the evidence event ids accumulate instead of a new finding being raised.
    """

    id: str
    dedup_key: str
    detector: str
    rule_id: str
    title: str
    severity: Severity
    entity: str | None
    event_ids: list[str]
    tags: list[str]
    first_seen: datetime
    last_seen: datetime
    source: str | None = None
    count: int = 1
    status: FindingStatus = FindingStatus.OPEN
    description: str | None = None


class RunStatus(enum.StrEnum):
    """Lifecycle of a playbook run and of each of its steps."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to a run or step in this status."""
        return self in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.CANCELLED}


@dataclass(slots=True)
class StepRecord:
    """One step of a run as it was recorded: what was called, with what, and what came back."""

    step_id: str
    position: int
    action: str
    arguments: dict[str, Any]
    status: RunStatus
    idempotency_key: str
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    target: str | None = None
    destructive: bool = False
    plan: list[dict[str, Any]] | None = None
    plan_hash: str | None = None
    expires_at: datetime | None = None


@dataclass(slots=True)
class Run:
    """A playbook run started by a trigger."""

    id: str
    playbook: str
    playbook_version: str
    status: RunStatus
    created_at: datetime
    finding_id: str | None = None
    entity: str | None = None
    dry_run: bool = False
    error: str | None = None
    finished_at: datetime | None = None
    steps: list[StepRecord] = field(default_factory=list)
    requested_by: str = "custodes"
    parent_run_id: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    definition: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    owner: str | None = None
    heartbeat_at: datetime | None = None
    resumes: int = 0


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def stable_id(*parts: object) -> str:
    """A deterministic 32-hex identifier from the given parts (JSON-canonicalised by `json_bytes`)."""
    return hashlib.sha256(json_bytes(parts, orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def as_object(value: Any) -> dict[str, Any]:
    """`value` where it is a JSON object (a dict), else an empty one: a vendor's member read without trusting it."""
    return value if isinstance(value, dict) else {}


def json_value(value: Any) -> Any:
    """The object or list whose JSON text `value` is (a Log Analytics `dynamic` column given as text), else `value`
    as it stands."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def json_object(value: Any) -> dict[str, Any] | None:
    """The JSON object `value` is, or holds as its text (a Log Analytics `dynamic` column, a Splunk `_raw`, an
    integration's `event.original`); None for anything else."""
    found = json_value(value)
    return found if isinstance(found, dict) else None


def json_bytes(value: Any, option: int = 0) -> bytes:
    """`value` as JSON: orjson with `option` (anything else as its `str`), else `json_text` for what orjson refuses (a
    record nested deeper than it writes, 254 levels; an integer beyond 64 bits from a vendor's JSON parser), keys
    sorted when `option` sorts them."""
    try:
        return orjson.dumps(value, option=option, default=str)
    except orjson.JSONEncodeError:
        return json_text(value, sort_keys=bool(option & orjson.OPT_SORT_KEYS)).encode()


class _Literal(str):
    """JSON text already written (a bracket, a separator, a key), as `json_text` stacks it."""


def json_text(value: Any, *, sort_keys: bool = False) -> str:
    """The JSON text of `value` written by a loop, not recursion, so any nesting a JSON decoder accepts is written
    back (the standard library's encoder stops at Python's recursion limit); anything JSON cannot hold as its
    `str`."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Literal:
            out.append(item)
        elif isinstance(item, dict):
            keys = sorted(item, key=str) if sort_keys else list(item)
            out.append("{")
            stack.append(_Literal("}"))
            for index in range(len(keys) - 1, -1, -1):
                stack.append(item[keys[index]])
                stack.append(_Literal(("," if index else "") + json.dumps(str(keys[index])) + ":"))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_Literal("]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append(item[index])
                if index:
                    stack.append(_Literal(","))
        else:
            out.append(json.dumps(item, default=str))
    return "".join(out)
