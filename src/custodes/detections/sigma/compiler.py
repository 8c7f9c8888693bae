"""Compile a lowered Sigma condition tree into a Python predicate over a raw vendor record.

The condition tree pySigma resolves, lowered to plain data (`lowering.py`), is walked once per rule and turned
into nested closures; nothing is interpreted per event. Sibling comparisons on the same field are grouped so
that the field is looked up and case-folded once, and literal strings are merged into sets and tuples
(equality, prefix, suffix, substring) or a single anchored regular expression.

Matching semantics:

- Strings compare case-insensitively unless ``|cased``; ``*`` and ``?`` are wildcards, ``\\*`` a literal star.
- Non-string scalars are compared through their JSON text (``4688``, ``true``), so a quoted rule value matches
  a numeric field and vice versa; Sigma numbers match numbers and numeric strings.
- ``null`` matches a missing field or a JSON null; ``|exists`` tests presence of a non-null value.
- A list-valued field matches when any element matches; a nested dict never matches a value.
- Field names are looked up as literal keys first, then as dotted paths into nested dicts (through lists).
- Keywords (values without a field) match when any string anywhere in the record contains them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import ahocorasick

from custodes.detections.sigma.enrichment import ENRICHMENT_FIELD, ENRICHMENT_PREFIX
from custodes.detections.sigma.fields import scalars
from custodes.detections.sigma.regexes import search_test
from custodes.model import LogSource, Severity

if TYPE_CHECKING:
    from custodes.detections.sigma.requirement import Requirement

Matcher = Callable[[dict[str, Any]], bool]
"""A compiled predicate over a raw event record."""

_ValueTest = Callable[[Any, str, str], bool]
"""A test of one scalar: the raw value, its text and its case-folded text."""

_Getter = Callable[[dict[str, Any]], Any]
Node = Sequence[Any]
"""A lowered condition node or value (see `lowering.py`): a tag, then its arguments."""

MULTI: Final = 0
"""A `*` wildcard in the parts of a lowered string."""
SINGLE: Final = 1
"""A `?` wildcard in the parts of a lowered string."""

_MISSING: Final = object()
_AUTOMATON_MIN: Final = 6
"""From this many substrings of one field on, one Aho-Corasick pass beats testing each with `in`."""
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
    "NEQ": lambda a, b: a != b,
}


class UnsupportedRuleError(Exception):
    """A rule uses a Sigma feature the in-process matcher cannot evaluate faithfully; `field` names where."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A Sigma rule ready to match raw event records.

    `level` is `Severity.MEDIUM` when the rule declares none; `source` is the file the rule came from;
    `requirements` are necessary literal conditions the index may use to skip the rule (see `prefilter.py`): a
    copy whose `match` is narrowed (a filter, a suppression) may keep them, one whose `match` is widened may not.
    `contextual` rules read Custodes' enrichment fields (`custodes.*`, see `enrichment.py`): the engine matches
    them against the record with its `custodes` object added, and all other rules against the raw record.
    `conditions` are the lowered conditions the detection was compiled from (what the rule-set cache stores; an
    override's narrowing of `match` is not in them).
    """

    id: str
    title: str
    level: Severity
    tags: list[str]
    logsource: LogSource
    description: str | None
    match: Matcher
    source: Path | None = None
    requirements: tuple[Requirement, ...] = ()
    contextual: bool = False
    conditions: tuple[Node, ...] = ()


def build_rule(
    *,
    id: str,
    title: str,
    level: Severity,
    tags: list[str],
    logsource: LogSource,
    description: str | None,
    conditions: Sequence[Node],
    source: Path | None,
    requirements: tuple[Requirement, ...],
    deferred: bool = False,
) -> CompiledRule:
    """A rule compiled from its lowered conditions (OR-linked); `UnsupportedRuleError` if one cannot be evaluated.

    `deferred` compiles on the rule's first match instead, for conditions known to compile (read back from the
    rule-set cache): a command that tests a record against a few of many rules compiles only those.
    """
    return CompiledRule(
        id=id,
        title=title,
        level=level,
        tags=tags,
        logsource=logsource,
        description=description,
        match=_Deferred(conditions) if deferred else compile_conditions(conditions),
        source=source,
        requirements=requirements,
        contextual=any(_reads_enrichment(condition) for condition in conditions),
        conditions=tuple(conditions),
    )


def compile_conditions(conditions: Sequence[Node]) -> Matcher:
    """The matcher of OR-linked lowered conditions."""
    return _any([_compile_node(condition) for condition in conditions])


class _Deferred:
    """A matcher compiled when first called."""

    __slots__ = ("_conditions", "_match")

    def __init__(self, conditions: Sequence[Node]) -> None:
        self._conditions = conditions
        self._match: Matcher | None = None

    def __call__(self, event: dict[str, Any]) -> bool:
        match = self._match
        if match is None:
            match = self._match = compile_conditions(self._conditions)
        return match(event)


def _reads_enrichment(node: Node) -> bool:
    """Whether a condition tree names a field of Custodes' enrichment namespace (`custodes.*`)."""
    tag = node[0]
    if tag in ("and", "or"):
        return any(_reads_enrichment(arg) for arg in node[1])
    if tag == "not":
        return _reads_enrichment(node[1])
    if tag == "keyword":
        return False
    names = [node[1], node[2] if tag == "ref" else ""]
    return any(name == ENRICHMENT_FIELD or name.startswith(ENRICHMENT_PREFIX) for name in names)


