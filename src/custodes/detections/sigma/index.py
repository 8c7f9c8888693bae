"""Select, for one event, the few rules of a route that can match it.

Each rule offers requirements (`prefilter.Requirement`): literal conditions every event it matches satisfies.
The index picks one per rule, the one the fewest events are expected to meet (exact values of a field the rules
compare with many different values, such as CloudTrail `eventName`, before long substrings, before short ones),
and files the rule under it:

- exact values go into one hash table per field, looked up with the event's case-folded value;
- numbers go into one hash table per field, looked up with the event's numeric value (as rules compare numbers);
- substrings go into one Aho-Corasick automaton per field, run once over the field's case-folded text (keywords:
  over every string of the event);
- rules without a requirement are tested against every event.

A rule whose chosen requirement many events are expected to meet (a short substring, a value of a field compared
with few values) is also filed under its next requirement (one without keywords), and is a candidate only for an
event that meets both: `Image|endswith: '\\powershell.exe'` alone no longer makes every PowerShell event a
candidate of every rule that also asks for a command-line substring.

The index only ever narrows the rules a matcher is run on, in load order, so results are identical to testing
every rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import ahocorasick

from custodes.detections.sigma.compiler import (
    MISSING,
    CompiledRule,
    field_getter,
    folded_strings,
    folded_texts,
    numeric_values,
)
from custodes.detections.sigma.requirement import Requirement

_SEPARATOR: Final = "\x00"
_PAIR_ABOVE: Final = 0.01
"""A rule whose cheapest requirement is expected to be met by more than this share of events (a substring under
20 characters, a value of a field compared with few values) is also filed under its next requirement, and is a
candidate only when an event meets both."""

_Record = dict[str, Any]
_Positions = tuple[int, ...]


class RuleIndex:
    """The rules of one route, indexed by their literal requirements."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        distinct: dict[str, set[str | int | float]] = {}
        for rule in self.rules:
            for option in rule.requirements:
                for name, value in (*option.exact, *option.numbers):
                    distinct.setdefault(name, set()).add(value)
        spread = Counter({name: len(values) for name, values in distinct.items()})
        self._spread = spread
        always: list[int] = []
        paired: set[int] = set()
        exact: dict[str, dict[str, list[int]]] = {}
        numbers: dict[str, dict[int | float, list[int]]] = {}
        contains: dict[str | None, dict[str, list[int]]] = {}

        def file(option: Requirement, entry: int) -> None:
            for name, value in option.exact:
                exact.setdefault(name, {}).setdefault(value, []).append(entry)
            for name, number in option.numbers:
                numbers.setdefault(name, {}).setdefault(number, []).append(entry)
            for scope, literal in option.contains:
                contains.setdefault(scope, {}).setdefault(literal, []).append(entry)

        for position, rule in enumerate(self.rules):
            if not rule.requirements:
                always.append(position)
                continue
            chosen, *others = sorted(rule.requirements, key=lambda option: _cost(option, spread))
            file(chosen, position)
            second = next((option for option in others if not any(scope is None for scope, _ in option.contains)), None)
            if second is not None and _cost(chosen, spread) > _PAIR_ABOVE:
                file(second, ~position)  # filed as ~position: the rule is a candidate only when both are met
                paired.add(position)
        self.always: _Positions = tuple(always)
        self._paired = frozenset(paired)
        self._exact: tuple[tuple[Callable[[_Record], Any], dict[str, _Positions]], ...] = tuple(
            (field_getter(name), {value: tuple(positions) for value, positions in table.items()})
            for name, table in sorted(exact.items(), key=lambda item: -len(item[1]))
        )
        self._numbers: tuple[tuple[Callable[[_Record], Any], dict[int | float, _Positions]], ...] = tuple(
            (field_getter(name), {value: tuple(positions) for value, positions in table.items()})
            for name, table in numbers.items()
        )
        self._automata = tuple(
            (field_getter(scope), _automaton(literals)) for scope, literals in contains.items() if scope is not None
        )
        self._keywords = _automaton(contains[None]) if None in contains else None

    @property
    def stats(self) -> dict[str, int]:
        """How the rules are filed: by exact value, by substring, or tested against every event."""
        tables: list[dict[Any, _Positions]] = [table for _, table in self._exact]
        tables.extend(table for _, table in self._numbers)
        exact = {
            position for table in tables for positions in table.values() for position in positions if position >= 0
        }
        indexed = len(self.rules) - len(self.always)
        return {
            "rules": len(self.rules),
            "exact": len(exact),
            "substring": indexed - len(exact),
            "always": len(self.always),
        }

    def literals(self) -> frozenset[str] | None:
        """Texts of which every record a rule here matches holds one in some string, case-folded (equal to it or
        containing it): for each rule, the texts of its cheapest requirement without numbers, a short text
        counting as common. None when a rule has no such requirement (it may match a record holding none).
        """
        texts: set[str] = set()
        for rule in self.rules:
            options = [option for option in rule.requirements if not option.numbers]
            if not options:
                return None
            chosen = min(options, key=lambda option: _text_cost(option, self._spread))
            texts.update(text for _, text in (*chosen.exact, *chosen.contains))
        return frozenset(texts)

    def candidates(self, record: _Record) -> list[CompiledRule]:
        """The rules that may match `record`, in load order (a superset of those that do)."""
        rules = self.rules
        return [rules[position] for position in self._positions(record)]

    def match(self, record: _Record) -> list[CompiledRule]:
        """The rules that match `record`, in load order."""
        rules = self.rules
        matched = []
        for position in self._positions(record):
            rule = rules[position]
            if rule.match(record):
                matched.append(rule)
        return matched

    def _positions(self, record: _Record) -> Sequence[int]:
        found: _Positions | None = None
        for get, table in self._exact:
            value = get(record)
            if type(value) is str:
                hit = table.get(value.lower())
                if hit is not None:
                    found = hit if found is None else found + hit
            elif value is not MISSING and value is not None:
                for item in folded_texts(value):
                    hit = table.get(item)
                    if hit is not None:
                        found = hit if found is None else found + hit
        for get, numbers in self._numbers:
            value = get(record)
            kind = type(value)
            if kind is int or kind is float:
                hit = numbers.get(value)
                if hit is not None:
                    found = hit if found is None else found + hit
            elif value is not MISSING and value is not None:
                for number in numeric_values(value):
                    hit = numbers.get(number)
                    if hit is not None:
                        found = hit if found is None else found + hit
        for get, automaton in self._automata:
            value = get(record)
            if type(value) is str:
                text = value.lower()
            elif value is MISSING or value is None:
                continue
            else:
                text = _SEPARATOR.join(folded_texts(value))
            for _, hit in automaton.iter(text):
                found = hit if found is None else found + hit
        if self._keywords is not None:
            for _, hit in self._keywords.iter(_SEPARATOR.join(folded_strings(record))):
                found = hit if found is None else found + hit
        if found is None:
            return self.always
        if self._paired and (min(found) < 0 or not self._paired.isdisjoint(found)):
            hits = set(found)
            paired = self._paired
            found = tuple(
                position for position in hits if position >= 0 and (position not in paired or ~position in hits)
            )
        elif not self.always and _increasing(found):
            return found
        return sorted({*found, *self.always})


