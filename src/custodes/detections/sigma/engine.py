"""Match events against compiled Sigma rules, routing each event to the rules of its log source."""

from __future__ import annotations

from typing import Any, Final

from custodes.detections.sigma.compiler import CompiledRule
from custodes.detections.sigma.enrichment import EventContext
from custodes.detections.sigma.fields import match_view
from custodes.detections.sigma.index import RuleIndex
from custodes.detections.sigma.logsources import LogsourceKey, applies, logsource_key
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import Event, LogSource

_CACHE_SIZE: Final = 256


class SigmaEngine:
    """Evaluates a rule set in process.

    A rule applies to an event when each of the rule's logsource product, service and category that is set
    equals the event's (case-insensitively); the rule list per event logsource is computed once and cached,
    with an index (`RuleIndex`) that tests an event only against the rules whose literal requirements it
    meets. `indexed=False` tests every routed rule instead (the same matches, for comparison).

    Rules that read the enrichment namespace (`CompiledRule.contextual`, `custodes.*` fields) have indexes of
    their own: `match` gives them the record with the `custodes` object `context` computes (only when the
    event's route has such rules), `match_record` the record as it is (which may carry `custodes` inline).
    Every other rule sees the raw record, through the same path as when no rule is contextual.
    """

    def __init__(self, ruleset: RuleSet, *, indexed: bool = True, context: EventContext | None = None) -> None:
        self.ruleset = ruleset
        self.indexed = indexed
        self.context = context or EventContext()
        self._rules = [(rule, logsource_key(rule.logsource)) for rule in ruleset.rules]
        self._routes: dict[LogsourceKey, tuple[CompiledRule, ...]] = {}
        self._indexes: dict[LogsourceKey, RuleIndex] = {}
        self._last: tuple[LogSource | None, RuleIndex | None] = (None, None)
        self._contextual = any(rule.contextual for rule in ruleset.rules)
        self._context_indexes: dict[LogsourceKey, RuleIndex | None] = {}
        self._order = {id(rule): position for position, rule in enumerate(ruleset.rules)}

    def rules_for(self, logsource: LogSource) -> tuple[CompiledRule, ...]:
        """The rules that apply to events of `logsource`, in load order."""
        key = logsource_key(logsource)
        routed = self._routes.get(key)
        if routed is None:
            routed = tuple(rule for rule, wanted in self._rules if applies(wanted, key))
            if len(self._routes) >= _CACHE_SIZE:
                self._routes.clear()
            self._routes[key] = routed
        return routed

    def index_for(self, logsource: LogSource) -> RuleIndex:
        """The index over the rules that apply to events of `logsource`."""
        key = logsource_key(logsource)
        index = self._indexes.get(key)
        if index is None:
            index = RuleIndex(tuple(rule for rule in self.rules_for(logsource) if not rule.contextual))
            if len(self._indexes) >= _CACHE_SIZE:
                self._indexes.clear()
            self._indexes[key] = index
        return index

    def match(self, event: Event) -> list[CompiledRule]:
        """The rules whose detection matches the event (its record, enriched for contextual rules), in load order."""
        raw = match_view(event.raw)
        if not self._contextual:
            return self.match_record(event.logsource, raw)
        matched = self._match_raw(event.logsource, raw)
        index = self.context_index_for(event.logsource)
        if index is not None:
            return self._merge(matched, index.match(self.context.view(event, raw)))
        return matched

    def match_record(self, logsource: LogSource, record: dict[str, Any]) -> list[CompiledRule]:
        """The rules of `logsource` whose detection matches a vendor record as given, in load order."""
        if self.indexed:  # `_match_raw` inlined: this is the hot path of streams without contextual rules
            last_logsource, index = self._last  # events of one source usually share their LogSource object
            if index is None or last_logsource is not logsource:
                index = self.index_for(logsource)
                self._last = (logsource, index)
            matched = index.match(record)
        else:
            matched = [rule for rule in self.rules_for(logsource) if not rule.contextual and rule.match(record)]
        if self._contextual:
            index = self.context_index_for(logsource)
            if index is not None:
                return self._merge(matched, index.match(record))
        return matched

    def context_index_for(self, logsource: LogSource) -> RuleIndex | None:
        """The index over the contextual rules that apply to events of `logsource`; None when there are none."""
        key = logsource_key(logsource)
        if key not in self._context_indexes:
            rules = tuple(rule for rule in self.rules_for(logsource) if rule.contextual)
            if len(self._context_indexes) >= _CACHE_SIZE:
                self._context_indexes.clear()
            self._context_indexes[key] = RuleIndex(rules) if rules else None
        return self._context_indexes[key]

    def _match_raw(self, logsource: LogSource, record: dict[str, Any]) -> list[CompiledRule]:
        if self.indexed:
            last_logsource, index = self._last  # events of one source usually share their LogSource object
            if index is None or last_logsource is not logsource:
                index = self.index_for(logsource)
                self._last = (logsource, index)
            return index.match(record)
        return [rule for rule in self.rules_for(logsource) if not rule.contextual and rule.match(record)]

    def _merge(self, matched: list[CompiledRule], extra: list[CompiledRule]) -> list[CompiledRule]:
        if not extra:
            return matched
        return sorted([*matched, *extra], key=lambda rule: self._order[id(rule)])
