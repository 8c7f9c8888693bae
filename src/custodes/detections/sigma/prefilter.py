"""Necessary literal conditions of a Sigma detection, read off pySigma's condition tree.

A `Requirement` is a set of alternatives of which every matching event satisfies at least one: a field whose
case-folded text equals a literal, or a field (or, for keywords, any string of the event) whose case-folded text
contains a literal. The index (`index.py`) only tests a rule against an event that satisfies one of the rule's
requirements, so a requirement must never be stronger than the detection: every value type whose matching is not
plain text comparison (numbers, networks, comparisons, null, existence, field references, case-insensitive regular
expressions) and every negation yields no requirement at all; a case-sensitive regular expression requires the
longest literal run at its top level.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaExpansion,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

from custodes.detections.sigma.requirement import Requirement

MIN_SUBSTRING: Final = 3
"""Shorter ASCII literals are found in nearly every event and would not narrow anything down."""

_MAX_ALTERNATIVES: Final = 512


def requirements(conditions: Sequence[Any]) -> tuple[Requirement, ...]:
    """The requirements of a rule whose parsed conditions (OR-linked) are `conditions`; () if it has none.

    Each requirement holds on its own; the index chooses among them with statistics over all rules.
    """
    if len(conditions) == 1:
        return _options(conditions[0])
    return _any_of([_options(condition) for condition in conditions])


def _options(node: Any) -> tuple[Requirement, ...]:
    """Requirements that each hold for every event matching `node` (several for AND, at most one otherwise)."""
    if isinstance(node, ConditionAND):
        options: list[Requirement] = []
        for arg in node.args:
            options.extend(_options(arg))
        return tuple(dict.fromkeys(options))
    if isinstance(node, ConditionOR):
        return _any_of([_options(arg) for arg in node.args])
    if isinstance(node, ConditionNOT):
        return ()
    if isinstance(node, ConditionFieldEqualsValueExpression):
        found = _value_requirement(node.field, node.value)
        return (found,) if found is not None else ()
    if isinstance(node, ConditionValueExpression):
        found = _value_requirement(None, node.value)
        return (found,) if found is not None else ()
    return ()


def _any_of(choices: Iterable[tuple[Requirement, ...]]) -> tuple[Requirement, ...]:
    """The requirement of an OR: the union of one requirement per branch, or none if a branch has none."""
    merged = Requirement()
    for options in choices:
        if not options:
            return ()
        merged = merged | min(options, key=_local_cost)
        if len(merged) > _MAX_ALTERNATIVES:
            return ()
    return (merged,) if len(merged) else ()


def _local_cost(requirement: Requirement) -> tuple[int, int, int]:
    """Order of preference without corpus statistics: exact values, few fields, few alternatives, long literals."""
    shortest = min((len(text) for _, text in requirement.contains), default=64)
    return (0 if requirement.only_exact else 1, len(requirement.fields), len(requirement) * 64 - shortest)


def _value_requirement(field: str | None, value: SigmaType) -> Requirement | None:
    if isinstance(value, SigmaExpansion):
        merged = Requirement()
        for item in value.values:
            found = _value_requirement(field, item)
            if found is None:
                return None
            merged = merged | found
        return merged
    if isinstance(value, SigmaBool) and field is not None:
        return Requirement(exact=frozenset({(field, "true" if value.boolean else "false")}))
    if isinstance(value, SigmaNumber) and not isinstance(value, SigmaTimestampPart):
        if field is not None:  # a field number matches by numeric value (4688, 4688.0, "4688"), looked up so
            return Requirement(numbers=frozenset({(field, value.number)}))
        return _substring(None, str(value.number))  # a keyword number is searched as its text
    if isinstance(value, SigmaString):
        return _string_requirement(field, value)
    if isinstance(value, SigmaRegularExpression) and field is not None:
        return _regex_requirement(field, value)
    return None


def _regex_requirement(field: str, value: SigmaRegularExpression) -> Requirement | None:
    """The longest literal run at the top level of a case-sensitive pattern (every match contains it)."""
    if value.flags or value.regexp.contains_placeholder():
        return None
    try:
        parsed = re._parser.parse(value.regexp.to_plain())  # type: ignore[attr-defined]
    except re.error:
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    runs = [""]
    for op, argument in parsed:
        if op is re._constants.LITERAL:  # type: ignore[attr-defined]
            runs[-1] += chr(argument)
        else:
            runs.append("")
    longest = max(runs, key=len)
    return _substring(field, longest.lower()) if longest.isascii() else None


def _string_requirement(field: str | None, value: SigmaString) -> Requirement | None:
    cased = isinstance(value, SigmaCasedString)
    parts = list(value.s)
    if any(not isinstance(part, str | SpecialChars) for part in parts):  # a placeholder
        return None
    literals = [part for part in parts if isinstance(part, str)]
    if field is not None and len(literals) == len(parts):
        return Requirement(exact=frozenset({(field, "".join(literals).lower())}))
    joined: list[str] = []
    current = ""
    for part in parts:
        if isinstance(part, str):
            current += part
        else:
            joined.append(current)
            current = ""
    joined.append(current)
    longest = max(joined, key=len)
    if cased and not longest.isascii():  # folding is not context-free outside ASCII (final sigma)
        return None
    return _substring(field, longest.lower())


def _substring(field: str | None, text: str) -> Requirement | None:
    if len(text) < MIN_SUBSTRING and (text.isascii() or not text):  # non-ASCII text is rare even when short
        return None
    return Requirement(contains=frozenset({(field, text)}))
