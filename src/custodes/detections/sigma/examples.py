"""Examples carried by rules: raw events a rule must match and must not match, run by `custodes rules test`.

The format is a custom top-level attribute of the rule document (pySigma keeps it in `custom_attributes`)::

    custodes:
      examples:
        match:        # each event must match the rule
          - {eventSource: s3.amazonaws.com, eventName: GetObject, ...}
        no_match:     # each event must not match it
          - {...}

Events are raw vendor records, as the source delivers them; a record may carry the enrichment namespace inline
(`custodes: {off_hours: true, watchlists: [departing]}`), as the engine adds it before matching rules that read
`custodes.*` fields (see `enrichment.py`).

Correlation rules carry example *sequences*, fed in the order written through the real correlation engine (each
event to the base rules that match it, then every window closed); a `match` sequence must make the correlation
fire, a `no_match` one must not::

    custodes:
      examples:
        match:
          - sequence:
              - {time: "2026-11-21T22:00:00Z", repeat: 120, every: 20, event: {...}}   # 120 events, 20 s apart
              - {time: "2026-11-21T23:00:00Z", event: {...}}                          # repeat 1, every 0

Every problem and failure names file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from custodes.detections.sigma.compiler import CompiledRule
from custodes.detections.sigma.correlation import CompiledCorrelation, Correlator
from custodes.detections.sigma.loader import mapping_child
from custodes.detections.sigma.ruleset import RULE_SUFFIXES, RuleSet
from custodes.errors import Location, Problem
from custodes.model import Event

ATTRIBUTE: Final = "custodes"
Kind = Literal["match", "no_match"]
KINDS: Final[tuple[Kind, ...]] = ("match", "no_match")


@dataclass(frozen=True, slots=True)
class Step:
    """Events of a correlation example: `repeat` copies of `event`, the first at `time`, `every` seconds apart."""

    time: datetime
    event: dict[str, Any]
    repeat: int = 1
    every: float = 0.0


@dataclass(frozen=True, slots=True)
class Example:
    """One example of a rule, and where it is written: an event, or a sequence of steps (correlation rules)."""

    rule_id: str
    kind: Kind
    event: dict[str, Any]
    file: Path
    line: int
    sequence: tuple[Step, ...] | None = None


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """The outcome of running one example."""

    example: Example
    passed: bool
    message: str

    def problem(self) -> Problem:
        """The failure as a located problem."""
        return Problem(Location(str(self.example.file), self.example.line), self.message)


@dataclass(slots=True)
class ExampleFile:
    """The examples read from one rule file, the ids of its rules, and problems with the examples' format."""

    examples: list[Example]
    rule_ids: list[str]
    problems: list[Problem]