# Condition tree ---------------------------------------------------------------------------------------


def _compile_node(node: Node) -> Matcher:
    tag = node[0]
    if tag == "and":
        return _compile_linked(node[1], link_all=True)
    if tag == "or":
        return _compile_linked(node[1], link_all=False)
    if tag == "not":
        inner = _compile_node(node[1])
        return lambda event: not inner(event)
    if tag == "eq":
        return _field_matcher(node[1], [node[2]], link_all=False)
    if tag == "keyword":
        return _keyword_matcher([node[1]], link_all=False)
    return _field_level_matcher(node)


def _compile_linked(args: Sequence[Node], *, link_all: bool) -> Matcher:
    """AND (`link_all`) or OR over `args`, grouping comparisons on the same field and all keywords."""
    operator = "and" if link_all else "or"
    flat: list[Node] = []
    pending = list(reversed(args))
    while pending:
        arg = pending.pop()
        if arg[0] == operator:
            pending.extend(reversed(arg[1]))
        else:
            flat.append(arg)

    by_field: dict[str, list[Node]] = {}
    keywords: list[Node] = []
    others: list[Matcher] = []
    for arg in flat:
        if arg[0] == "eq":
            by_field.setdefault(arg[1], []).append(arg[2])
        elif arg[0] == "keyword":
            keywords.append(arg[1])
        else:
            others.append(_compile_node(arg))
    matchers = [_field_matcher(name, values, link_all=link_all) for name, values in by_field.items()]
    matchers.extend(others)
    if keywords:  # walking the whole record is the most expensive test: keep it last
        matchers.append(_keyword_matcher(keywords, link_all=link_all))
    return _all(matchers) if link_all else _any(matchers)


def _any(matchers: Sequence[Matcher]) -> Matcher:
    if len(matchers) == 1:
        return matchers[0]
    if len(matchers) == 2:
        first, second = matchers
        return lambda event: first(event) or second(event)
    items = tuple(matchers)

    def match_any(event: dict[str, Any]) -> bool:
        for matcher in items:  # noqa: SIM110 - a plain loop avoids a generator per event
            if matcher(event):
                return True
        return False

    return match_any


def _all(matchers: Sequence[Matcher]) -> Matcher:
    if len(matchers) == 1:
        return matchers[0]
    if len(matchers) == 2:
        first, second = matchers
        return lambda event: first(event) and second(event)
    items = tuple(matchers)

    def match_all(event: dict[str, Any]) -> bool:
        for matcher in items:  # noqa: SIM110 - a plain loop avoids a generator per event
            if not matcher(event):
                return False
        return True

    return match_all


# Fields -----------------------------------------------------------------------------------------------


def _getter(name: str) -> _Getter:
    """Look `name` up as a literal key, then as a dotted path; `_MISSING` when absent."""
    if "." not in name:
        return lambda event: event.get(name, _MISSING)
    parts = tuple(name.split("."))
    rests = tuple(".".join(parts[index:]) for index in range(len(parts)))  # joined once, not on every lookup
    if len(parts) == 2:  # the common `requestParameters.userName`: the same lookups as `_walk`, inline
        outer, inner = parts

        def get_two(event: dict[str, Any]) -> Any:
            value = event.get(name, _MISSING)
            if value is not _MISSING:
                return value
            parent = event.get(outer, _MISSING)
            if type(parent) is dict:
                return parent.get(inner, _MISSING)
            return _walk(event, parts, rests, 0) if type(parent) is list else _MISSING

        return get_two

    def get(event: dict[str, Any]) -> Any:
        value = event.get(name, _MISSING)
        return _walk(event, parts, rests, 0) if value is _MISSING else value

    return get


