"""Running a hunt over one window: plan which rules go to the SIEM, read, match, record, respond.

A rule is pushed down when the source is a SIEM (Elasticsearch: Lucene in the connector's query; Splunk: SPL
in an export search) and `convert_rules` says the backend expresses it exactly; each event the SIEM returns is
checked again against the compiled rule (so local suppressions apply). Every other rule is matched in process
over all the window's events, read once. CloudTrail has no query language: always read and matched in process.

The matched events, the findings they raise (deduplicated by the store as usual) and the run record commit in
one transaction; for a scheduled run that record carries the unique (hunt, slot) that claims the slot, so a
slot another worker already recorded rolls the whole transaction back. Playbooks start after the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from custodes.config import ConnectorSettings, Settings
from custodes.connectors import sdk
from custodes.detections.findings import findings_for
from custodes.detections.sigma.compiler import CompiledRule
from custodes.detections.sigma.convert import Target, convert_rules
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.enrichment import EventContext
from custodes.detections.sigma.fields import match_view
from custodes.detections.sigma.loader import RuleOptions, load_rules
from custodes.detections.sigma.pipelines import pipeline_named
from custodes.detections.sigma.routing import effective_pipeline
from custodes.detections.sigma.ruleset import RuleSet
from custodes.errors import ConfigError
from custodes.hunts import records
from custodes.hunts.definition import Hunt, LoadedHunt
from custodes.hunts.records import HuntRun, RunTrigger
from custodes.model import Event, Finding, utcnow
from custodes.pipeline import Pipeline
from custodes.sources import SourceSettings

log = logging.getLogger(__name__)

TARGETS: Final[dict[str, Target]] = {"elasticsearch": "lucene", "splunk": "splunk"}
_CONTEXTUAL: Final = (
    "reads Custodes' enrichment fields (custodes.*), computed in process: the SIEM's records do not hold them"
)
Progress = Callable[[str, int], None]
"""Called with a step description and the events read so far."""


@dataclass(frozen=True, slots=True)
class PlannedRule:
    """A rule of a hunt, how it runs (`query` set: pushed down) and why not pushed down."""

    rule: CompiledRule
    query: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class HuntPlan:
    """Which rules a hunt pushes down and which it matches in process (rules that do not apply are left out)."""

    hunt: Hunt
    pushed: list[PlannedRule] = field(default_factory=list)
    in_process: list[PlannedRule] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Reads a run makes: one per pushed rule, one for the in-process rules."""
        return len(self.pushed) + (1 if self.in_process else 0)


class SlotTaken(Exception):
    """Another worker recorded this hunt's slot first."""