def _automaton(literals: dict[str, list[int]]) -> Any:
    """An Aho-Corasick automaton over `literals`, each found with the positions of the rules requiring it."""
    automaton = ahocorasick.Automaton()
    for literal, positions in literals.items():
        automaton.add_word(literal, tuple(positions))
    automaton.make_automaton()
    return automaton


def _increasing(positions: _Positions) -> bool:
    """Whether `positions` is already in load order without repeats (always so for a single table hit)."""
    previous = -1
    for position in positions:
        if position <= previous:
            return False
        previous = position
    return True


def _cost(option: Requirement, spread: Counter[str]) -> float:
    """The estimated share of events that meet `option`: the fewer, the fewer rules tested in vain.

    Without event statistics, a value of a field that the rules compare with many different values (CloudTrail
    `eventName`) is taken to be rarer than one of a field with few (`eventSource`, `userIdentity.type`), and a
    long substring rarer than a short one.
    """
    exact = sum(1.0 / (1 + spread[name]) ** 2 for name, _ in (*option.exact, *option.numbers))
    contains = sum(4.0 / len(text) ** 2 for _, text in option.contains)
    return exact + contains


def _text_cost(option: Requirement, spread: Counter[str]) -> float:
    """`_cost` for a search of the texts anywhere in a record's line, where a short text is found far more often."""
    shortest = min(len(text) for _, text in (*option.exact, *option.contains))
    return _cost(option, spread) * (1 + 16 / max(shortest, 1) ** 2)