MISSING: Final = _MISSING
"""What a field getter returns for a field the record does not have."""


def field_getter(name: str) -> Callable[[dict[str, Any]], Any]:
    """How rules look field `name` up: a literal key first, then a dotted path; `MISSING` when absent."""
    return _getter(name)


def folded_texts(value: Any) -> list[str]:
    """The case-folded texts of a looked-up value's scalars (each element of a list), as comparisons read them."""
    return _folded_texts(value)


def numeric_values(value: Any) -> list[int | float]:
    """The numeric values of a looked-up value's scalars (numbers and numeric strings), as number tests read them."""
    if value is _MISSING or value is None:
        return []
    items = scalars(value) if type(value) is list else (value,)
    return [
        number for item in items if (text := _text(item)) is not None and (number := _number(item, text)) is not None
    ]


def folded_strings(event: dict[str, Any]) -> list[str]:
    """The case-folded text of every string in the record (what keywords are searched in)."""
    return [text.lower() for text in _strings(event)]


def _walk(node: Any, parts: tuple[str, ...], rests: tuple[str, ...], start: int) -> Any:
    """`parts` looked up from `node` on, level `start` first; `rests[i]` is `parts[i:]` joined by dots."""
    current = node
    for index in range(start, len(parts)):
        if isinstance(current, dict):
            if index > start and len(parts) - index > 1:  # a nested key may itself contain dots
                value = current.get(rests[index], _MISSING)
                if value is not _MISSING:
                    return value
            current = current.get(parts[index], _MISSING)
            if current is _MISSING:
                return _MISSING
        elif isinstance(current, list):  # each element looked in (of nested lists too: recursion is by path part)
            found: list[Any] = []
            for element in scalars(current):
                value = _walk(element, parts, rests, index)
                if isinstance(value, list):
                    found.extend(value)
                elif value is not _MISSING:
                    found.append(value)
            return found if found else _MISSING
        else:
            return _MISSING
    return current


def _text(value: Any) -> str | None:
    """The text a scalar is compared as (JSON spelling for booleans); None for null, dicts and lists."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    return None


def _number(value: Any, text: str) -> int | float | None:
    """The numeric value of a number or a numeric string."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    if kind is not str or "_" in text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _field_matcher(name: str, values: Sequence[Node], *, link_all: bool) -> Matcher:
    """Compare one field against `values`: any of them (OR) or each of them (AND)."""
    get = _getter(name)
    try:
        if link_all and len(values) > 1:
            return _each_value_matcher(get, [_single_test(value) for value in values])
        built = _merged_test(values)
    except UnsupportedRuleError as exc:
        raise UnsupportedRuleError(str(exc), exc.field or name) from None
    match_value = _value_matcher(built.test, built.fold)
    check = built.folded_check
    numbers = built.numbers
    if numbers is not None:

        def match_number(event: dict[str, Any]) -> bool:
            value = get(event)
            kind = type(value)
            if kind is int or kind is float:  # the common case: a numeric field (EventID) and numeric values
                return value in numbers
            return match_value(value)

        return match_number
    if check is None:
        return lambda event: match_value(get(event))

    def match(event: dict[str, Any]) -> bool:
        value = get(event)
        if type(value) is str:  # the common case: a string field and case-insensitive string values
            return check(value.lower())
        return match_value(value)

    return match


def _value_matcher(test: _ValueTest, fold: bool) -> Callable[[Any], bool]:
    def match_value(value: Any) -> bool:
        if value is _MISSING or value is None:
            return False
        if type(value) is list:
            for element in scalars(value):
                item = _prepare(element, fold)
                if item is not None and test(*item):
                    return True
            return False
        text = _text(value)
        if text is None:
            return False
        return test(value, text, text.lower() if fold else text)

    return match_value