class HuntRunner:
    """Runs the configured hunts through the pipeline's store and playbooks."""

    def __init__(
        self, settings: Settings, pipeline: Pipeline, hunts: Sequence[LoadedHunt], *, worker: str | None = None
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.hunts = {loaded.hunt.name: loaded.hunt for loaded in hunts}
        self.worker = worker or f"hunts-{uuid.uuid4().hex[:12]}"
        self._plans: dict[str, HuntPlan] = {}
        self._event_context: EventContext | None = None

    def hunt(self, name: str) -> Hunt:
        """A loaded hunt by name; ConfigError lists the known ones."""
        try:
            return self.hunts[name]
        except KeyError:
            known = ", ".join(sorted(self.hunts)) or "none"
            raise ConfigError(f"unknown hunt {name!r} (loaded hunts: {known})", hint="custodes hunt list") from None

    def _entry(self, hunt: Hunt) -> ConnectorSettings:
        entry = self.settings.connectors.get(hunt.source.connector)
        if entry is None:
            raise ConfigError(f"hunt {hunt.name!r}: connector {hunt.source.connector!r} is not configured")
        return entry

    def plan(self, name: str) -> HuntPlan:
        """How a hunt's rules run (computed once: rules are loaded and converted on first use)."""
        if name not in self._plans:
            self._plans[name] = self._plan(self.hunt(name))
        return self._plans[name]

    def _plan(self, hunt: Hunt) -> HuntPlan:
        entry = self._entry(hunt)
        source_name, source = _source(entry, self.settings)
        paths = hunt.rules.paths or self.settings.detection.rules
        options = RuleOptions.from_settings(self.settings.detection)
        ruleset = load_rules(paths, pipeline=pipeline_named(effective_pipeline(source)), options=options)
        for rejection in ruleset.rejections:
            log.warning("hunt %s: %s", hunt.name, rejection)
        plan = HuntPlan(hunt)
        wanted_tags = {tag.lower() for tag in hunt.rules.tags}
        chosen = [
            rule
            for rule in ruleset.rules
            if (not hunt.rules.ids and not wanted_tags)
            or rule.id in hunt.rules.ids
            or wanted_tags & {tag.lower() for tag in rule.tags}
        ]
        applicable = set(map(id, SigmaEngine(RuleSet(rules=chosen)).rules_for(source.logsource)))
        for rule in chosen:
            if rule.id in ruleset.silent:
                plan.left_out.append(_left_out(rule, "feeds correlations only, or disabled by an override"))
            elif id(rule) not in applicable:
                plan.left_out.append(_left_out(rule, f"logsource does not apply to source {source_name!r}"))
        kept = [rule for rule in chosen if id(rule) in applicable and rule.id not in ruleset.silent]
        target = TARGETS.get(entry.kind)
        if target is None:
            reason = "CloudTrail has no query language: read and matched in process"
            plan.in_process = [PlannedRule(rule, None, reason) for rule in kept]
        elif not hunt.push_down:
            plan.in_process = [PlannedRule(rule, None, "push_down is off for this hunt") for rule in kept]
        elif sdk.query_language(entry) == "esql":
            reason = "the connector reads with ES|QL: rules are pushed down as Lucene only, so matched in process"
            plan.in_process = [PlannedRule(rule, None, reason) for rule in kept]
        else:
            conversions = {c.rule_id: c for c in convert_rules(paths, target, source)}
            for rule in kept:
                conversion = conversions.get(rule.id)
                if conversion is not None and conversion.exact and conversion.query is not None:
                    if rule.contextual:  # e.g. made so by an override: the SIEM's records lack `custodes.*`
                        plan.in_process.append(PlannedRule(rule, None, _CONTEXTUAL))
                    else:
                        plan.pushed.append(PlannedRule(rule, conversion.query))
                else:
                    why = conversion.reason if conversion is not None else None
                    plan.in_process.append(PlannedRule(rule, None, why or f"the {target} backend has no query"))
        return plan

    async def run(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        slot: datetime | None = None,
        progress: Progress | None = None,
    ) -> HuntRun | None:
        """Run a hunt over `[start, end)`; with `slot`, as that scheduled slot (None when already recorded)."""
        self.hunt(name)  # unknown names fail before anything is read
        trigger: RunTrigger = "schedule" if slot is not None else "manual"
        if slot is not None:
            async with self.pipeline.store.transaction() as tx:
                if await records.slot_taken(tx, name, slot):
                    return None
        started = utcnow()
        run = HuntRun(uuid.uuid4().hex, name, slot, trigger, start, end, started, started, self.worker)
        matched: dict[str, tuple[Event, list[CompiledRule]]] = {}
        try:
            plan = self.plan(name)
            run.pushed_down = [_described(item, "query") for item in plan.pushed]
            run.in_process = [_described(item, "reason") for item in plan.in_process] + plan.left_out
            run.events_scanned = await self._read(plan, start, end, matched, progress)
        except Exception as exc:  # a failed read is recorded (and logged), never lost silently
            log.exception("hunt %s failed", name)
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            matched.clear()
        try:
            new = await self._record(run, matched)
        except SlotTaken:
            return None
        if new:
            await self.pipeline.drain()
        return run

    async def _read(
        self,
        plan: HuntPlan,
        start: datetime,
        end: datetime,
        matched: dict[str, tuple[Event, list[CompiledRule]]],
        progress: Progress | None,
    ) -> int:
        scanned = 0
        hunt = plan.hunt
        for item in plan.pushed:
            connector = self._connector(hunt, item.query)
            try:
                async for events in sdk.read_window(connector, start, end):
                    scanned += len(events)
                    for event in events:
                        if item.rule.match(match_view(event.raw)):
                            matched.setdefault(event.id, (event, []))[1].append(item.rule)
                    if progress is not None:
                        progress(f"{item.rule.title} (pushed down)", scanned)
            finally:
                await sdk.close(connector)
        if plan.in_process:
            engine = SigmaEngine(RuleSet(rules=[item.rule for item in plan.in_process]), context=self._context())
            connector = self._connector(hunt, None)
            try:
                async for events in sdk.read_window(connector, start, end):
                    scanned += len(events)
                    for event in events:
                        rules = engine.match(event)
                        if rules:
                            matched.setdefault(event.id, (event, []))[1].extend(rules)
                    if progress is not None:
                        progress("rules matched in process", scanned)
            finally:
                await sdk.close(connector)
        return scanned

    def _context(self) -> EventContext:
        """The enrichment (`custodes.*`) rules see, as the pipeline computes it (built once)."""
        if self._event_context is None:
            self._event_context = EventContext.from_settings(self.settings)
        return self._event_context

    def _connector(self, hunt: Hunt, query: str | None) -> Any:
        entry = self._entry(hunt)
        if query is not None:
            entry = sdk.narrowed(entry, query)
        return sdk.build(hunt.source.connector, entry, self.settings)

    async def _record(self, run: HuntRun, matched: dict[str, tuple[Event, list[CompiledRule]]]) -> list[Finding]:
        events = [event for event, _rules in matched.values()]
        candidates = [finding for event, rules in matched.values() for finding in findings_for(event, _unique(rules))]
        new: list[Finding] = []
        merged: list[str] = []
        try:
            async with self.pipeline.store.transaction() as tx:
                await records.insert_run(tx, run)  # first: the slot claim waits for, or fails on, another worker's
                await tx.insert_events(events)
                for candidate in candidates:
                    if candidate.rule_id in self.pipeline.disabled_rules:
                        continue
                    finding, created = await tx.record_finding(candidate, self.pipeline.dedup_window)
                    if created:
                        new.append(finding)
                    elif finding.id not in merged:
                        merged.append(finding.id)
                run.finished_at = utcnow()
                run.findings = [finding.id for finding in new] + merged
                await records.update_run(tx, run)
                await self.pipeline.owe(tx, new)
        except IntegrityError:
            if run.slot is None:
                raise
            log.info("hunt %s: slot %s was recorded by another worker", run.hunt, run.slot.isoformat())
            raise SlotTaken(run.hunt) from None
        return new


def _unique(rules: list[CompiledRule]) -> list[CompiledRule]:
    return list({rule.id: rule for rule in rules}.values())


def _described(item: PlannedRule, key: str) -> dict[str, Any]:
    return {"rule_id": item.rule.id, "title": item.rule.title, key: item.query if key == "query" else item.reason}


def _left_out(rule: CompiledRule, reason: str) -> dict[str, str]:
    return {"rule_id": rule.id, "title": rule.title, "reason": f"not run: {reason}"}


def _source(entry: ConnectorSettings, settings: Settings) -> tuple[str, SourceSettings]:
    """The source a connector entry's events carry, as `connectors.sdk.build` chooses it."""
    name = entry.source or sdk.BUILDERS[entry.kind][1]
    if name == "generic":
        return name, settings.sources.get(name) or SourceSettings(format="generic")
    return name, settings.source(name)