def read_examples(path: Path) -> ExampleFile:
    """Read the examples of every rule document in `path` (problems are collected, never raised)."""
    found = ExampleFile([], [], [])
    try:
        documents = [node for node in yaml.compose_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        found.problems.append(Problem(Location(str(path)), f"cannot read examples: {exc}"))
        return found
    for node in documents:
        if not isinstance(node, yaml.MappingNode):
            continue
        rule_id = (
            _scalar(mapping_child(node, "id"))
            or _scalar(mapping_child(node, "name"))
            or _scalar(mapping_child(node, "title"))
        )
        if rule_id is None:
            continue
        found.rule_ids.append(rule_id)
        attribute = mapping_child(node, ATTRIBUTE)
        if attribute is not None:
            _read_attribute(path, rule_id, attribute, found, sequences=mapping_child(node, "correlation") is not None)
    return found


def _read_attribute(path: Path, rule_id: str, attribute: yaml.Node, found: ExampleFile, *, sequences: bool) -> None:
    def problem(node: yaml.Node, message: str) -> None:
        found.problems.append(
            Problem(Location(str(path), node.start_mark.line + 1, node.start_mark.column + 1), message)
        )

    if not isinstance(attribute, yaml.MappingNode):
        problem(attribute, f"'{ATTRIBUTE}' must be a mapping")
        return
    examples = mapping_child(attribute, "examples")
    if examples is None:
        return
    if not isinstance(examples, yaml.MappingNode):
        problem(examples, "'examples' must be a mapping with 'match' and/or 'no_match'")
        return
    for key, value in examples.value:
        if key.value not in KINDS:
            problem(key, f"unknown example kind {key.value!r} (expected 'match' or 'no_match')")
            continue
        if not isinstance(value, yaml.SequenceNode):
            problem(value, f"'{key.value}' must be a list of events")
            continue
        for item in value.value:
            event = yaml.load(yaml.serialize(item), Loader=yaml.CSafeLoader) if isinstance(item, yaml.Node) else None
            line = item.start_mark.line + 1
            if sequences:
                steps = _sequence(event)
                if isinstance(steps, str):
                    problem(item, steps)
                else:
                    found.examples.append(Example(rule_id, key.value, {}, path, line, steps))
                continue
            if not isinstance(event, dict):
                problem(item, "an example event must be a mapping (a raw vendor record)")
                continue
            found.examples.append(Example(rule_id, key.value, event, path, line))


def _sequence(item: Any) -> tuple[Step, ...] | str:
    """The steps of a correlation example, or what is wrong with it."""
    steps = item.get("sequence") if isinstance(item, dict) and set(item) == {"sequence"} else None
    if not isinstance(steps, list) or not steps:
        return "a correlation example must be a mapping {sequence: [steps]} with at least one step"
    parsed: list[Step] = []
    for number, step in enumerate(steps, start=1):
        where = f"sequence step {number}"
        if not isinstance(step, dict) or not set(step) <= {"time", "event", "repeat", "every"}:
            return f"{where}: a step is a mapping of time, event and optionally repeat and every"
        time = _time(step.get("time"))
        if time is None:
            return f"{where}: 'time' must be an ISO 8601 time with a time zone, e.g. 2026-11-21T22:00:00Z"
        event, repeat, every = step.get("event"), step.get("repeat", 1), step.get("every", 0)
        if not isinstance(event, dict):
            return f"{where}: 'event' must be a mapping (a raw vendor record)"
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            return f"{where}: 'repeat' must be a whole number of events, at least 1"
        if not isinstance(every, int | float) or isinstance(every, bool) or every < 0:
            return f"{where}: 'every' must be a number of seconds, at least 0"
        parsed.append(Step(time, event, repeat, float(every)))
    return tuple(parsed)


def _time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # YAML timestamps load as naive UTC


def _scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) and node.value else None


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """The rule files under `paths` (files or folders), sorted, as the loader finds them."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
    return files


def run_examples(
    examples: Iterable[Example], rules: Iterable[CompiledRule], correlations: Iterable[CompiledCorrelation] = ()
) -> list[ExampleResult]:
    """Match each example against its (compiled) rule; an example of a rule that did not load fails.

    Sequence examples run through a fresh `Correlator` holding only their correlation and its base rules.
    """
    by_id = {rule.id: rule for rule in rules}
    correlations_by_id = {correlation.id: correlation for correlation in correlations}
    results: list[ExampleResult] = []
    for example in examples:
        if example.sequence is not None:
            correlation = correlations_by_id.get(example.rule_id)
            if correlation is None:
                message = f"correlation {example.rule_id} did not load; see `rules lint`"
                results.append(ExampleResult(example, False, message))
            else:
                results.append(_run_sequence(example, example.sequence, correlation, by_id))
            continue
        rule = by_id.get(example.rule_id)
        if rule is None:
            results.append(ExampleResult(example, False, f"rule {example.rule_id} did not load; see `rules lint`"))
            continue
        matched = rule.match(example.event)
        wanted = example.kind == "match"
        if matched == wanted:
            results.append(ExampleResult(example, True, "ok"))
        else:
            verb = "should match but does not" if wanted else "should not match but does"
            results.append(ExampleResult(example, False, f"rule {rule.title!r}: example {verb}"))
    return results


def _run_sequence(
    example: Example, steps: Sequence[Step], correlation: CompiledCorrelation, rules: dict[str, CompiledRule]
) -> ExampleResult:
    """Feed a sequence to the correlation engine, then close every window; pass when firing is as wanted."""
    base = [rules[rule_id] for rule_id in correlation.rules if rule_id in rules]
    if not base:
        return ExampleResult(example, False, f"correlation {correlation.title!r}: none of its rules loaded")
    correlator = Correlator([RuleSet(rules=base, correlations=[correlation])])
    fired = 0
    newest: datetime | None = None
    number = 0
    for step in steps:
        for repeat in range(step.repeat):
            number += 1
            time = step.time + timedelta(seconds=step.every * repeat)
            matched = [rule for rule in base if rule.match(step.event)]
            logsource = matched[0].logsource if matched else base[0].logsource
            event = Event(f"example-{example.line}-{number}", time, "example", logsource, step.event)
            fired += sum(1 for f in correlator.feed(event, matched) if f.rule_id == correlation.id)
            newest = time if newest is None else max(newest, time)
    if newest is not None:
        for state in correlator.states.values():
            state.tick(newest.timestamp() + correlation.timespan + 1)
    fired += sum(1 for finding in correlator.flush() if finding.rule_id == correlation.id)
    wanted = example.kind == "match"
    if (fired > 0) == wanted:
        return ExampleResult(example, True, "ok")
    verb = "should fire but does not" if wanted else f"should not fire but fires {fired} time(s)"
    return ExampleResult(example, False, f"correlation {correlation.title!r}: example sequence {verb}")
