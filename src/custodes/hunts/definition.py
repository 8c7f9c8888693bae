"""The hunt file format, and loading hunts with every problem reported at its file, line and column."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from custodes.config import Section, Settings
from custodes.errors import CustodesError, Problem
from custodes.yamlfile import YamlDocument, load_yaml

HUNT_KINDS: Final = ("cloudtrail_s3", "cloudtrail_lookup", "elasticsearch", "splunk")
"""Connector kinds a hunt can read."""


class HuntRules(Section):
    """Which rules a hunt runs: rules under `paths` (default: `detection.rules`), narrowed by `ids` and `tags`.

    With neither `ids` nor `tags` every rule under `paths` runs; otherwise a rule runs when its id (or name) is
    in `ids` or it carries one of `tags` (case-insensitive).
    """

    paths: list[Path] = Field(default_factory=list, description="rule files and folders")
    ids: list[str] = Field(default_factory=list, description="rule ids or names")
    tags: list[str] = Field(default_factory=list, description="Sigma tags, e.g. attack.t1562")


class HuntSource(Section):
    """Where a hunt reads: a configured connector of kind cloudtrail_s3, cloudtrail_lookup, elasticsearch or
    splunk (its options say where; the hunt reads the window, not the connector's live position)."""

    connector: str


class Hunt(Section):
    """One hunt: rules, a source, a cron schedule and how far back each run reads."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    enabled: bool = True
    rules: HuntRules = Field(default_factory=HuntRules)
    source: HuntSource
    schedule: str | None = Field(
        default=None, description="cron expression: minute hour day month day-of-week, or 6 fields with seconds first"
    )
    timezone: str = "UTC"
    lookback: timedelta = Field(description="window length: seconds, or ISO 8601 like PT1H")
    push_down: bool = Field(default=True, description="push exactly expressible rules down to the SIEM")

    @field_validator("lookback")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("lookback must be positive")
        return value

    @model_validator(mode="after")
    def _valid_schedule(self) -> Hunt:
        if self.schedule is not None:
            trigger(self)
        return self


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """A cron trigger (5 fields, or 6 with seconds first); ValueError says what is wrong."""
    fields = expression.split()
    try:
        if len(fields) == 6:  # seconds first, as in Quartz and Spring
            names = ("second", "minute", "hour", "day", "month", "day_of_week")
            return CronTrigger(**dict(zip(names, fields, strict=True)), timezone=timezone)
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except (ValueError, LookupError) as exc:
        raise ValueError(f"invalid schedule {expression!r}: {exc}") from None


def trigger(hunt: Hunt) -> CronTrigger:
    """The hunt's cron trigger; ValueError names what is wrong with the expression or time zone."""
    if hunt.schedule is None:
        raise ValueError(f"hunt {hunt.name!r} has no schedule")
    return cron_trigger(hunt.schedule, hunt.timezone)


@dataclass(frozen=True, slots=True)
class LoadedHunt:
    """A validated hunt and the file it came from."""

    hunt: Hunt
    file: Path


def hunt_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Hunt files under the given files and folders, sorted; a missing default folder holds none."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in {".yml", ".yaml"} and p.is_file())
        elif path.exists():
            yield path


def check(doc: YamlDocument, settings: Settings) -> tuple[Hunt | None, list[Problem]]:
    """Validate one hunt document, and that its source names a configured connector of a kind hunts read
    (an enabled hunt's must be configured)."""
    try:
        hunt = doc.validate(Hunt)
    except CustodesError as exc:
        return None, exc.problems
    problems: list[Problem] = []
    entry = settings.connectors.get(hunt.source.connector)
    where = doc.locate(("source", "connector"), at_value=True)
    if entry is None and not hunt.enabled:
        return hunt, problems  # a disabled hunt may name a connector configured later (the shipped examples do)
    if entry is None:
        known = ", ".join(sorted(settings.connectors)) or "none configured"
        problems.append(Problem(where, f"unknown connector {hunt.source.connector!r} (configured: {known})"))
    elif entry.kind not in HUNT_KINDS:
        problems.append(
            Problem(where, f"a {entry.kind} connector cannot be hunted (hunts read: {', '.join(HUNT_KINDS)})")
        )
    return (None if problems else hunt), problems


def load_hunts(paths: Sequence[Path], settings: Settings) -> list[LoadedHunt]:
    """Load and validate every hunt under `paths`; raise one CustodesError listing every problem."""
    loaded: list[LoadedHunt] = []
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for file in hunt_files(paths):
        try:
            doc = load_yaml(file)
        except CustodesError as exc:
            problems += exc.problems
            continue
        hunt, found = check(doc, settings)
        problems += found
        if hunt is None:
            continue
        if hunt.name in seen:
            problems.append(
                Problem(doc.locate(("name",), at_value=True), f"hunt {hunt.name!r} is also in {seen[hunt.name]}")
            )
            continue
        seen[hunt.name] = file
        loaded.append(LoadedHunt(hunt, file))
    if problems:
        raise CustodesError(problems, hint="see docs/hunts.md for the hunt format")
    return loaded
