"""Sigma correlation rules, evaluated over sliding windows in event time.

A window is any interval of `timespan` length, both ends included: events at 10:00:00 and 10:10:00 are
within one 10-minute window, events 10 minutes and 1 second apart are not. Per correlation rule and group (the
values of its `group-by` fields, aliases resolved per base rule) the engine keeps the events of the last
timespan, sorted by event time, so events arriving out of order are placed where they belong.

- **Immediate conditions** (`gt`/`gte` on `event_count`, `value_count`, `value_sum`, `temporal`,
  `temporal_ordered`, and `temporal` boolean conditions without `not`) can only become true as events are
  added, so they are checked when an event arrives: the correlation fires as soon as some window containing
  that event satisfies the condition.
- **Conditions evaluated at window close** (every other operator, and `value_avg`, `value_median`,
  `value_percentile`, and boolean conditions with `not`) are checked for the window that starts at each kept
  event once the correlation's clock has passed the window's end; a window is skipped when it adds no event
  to the previous one (so a burst is judged once, as a whole).
- **Firing and reset**: a correlation fires at most once per group and window: the events of the window (and
  any older ones kept for the group) are then dropped, and an event arriving later with a time at or before
  the newest event of the fired window is ignored.
- **Clock and late events**: a correlation's clock is the newest event time seen from the log sources of its
  base rules. An event more than one timespan older than that clock is late and ignored (counted in `stats`).
- **Bounds**: at most `max_events_per_group` events per group (the oldest are dropped) and `max_groups`
  groups per correlation (the least recently updated group is dropped); both are counted.
- **Group-by**: an event lacking a `group-by` field does not count (as in SIEM aggregations). Values are
  compared exactly; a list-valued field is one value.
- `temporal_ordered`: the rules must match in the order listed, in event time (equal times in arrival order);
  the condition is evaluated on how many of the listed rules, from the first, matched in that order.
- `value_percentile` interpolates linearly between the closest ranks.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import statistics
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sigma.correlations import (
    CorrelationConditionAND,
    CorrelationConditionItem,
    CorrelationConditionNOT,
    CorrelationConditionOR,
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
    SigmaRuleReference,
)

from custodes.detections.sigma.compiler import CompiledRule, UnsupportedRuleError
from custodes.detections.sigma.fields import field_value, field_values, match_view
from custodes.detections.sigma.logsources import LogsourceKey, applies, logsource_key
from custodes.model import Event, Finding, LogSource, Severity, stable_id

if TYPE_CHECKING:
    from custodes.detections.sigma.ruleset import RuleSet
    from custodes.store.database import CorrelationGroupRecord, Transaction

CORRELATION_DETECTOR: Final = "sigma-correlation"
MAX_FINDING_EVENTS: Final = 200

_Operator = SigmaCorrelationConditionOperator
_Type = SigmaCorrelationType
_COMPARE: Final[dict[_Operator, Callable[[float, float], bool]]] = {
    _Operator.LT: lambda a, b: a < b,
    _Operator.LTE: lambda a, b: a <= b,
    _Operator.GT: lambda a, b: a > b,
    _Operator.GTE: lambda a, b: a >= b,
    _Operator.EQ: lambda a, b: a == b,
    _Operator.NEQ: lambda a, b: a != b,
}
_GROWING: Final = frozenset({_Operator.GT, _Operator.GTE})
_AGGREGATES: Final = frozenset({_Type.VALUE_SUM, _Type.VALUE_AVG, _Type.VALUE_MEDIAN, _Type.VALUE_PERCENTILE})
_ALWAYS_AT_CLOSE: Final = frozenset({_Type.VALUE_AVG, _Type.VALUE_MEDIAN, _Type.VALUE_PERCENTILE})

RuleSetPredicate = Callable[[frozenset[str]], bool]
"""A boolean (extended) temporal condition over the ids of the base rules seen in a window."""


@dataclass(frozen=True, slots=True, eq=False)
class CompiledCorrelation:
    """A correlation rule with its references resolved to compiled base rule ids.

    `group_by` and `value_fields` give, per base rule id, the record fields to read (aliases resolved);
    `threshold` is the condition's number and `expression` a boolean temporal condition when the rule has one.
    """

    id: str
    title: str
    level: Severity
    tags: list[str]
    description: str | None
    type: SigmaCorrelationType
    rules: tuple[str, ...]
    group_by: tuple[str, ...]
    group_fields: Mapping[str, tuple[str, ...]]
    value_fields: Mapping[str, tuple[str, ...]]
    timespan: float
    operator: SigmaCorrelationConditionOperator
    threshold: int
    percentile: int | None = None
    expression: RuleSetPredicate | None = None
    generate: bool = False
    suppressed: Callable[[dict[str, Any]], bool] | None = None
    source: Path | None = None

    @property
    def immediate(self) -> bool:
        """Whether the condition is checked when events arrive rather than when windows close."""
        if self.expression is not None:
            return self.operator in _GROWING
        return self.type not in _ALWAYS_AT_CLOSE and self.operator in _GROWING


def compile_correlation(rule: SigmaCorrelationRule, resolve: Callable[[str], str]) -> CompiledCorrelation:
    """Compile a parsed correlation rule; `resolve` maps a rule reference (id or name) to a base rule id.

    Raises `UnsupportedRuleError` when the rule cannot be evaluated (and lets `resolve`'s errors through).
    """
    condition = rule.condition
    references = (
        [reference.reference for reference in rule.rules]
        if rule.rules is not None
        else ([] if isinstance(condition, SigmaCorrelationCondition) else condition.get_referenced_rules())
    )
    if not references:
        raise UnsupportedRuleError("the correlation refers to no rule")
    resolved = {reference: resolve(reference) for reference in references}
    rule_ids = tuple(dict.fromkeys(resolved[reference] for reference in references))

    aliases = {alias.alias: alias for alias in rule.aliases}
    group_by = tuple(rule.group_by or ())
    group_fields = {rule_id: _fields_for(rule_id, group_by, aliases, resolve) for rule_id in rule_ids}

    expression: RuleSetPredicate | None = None
    value_fields: dict[str, tuple[str, ...]] = {}
    percentile: int | None = None
    if isinstance(condition, SigmaCorrelationCondition):
        operator, threshold = condition.op, condition.count
        if condition.fieldref is not None:
            names = (condition.fieldref,) if isinstance(condition.fieldref, str) else tuple(condition.fieldref)
            if rule.type in _AGGREGATES and len(names) != 1:
                raise UnsupportedRuleError(f"{rule.type.name.lower()} aggregates one field, not {len(names)}")
            value_fields = {rule_id: _fields_for(rule_id, names, aliases, resolve) for rule_id in rule_ids}
        if rule.type is _Type.VALUE_PERCENTILE:
            percentile = 50 if condition.percentile is None else condition.percentile
            if not 0 <= percentile <= 100:
                raise UnsupportedRuleError(f"percentile {percentile} is outside 0..100")
    else:
        if rule.type is not _Type.TEMPORAL:
            raise UnsupportedRuleError(
                "a boolean condition is only defined for 'temporal' correlations (order and negation conflict)"
            )
        expression = _compile_expression(condition.parsed, resolved)
        operator = _Operator.GTE if _monotone(condition.parsed) else _Operator.EQ
        threshold = 1
    source = rule.source.path if rule.source is not None else None
    return CompiledCorrelation(
        id=str(rule.id)
        if rule.id is not None
        else rule.name or stable_id("sigma-correlation", rule.title, str(source)),
        title=rule.title,
        level=Severity.parse(rule.level.name) if rule.level is not None else Severity.MEDIUM,
        tags=[str(tag) for tag in rule.tags],
        description=rule.description,
        type=rule.type,
        rules=rule_ids,
        group_by=group_by,
        group_fields=group_fields,
        value_fields=value_fields,
        timespan=float(rule.timespan.seconds),
        operator=operator,
        threshold=threshold,
        percentile=percentile,
        expression=expression,
        generate=rule.generate,
        source=source,
    )


def _fields_for(
    rule_id: str, names: Iterable[str], aliases: Mapping[str, Any], resolve: Callable[[str], str]
) -> tuple[str, ...]:
    fields: list[str] = []
    for name in names:
        alias = aliases.get(name)
        if alias is None:
            fields.append(name)
            continue
        mapped = [target for reference, target in alias.mapping.items() if resolve(reference.reference) == rule_id]
        if not mapped:
            raise UnsupportedRuleError(f"alias {name!r} names no field for rule {rule_id}")
        fields.append(mapped[0])
    return tuple(fields)


def _monotone(node: CorrelationConditionItem | SigmaRuleReference) -> bool:
    if isinstance(node, SigmaRuleReference):
        return True
    return not isinstance(node, CorrelationConditionNOT) and all(_monotone(arg) for arg in node.args)


def _compile_expression(
    node: CorrelationConditionItem | SigmaRuleReference, resolved: Mapping[str, str]
) -> RuleSetPredicate:
    if isinstance(node, SigmaRuleReference):
        rule_id = resolved[node.reference]
        return lambda seen: rule_id in seen
    parts = [_compile_expression(arg, resolved) for arg in node.args]
    if isinstance(node, CorrelationConditionNOT):
        inner = parts[0]
        return lambda seen: not inner(seen)
    if isinstance(node, CorrelationConditionAND):
        return lambda seen: all(part(seen) for part in parts)
    if isinstance(node, CorrelationConditionOR):
        return lambda seen: any(part(seen) for part in parts)
    raise UnsupportedRuleError(f"unsupported correlation condition element {type(node).__name__}")


# Runtime state ---------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Entry:
    """One event counted by a correlation: time (POSIX seconds), id, matched base rules, value, actor, source."""

    time: float
    event_id: str
    rules: list[str]
    value: Any
    actor: str | None
    source: str | None

    def dump(self) -> list[Any]:
        """The entry as JSON."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.time, self.event_id, self.rules, value, self.actor, self.source]

    @classmethod
    def load(cls, data: Sequence[Any]) -> Entry:
        """An entry from `dump`'s JSON."""
        time, event_id, rules, value, actor, source = data
        return cls(
            float(time), str(event_id), list(rules), tuple(value) if isinstance(value, list) else value, actor, source
        )


@dataclass(slots=True)
class Group:
    """The kept events of one group of one correlation, oldest first, and its firing marks."""

    values: list[Any]
    entries: list[Entry] = field(default_factory=list)
    fired_until: float | None = None
    evaluated_until: float | None = None
    touched: int = 0

    def dump(self) -> dict[str, Any]:
        """The group as JSON."""
        return {
            "values": self.values,
            "entries": [entry.dump() for entry in self.entries],
            "fired_until": self.fired_until,
            "evaluated_until": self.evaluated_until,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Group:
        """A group from `dump`'s JSON."""
        return cls(
            values=list(data["values"]),
            entries=[Entry.load(item) for item in data["entries"]],
            fired_until=data.get("fired_until"),
            evaluated_until=data.get("evaluated_until"),
        )


@dataclass(frozen=True, slots=True)
class CorrelationStats:
    """The size of one correlation's state and what its bounds and clock have dropped since start."""

    groups: int
    events: int
    late: int
    evicted_groups: int
    evicted_events: int


def _time(value: datetime) -> float:
    return value.timestamp()


def _datetime(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _by_time(entry: Entry) -> float:
    return entry.time


class CorrelationState:
    """The groups of one correlation rule, ordered from least to most recently updated."""

    def __init__(self, rule: CompiledCorrelation, max_groups: int, max_events: int, counter: Iterator[int]) -> None:
        self.rule = rule
        self.counter = counter
        self.immediate = rule.immediate
        self.max_groups = max_groups
        self.max_events = max_events
        self.groups: OrderedDict[str, Group] = OrderedDict()
        self.clock: float | None = None
        self.dirty: set[str] = set()
        self.clock_dirty = False
        self.late = 0
        self.evicted_groups = 0
        self.evicted_events = 0

    def stats(self) -> CorrelationStats:
        """Current size and drop counters."""
        events = sum(len(group.entries) for group in self.groups.values())
        return CorrelationStats(len(self.groups), events, self.late, self.evicted_groups, self.evicted_events)

    def tick(self, time: float) -> None:
        """Advance the clock to `time` if it is newer."""
        if self.clock is None or time > self.clock:
            self.clock = time
            self.clock_dirty = True

    def add(self, event: Event, rule_ids: list[str], fields: CompiledCorrelation | None = None) -> Finding | None:
        """Count an event that matched `rule_ids` (base rules of this correlation); a finding if it fires.

        `fields` is the correlation as compiled with the event's processing pipeline, whose field names the
        event's record uses (this state's own rule by default).
        """
        rule = self.rule
        fields = fields or rule
        raw = match_view(event.raw)
        if fields.suppressed is not None and fields.suppressed(raw):
            return None
        first = rule_ids[0]
        values = [field_value(raw, name) for name in fields.group_fields[first]]
        if any(value is None for value in values):
            return None
        value: Any = None
        if fields.value_fields:
            value = _entry_value(rule, raw, fields.value_fields[first])
            if value is None:
                return None
        time = _time(event.time)
        self.tick(time)
        assert self.clock is not None
        if time < self.clock - rule.timespan:
            self.late += 1
            return None
        key = stable_id([_json_value(v) for v in values])
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.max_groups:
                evicted, _ = self.groups.popitem(last=False)
                self.dirty.add(evicted)
                self.evicted_groups += 1
            group = self.groups[key] = Group([_json_value(v) for v in values])
        elif group.fired_until is not None and time <= group.fired_until:
            self.late += 1
            return None
        self.groups.move_to_end(key)
        group.touched = next(self.counter)
        self.dirty.add(key)
        entry = Entry(time, event.id, rule_ids, value, event.actor, event.source)
        position = bisect.bisect_right(group.entries, time, key=_by_time)
        group.entries.insert(position, entry)
        if len(group.entries) > self.max_events:
            del group.entries[0]
            self.evicted_events += 1
            if position == 0:  # the new event was the oldest one
                return None
        if not self.immediate:
            return None
        cut = bisect.bisect_left(group.entries, self.clock - rule.timespan, key=_by_time)
        del group.entries[:cut]  # older events can no longer share a window with an accepted one
        return self._check_immediate(key, group, entry)

    def _check_immediate(self, key: str, group: Group, entry: Entry) -> Finding | None:
        entries = group.entries
        span = self.rule.timespan
        newest = entries[-1] is entry
        start = bisect.bisect_left(entries, entry.time - span, key=_by_time)
        stop = start + 1 if newest else bisect.bisect_right(entries, entry.time, key=_by_time)
        previous_end = -1
        for anchor in range(start, stop):
            end = bisect.bisect_right(entries, entries[anchor].time + span, key=_by_time)
            if end <= previous_end:
                continue  # the same events as the window before, minus some
            previous_end = end
            window = entries[anchor:end]
            if self._satisfied(window):
                return self._fire(key, group, window)
        return None

    def close_windows(self) -> list[Finding]:
        """Evaluate at-close conditions for every window the clock has passed; drop expired groups."""
        found: list[Finding] = []
        if self.clock is None:
            return found
        horizon = self.clock - self.rule.timespan
        if self.immediate:
            while self.groups:  # least recently updated first; stop at the first group still in range
                key, group = next(iter(self.groups.items()))
                if _newest(group) >= horizon:
                    break
                del self.groups[key]
                self.dirty.add(key)
            return found
        for key in list(self.groups):
            group = self.groups[key]
            found.extend(self._close_group(key, group))
            if not group.entries and _newest(group) < horizon:
                del self.groups[key]
                self.dirty.add(key)
        return found

    def _close_group(self, key: str, group: Group) -> list[Finding]:
        assert self.clock is not None
        span = self.rule.timespan
        found: list[Finding] = []
        while group.entries and group.entries[0].time + span < self.clock:
            window_end = group.entries[0].time + span
            end = bisect.bisect_right(group.entries, window_end, key=_by_time)
            window = group.entries[:end]
            grows = group.evaluated_until is None or window[-1].time > group.evaluated_until
            group.evaluated_until = window_end
            self.dirty.add(key)
            if grows and self._satisfied(window):
                found.append(self._fire(key, group, window))
            else:
                del group.entries[0]
        return found

    def _satisfied(self, window: list[Entry]) -> bool:
        rule = self.rule
        kind = rule.type
        if rule.expression is not None:
            return rule.expression(frozenset(rule_id for entry in window for rule_id in entry.rules))
        metric: float
        if kind is _Type.EVENT_COUNT:
            metric = len(window)
        elif kind is _Type.VALUE_COUNT:
            metric = len({entry.value for entry in window})
        elif kind is _Type.TEMPORAL:
            metric = len({rule_id for entry in window for rule_id in entry.rules})
        elif kind is _Type.TEMPORAL_ORDERED:
            metric = _in_order(rule.rules, window)
        else:
            metric = _aggregate(kind, [float(entry.value) for entry in window], rule.percentile)
        return _COMPARE[rule.operator](metric, rule.threshold)

    def _fire(self, key: str, group: Group, window: list[Entry]) -> Finding:
        last = window[-1].time
        group.fired_until = last if group.fired_until is None else max(group.fired_until, last)
        group.entries = [entry for entry in group.entries if entry.time > last]
        self.dirty.add(key)
        return _finding(self.rule, key, group.values, window)


def _newest(group: Group) -> float:
    """The newest time a group still answers for: its newest event or the end of its last firing."""
    times = [group.entries[-1].time] if group.entries else []
    if group.fired_until is not None:
        times.append(group.fired_until)
    return max(times, default=-math.inf)


class Correlator:
    """Feeds base rule matches to every correlation rule and keeps their state, bounded, in the store.

    Call `feed` for every new event (with the base rules it matched) and `flush` after a batch, inside the
    transaction that stores the batch; `save` then writes the changed state in that same transaction. State
    is read from the store on first use (`ensure_loaded`) and again after `invalidate` (a failed transaction).
    """

    def __init__(
        self, rulesets: Sequence[RuleSet] = (), *, max_groups: int = 10_000, max_events_per_group: int = 1_000
    ) -> None:
        """Correlate the rules of `rulesets`: the same rule files loaded once per processing pipeline.

        State is kept once per correlation id; an event's fields are read with the correlation as compiled
        with the pipeline of the rules it matched.
        """
        self.rulesets = tuple(rulesets)
        self.max_groups, self.max_events_per_group = max_groups, max_events_per_group
        self._counter = itertools.count(1)
        self.states: dict[str, CorrelationState] = {}
        self.silent: frozenset[str] = frozenset(rule_id for ruleset in rulesets for rule_id in ruleset.silent)
        self._by_rule: dict[CompiledRule, list[tuple[CorrelationState, CompiledCorrelation]]] = {}
        wanted: dict[str, set[LogsourceKey]] = {}
        for ruleset in rulesets:
            rules = {rule.id: rule for rule in ruleset.rules}
            for correlation in ruleset.correlations:
                state = self.states.get(correlation.id)
                if state is None:
                    state = CorrelationState(correlation, max_groups, max_events_per_group, self._counter)
                    self.states[correlation.id] = state
                for rule_id in correlation.rules:
                    base = rules.get(rule_id)
                    if base is not None:
                        self._by_rule.setdefault(base, []).append((state, correlation))
                        wanted.setdefault(correlation.id, set()).add(logsource_key(base.logsource))
        self._wanted = [(self.states[correlation_id], keys) for correlation_id, keys in wanted.items()]
        self._routes: dict[LogsourceKey, tuple[CorrelationState, ...]] = {}
        self.loaded = not self.states
        self._lock = asyncio.Lock()
        self.late_by_source: Counter[str] = Counter()
        """Events ignored as late by some correlation since start, by event source."""

    def reportable(self, matched: Sequence[CompiledRule]) -> list[CompiledRule]:
        """The matched rules that raise findings of their own (not silenced by a correlation or an override)."""
        if not self.silent:
            return list(matched)
        return [rule for rule in matched if rule.id not in self.silent]

    def feed(self, event: Event, matched: Sequence[CompiledRule]) -> list[Finding]:
        """Advance the clocks of the correlations reading the event's log source; count its matches."""
        if not self.states:
            return []
        time = _time(event.time)
        for state in self._routed(event.logsource):
            state.tick(time)
        touched: dict[str, tuple[CompiledCorrelation, list[str]]] = {}
        for rule in matched:
            for state, version in self._by_rule.get(rule, ()):
                touched.setdefault(state.rule.id, (version, []))[1].append(rule.id)
        found: list[Finding] = []
        for correlation_id, (version, rule_ids) in touched.items():
            state = self.states[correlation_id]
            ordered = [rule_id for rule_id in state.rule.rules if rule_id in rule_ids]
            late = state.late
            finding = state.add(event, ordered, version)
            if state.late > late:
                self.late_by_source[event.source] += 1
            if finding is not None:
                found.append(finding)
        return found

    def flush(self) -> list[Finding]:
        """Evaluate the windows that have closed and drop expired groups; the findings that fired."""
        return [finding for state in self.states.values() for finding in state.close_windows()]

    def stats(self) -> dict[str, CorrelationStats]:
        """State size and drop counters per correlation rule id."""
        return {rule_id: state.stats() for rule_id, state in self.states.items()}

    def invalidate(self) -> None:
        """Forget in-memory state (after a rolled-back transaction): it is read again on next use."""
        if self.states:
            self.loaded = False

    @asynccontextmanager
    async def guarded(self, *, always: bool = False) -> AsyncIterator[None]:
        """Serialise batches that use correlation state (with `always`, every batch: other in-memory state, such as
        behaviour scoring's, needs them one at a time too); invalidate it if the block (or its commit) fails."""
        if not self.states and not always:
            yield
            return
        async with self._lock:
            try:
                yield
            except BaseException:
                self.invalidate()
                raise

    async def ensure_loaded(self, tx: Transaction) -> None:
        """Read the persisted state once (and after `invalidate`); rows of unknown correlations are deleted."""
        if self.loaded:
            return
        clocks, records = await tx.load_correlation_state()
        stale = sorted(({record.correlation_id for record in records} | set(clocks)) - set(self.states))
        if stale:
            await tx.delete_correlation_state(stale)
        self.restore(clocks, records)

    def restore(self, clocks: Mapping[str, float], records: Sequence[CorrelationGroupRecord]) -> None:
        """Replace the in-memory state with persisted clocks and groups (those of unknown correlations are left)."""
        for correlation_id, state in self.states.items():
            state.groups.clear()
            state.dirty.clear()
            state.clock = clocks.get(correlation_id)
            state.clock_dirty = False
        maximum = 0
        for record in sorted(records, key=lambda record: record.position):
            owner = self.states.get(record.correlation_id)
            if owner is None:
                continue
            group = Group.load(record.state)
            group.touched = record.position
            maximum = max(maximum, record.position)
            owner.groups[record.group_key] = group
            while len(owner.groups) > owner.max_groups:
                evicted, _ = owner.groups.popitem(last=False)
                owner.dirty.add(evicted)
            del group.entries[: max(0, len(group.entries) - owner.max_events)]
        self._counter = itertools.count(maximum + 1)
        for state in self.states.values():
            state.counter = self._counter
        self.loaded = True

    def changes(self) -> tuple[dict[str, float], list[CorrelationGroupRecord], list[tuple[str, str]]]:
        """The clocks and groups changed since the last call, and the groups dropped: (clocks, groups, deleted
        (correlation id, group key) pairs); they count as written from then on."""
        from custodes.store.database import CorrelationGroupRecord  # the store (SQLAlchemy) only where state is saved

        clocks: dict[str, float] = {}
        upserts: list[CorrelationGroupRecord] = []
        deleted: list[tuple[str, str]] = []
        for correlation_id, state in self.states.items():
            if state.clock_dirty and state.clock is not None:
                clocks[correlation_id] = state.clock
            for key in state.dirty:
                group = state.groups.get(key)
                if group is None:
                    deleted.append((correlation_id, key))
                else:
                    upserts.append(CorrelationGroupRecord(correlation_id, key, group.dump(), group.touched))
            state.dirty.clear()
            state.clock_dirty = False
        return clocks, upserts, deleted

    async def save(self, tx: Transaction) -> None:
        """Write changed groups and clocks (in the caller's transaction)."""
        clocks, upserts, deleted = self.changes()
        if clocks or upserts or deleted:
            await tx.save_correlation_state(clocks, upserts, deleted)

    def _routed(self, logsource: LogSource) -> tuple[CorrelationState, ...]:
        key = logsource_key(logsource)
        routed = self._routes.get(key)
        if routed is None:
            routed = tuple(state for state, wanted in self._wanted if any(applies(want, key) for want in wanted))
            if len(self._routes) >= 256:
                self._routes.clear()
            self._routes[key] = routed
        return routed


def _entry_value(rule: CompiledCorrelation, raw: dict[str, Any], names: tuple[str, ...]) -> Any:
    if rule.type in _AGGREGATES:
        for candidate in field_values(raw, names[0]):
            number = _number(candidate)
            if number is not None:
                return number
        return None
    values = [field_value(raw, name) for name in names]
    if any(value is None for value in values):
        return None
    converted = tuple(_json_value(value) for value in values)
    return converted[0] if len(converted) == 1 else converted


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _json_value(value: Any) -> Any:
    """A hashable, JSON-stable form: scalars as they are, anything else as its canonical JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple):
        return "[" + ",".join(str(_json_value(item)) for item in value) + "]"
    return str(value)


def _in_order(rules: tuple[str, ...], window: list[Entry]) -> int:
    matched = 0
    for entry in window:
        while matched < len(rules) and rules[matched] in entry.rules:
            matched += 1
        if matched == len(rules):
            break
    return matched


def _aggregate(kind: SigmaCorrelationType, values: list[float], percentile: int | None) -> float:
    if not values:
        return math.nan
    if kind is _Type.VALUE_SUM:
        return math.fsum(values)
    if kind is _Type.VALUE_AVG:
        return statistics.fmean(values)
    if kind is _Type.VALUE_MEDIAN:
        return statistics.median(values)
    ordered = sorted(values)
    rank = (len(ordered) - 1) * (percentile if percentile is not None else 50) / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _finding(rule: CompiledCorrelation, key: str, values: list[Any], window: list[Entry]) -> Finding:
    dedup_key = stable_id(CORRELATION_DETECTOR, rule.id, key)
    event_ids = list(dict.fromkeys(entry.event_id for entry in window))[-MAX_FINDING_EVENTS:]
    actors = {entry.actor for entry in window}
    group = ", ".join(f"{name}={value}" for name, value in zip(rule.group_by, values, strict=True))
    summary = f"{rule.type.name.lower()} over {len(event_ids)} events" + (f" ({group})" if group else "")
    return Finding(
        id=stable_id("finding", dedup_key, event_ids),
        dedup_key=dedup_key,
        detector=CORRELATION_DETECTOR,
        rule_id=rule.id,
        title=rule.title,
        severity=rule.level,
        entity=actors.pop() if len(actors) == 1 else None,
        event_ids=event_ids,
        tags=[tag for tag in rule.tags if tag.lower().startswith("attack.")],
        first_seen=_datetime(window[0].time),
        last_seen=_datetime(window[-1].time),
        source=window[-1].source,
        count=len(event_ids),
        description=f"{rule.description}\n\n{summary}" if rule.description else summary,
    )