def _each_value_matcher(get: _Getter, built: list[_Built]) -> Matcher:
    """Every test must hold for the field (for a list-valued field: each for some element)."""
    tests = tuple(item.test for item in built)
    fold = any(item.fold for item in built)

    def match_each(event: dict[str, Any]) -> bool:
        value = get(event)
        if value is _MISSING or value is None:
            return False
        if type(value) is list:
            prepared = [item for element in scalars(value) if (item := _prepare(element, fold)) is not None]
            return all(any(test(*item) for item in prepared) for test in tests)
        item = _prepare(value, fold)
        if item is None:
            return False
        for test in tests:  # noqa: SIM110 - a plain loop avoids a generator per event
            if not test(*item):
                return False
        return True

    return match_each


def _prepare(value: Any, fold: bool) -> tuple[Any, str, str] | None:
    text = _text(value)
    if text is None:
        return None
    return value, text, text.lower() if fold else text


def _field_level_matcher(node: Node) -> Matcher:
    """Null, existence and field-reference tests, which look at the field itself rather than a value."""
    tag = node[0]
    get = _getter(node[1])
    if tag == "null" or (tag == "exists" and not node[2]):
        return lambda event: (found := get(event)) is _MISSING or found is None
    if tag == "exists":
        return lambda event: (found := get(event)) is not _MISSING and found is not None
    if tag != "ref":
        raise UnsupportedRuleError(f"unsupported condition element {tag!r}")
    _, _, other_field, starts_with, ends_with = node
    other = _getter(other_field)
    compare: Callable[[str, str], bool]
    if starts_with and ends_with:
        compare = _contains
    elif starts_with:
        compare = str.startswith
    elif ends_with:
        compare = str.endswith
    else:
        compare = str.__eq__

    def match_reference(event: dict[str, Any]) -> bool:
        left, right = _folded_texts(get(event)), _folded_texts(other(event))
        return any(compare(a, b) for a in left for b in right)

    return match_reference


def _contains(text: str, part: str) -> bool:
    return part in text


def _folded_texts(value: Any) -> list[str]:
    if value is _MISSING or value is None:
        return []
    items = scalars(value) if type(value) is list else (value,)
    return [text.lower() for text in map(_text, items) if text is not None]


# Keywords ---------------------------------------------------------------------------------------------


def _keyword_matcher(values: Sequence[Node], *, link_all: bool) -> Matcher:
    """Values without a field: searched (as substrings) in every string of the record."""
    keywords = [_keyword_value(value) for value in values]
    if link_all:
        built = [_single_test(value) for value in keywords]
        tests = tuple(item.test for item in built)
        fold = any(item.fold for item in built)

        def match_each(event: dict[str, Any]) -> bool:
            strings = [(text, text, text.lower() if fold else text) for text in _strings(event)]
            return all(any(test(*item) for item in strings) for test in tests)

        return match_each

    merged = _merged_test(keywords)
    test, fold = merged.test, merged.fold

    def match(event: dict[str, Any]) -> bool:
        for text in _strings(event):  # noqa: SIM110 - a plain loop avoids a generator per event
            if test(text, text, text.lower() if fold else text):
                return True
        return False

    return match


_TYPE_NAMES: Final = {
    "bool": "SigmaBool",
    "cidr": "SigmaCIDRExpression",
    "cmp": "SigmaCompareExpression",
    "ts": "SigmaTimestampPart",
}


def _keyword_value(value: Node) -> Node:
    """A keyword as an unanchored pattern: plain strings and numbers are wrapped in `*`."""
    tag = value[0]
    if tag == "exp":
        return ["exp", [_keyword_value(item) for item in value[1]]]
    if tag == "num":
        value = ["str", [str(value[1])], False]
        tag = "str"
    if tag == "str":
        parts = list(value[1])
        if not parts or parts[0] != MULTI:
            parts.insert(0, MULTI)
        if parts[-1] != MULTI:
            parts.append(MULTI)
        return ["str", parts, value[2]]
    if tag == "re":
        return value
    name = value[1] if tag == "type" else _TYPE_NAMES.get(tag, tag)
    raise UnsupportedRuleError(f"unsupported keyword value of type {name}")


def _strings(node: Any) -> Iterator[str]:
    """Every string in `node`, in document order, however deep (a loop: the nesting is the record's)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))


# Values -----------------------------------------------------------------------------------------------


def _single_test(value: Node) -> _Built:
    builder = _TestBuilder()
    builder.add(value)
    return builder.build()


def _merged_test(values: Sequence[Node]) -> _Built:
    builder = _TestBuilder()
    for value in values:
        builder.add(value)
    return builder.build()


class _StringPatterns:
    """Literal-string comparisons of one case mode, merged into the cheapest checks."""

    def __init__(self) -> None:
        self.equal: set[str] = set()
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.substrings: list[str] = []
        self.globs: list[list[str]] = []
        """Patterns of literals around two or more `*` (and no `?`): their literal segments."""
        self.regexes: list[str] = []
        self.any_text = False

    def add(self, value: Sequence[str | int], *, fold: bool) -> None:
        parts = _wildcard_parts(value)
        literal = [part.lower() if fold and isinstance(part, str) else part for part in parts]
        multi = MULTI
        strings = [part for part in literal if isinstance(part, str)]
        specials = len(literal) - len(strings)
        if specials == 0:
            self.equal.add("".join(strings))
        elif literal == [multi]:
            self.any_text = True
        elif len(literal) == 2 and literal[0] is multi and len(strings) == 1:
            self.suffixes.append(strings[0])
        elif len(literal) == 2 and literal[1] is multi and len(strings) == 1:
            self.prefixes.append(strings[0])
        elif len(literal) == 3 and literal[0] is multi and literal[2] is multi and len(strings) == 1:
            self.substrings.append(strings[0])
        elif not any(part is SINGLE for part in literal):
            segments = [""]
            for part in literal:
                if isinstance(part, str):
                    segments[-1] += part
                else:
                    segments.append("")
            self.globs.append(segments)
        else:
            self.regexes.append("".join(_regex_part(part) for part in literal))

    def checks(self) -> list[Callable[[str], bool]]:
        """One check per kind of comparison, each taking the (case-folded or original) text."""
        if self.any_text:
            return [_always]
        checks: list[Callable[[str], bool]] = []
        if self.equal:
            checks.append(frozenset(self.equal).__contains__)
        if self.prefixes:
            prefixes = tuple(self.prefixes)
            checks.append(lambda text: text.startswith(prefixes))
        if self.suffixes:
            suffixes = tuple(self.suffixes)
            checks.append(lambda text: text.endswith(suffixes))
        if self.substrings:
            checks.append(_substring_check(self.substrings))
        if self.globs:
            checks.append(_glob_check(self.globs))
        if self.regexes:
            pattern = re.compile("|".join(f"(?:{regex})" for regex in self.regexes), re.DOTALL)
            checks.append(lambda text: pattern.fullmatch(text) is not None)
        return checks


def _glob_check(globs: list[list[str]]) -> Callable[[str], bool]:
    """Whether a text matches any of `globs` whole, each the literal segments around its `*`s: the first a prefix,
    the last a suffix, those between found in order between them (the leftmost place of each is always the best).
    Linear in the text, where a backtracking regex is quadratic or worse on a crafted value (`*\\*.exe` as a regex
    took 3.3 s on 100,000 backslashes: `bench/crafted_values.py`)."""
    patterns = [(glob[0], glob[1:-1], glob[-1]) for glob in globs]

    def matches_any(text: str) -> bool:
        size = len(text)
        for first, middle, last in patterns:
            end = size - len(last)
            if end < len(first) or not text.startswith(first) or not text.endswith(last):
                continue
            position = len(first)
            for segment in middle:
                found = text.find(segment, position, end)
                if found < 0:
                    break
                position = found + len(segment)
            else:
                return True
        return False

    return matches_any


def _substring_check(substrings: list[str]) -> Callable[[str], bool]:
    """Whether a text contains any of `substrings`: `in` for a few, an automaton for many."""
    if len(substrings) == 1:
        substring = substrings[0]
        return lambda text: substring in text
    if len(substrings) < _AUTOMATON_MIN:
        items = tuple(substrings)
        return lambda text: any(part in text for part in items)
    return _substring_automaton(substrings)


def _substring_automaton(substrings: list[str]) -> Callable[[str], bool]:
    """Whether a text contains any of many substrings, in one Aho-Corasick pass."""
    automaton = ahocorasick.Automaton()
    for part in substrings:
        if part == "":  # the empty string is in every text
            return _always
        automaton.add_word(part, None)
    automaton.make_automaton()
    iterate = automaton.iter

    def contains_any(text: str) -> bool:
        for _ in iterate(text):
            return True
        return False

    return contains_any


def _always(text: str) -> bool:
    return True


def _any_check(checks: list[Callable[[str], bool]]) -> Callable[[str], bool]:
    if len(checks) == 1:
        return checks[0]
    items = tuple(checks)

    def check_any(text: str) -> bool:
        for check in items:  # noqa: SIM110 - a plain loop avoids a generator per event
            if check(text):
                return True
        return False

    return check_any


def _on_text(check: Callable[[str], bool]) -> _ValueTest:
    return lambda raw, text, folded: check(text)


def _on_folded(check: Callable[[str], bool]) -> _ValueTest:
    return lambda raw, text, folded: check(folded)


def _wildcard_parts(value: Sequence[str | int]) -> list[str | int]:
    parts: list[str | int] = []
    for part in value:
        if part == MULTI and parts and parts[-1] == MULTI:
            continue
        if isinstance(part, str) and parts and isinstance(parts[-1], str):
            parts[-1] += part
        else:
            parts.append(part)
    return parts


def _regex_part(part: str | int) -> str:
    if part == MULTI:
        return ".*"
    if part == SINGLE:
        return "."
    return re.escape(str(part))


class _TestBuilder:
    """Collects the values of one field comparison and builds a single OR-linked scalar test."""

    def __init__(self) -> None:
        self.folded = _StringPatterns()
        self.cased = _StringPatterns()
        self.numbers: set[int | float] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.tests: list[_ValueTest] = []

    def add(self, value: Node) -> None:
        tag = value[0]
        if tag == "exp":
            for item in value[1]:
                self.add(item)
        elif tag == "str":
            if value[2]:
                self.cased.add(value[1], fold=False)
            else:
                self.folded.add(value[1], fold=True)
        elif tag == "bool":
            self.folded.equal.add("true" if value[1] else "false")
        elif tag == "ts":
            raise UnsupportedRuleError(f"not yet supported: timestamp part modifier |{value[1]}")
        elif tag == "num":
            self.numbers.add(value[1])
        elif tag == "re":
            self.tests.append(_regex_test(value[1], value[2]))
        elif tag == "cidr":
            self.networks.append(ipaddress.ip_network(value[1]))
        elif tag == "cmp":
            self.tests.append(_compare_test(value[1], value[2]))
        else:
            raise UnsupportedRuleError(f"unsupported value type {value[1]}")

    def build(self) -> _Built:
        """The combined test."""
        folded_checks = self.folded.checks()
        cased_checks = self.cased.checks()
        tests: list[_ValueTest] = []
        if folded_checks:
            tests.append(_on_folded(_any_check(folded_checks)))
        if cased_checks:
            tests.append(_on_text(_any_check(cased_checks)))
        if self.numbers:
            numbers = frozenset(self.numbers)
            tests.append(lambda raw, text, folded: _number(raw, text) in numbers)
        if self.networks:
            tests.append(_cidr_test(tuple(self.networks)))
        tests.extend(self.tests)
        if not tests:
            raise UnsupportedRuleError("a detection item has no value to compare")
        only_folded = len(tests) == 1 and bool(folded_checks)
        only_numbers = frozenset(self.numbers) if len(tests) == 1 and self.numbers else None
        return _Built(
            _any_test(tests), bool(folded_checks), _any_check(folded_checks) if only_folded else None, only_numbers
        )


@dataclass(frozen=True, slots=True)
class _Built:
    """A scalar test; whether it reads the folded text; the string check alone when that is all it does; the
    numbers alone when that is all it compares."""

    test: _ValueTest
    fold: bool
    folded_check: Callable[[str], bool] | None
    numbers: frozenset[int | float] | None = None


def _any_test(tests: list[_ValueTest]) -> _ValueTest:
    if len(tests) == 1:
        return tests[0]
    items = tuple(tests)

    def test_any(raw: Any, text: str, folded: str) -> bool:
        for test in items:  # noqa: SIM110 - a plain loop avoids a generator per event
            if test(raw, text, folded):
                return True
        return False

    return test_any


def _regex_test(regex: str, flags: int) -> _ValueTest:
    try:
        search = search_test(regex, flags)
    except re.error as exc:
        raise UnsupportedRuleError(f"invalid regular expression {regex!r}: {exc}") from None
    return lambda raw, text, folded: search(text)


def _compare_test(operator_name: str, bound: float) -> _ValueTest:
    operator = _COMPARE[operator_name]

    def test(raw: Any, text: str, folded: str) -> bool:
        number = _number(raw, text)
        return number is not None and operator(number, bound)

    return test


def _cidr_test(networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> _ValueTest:
    def test(raw: Any, text: str, folded: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in network for network in networks)

    return test
