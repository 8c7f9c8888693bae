"""Lower a pySigma rule's resolved condition tree to plain data, and compile the rule from it.

The lowered form is what `compiler.py` compiles and what the rule-set cache (`cache.py`) stores: nested lists of
strings, numbers and booleans only (JSON), so a cached rule set is read without pySigma and without running code.

Nodes: ``["and", [node, ...]]``, ``["or", [node, ...]]``, ``["not", node]``, ``["eq", field, value]``,
``["null", field]``, ``["exists", field, present]``, ``["ref", field, other_field, starts_with, ends_with]``,
``["keyword", value]``.

Values: ``["str", parts, cased]`` (each part a literal string, `MULTI` for ``*`` or `SINGLE` for ``?``),
``["bool", b]``, ``["num", n]``, ``["re", pattern, flags]``, ``["cidr", network]``, ``["cmp", operator, n]``,
``["exp", [value, ...]]`` (an expansion, any of its values), ``["ts", part]`` (a timestamp part, not supported)
and ``["type", name]`` (a value type the compiler does not know).
"""

from __future__ import annotations

import re
from typing import Any, Final

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

from custodes.detections.sigma.compiler import MULTI, SINGLE, CompiledRule, UnsupportedRuleError, build_rule
from custodes.detections.sigma.prefilter import requirements
from custodes.model import LogSource, Severity, stable_id

_DEFAULT_LEVEL: Final = Severity.MEDIUM
_RE_FLAGS: Final = {
    SigmaRegularExpressionFlag.IGNORECASE: int(re.IGNORECASE),
    SigmaRegularExpressionFlag.MULTILINE: int(re.MULTILINE),
    SigmaRegularExpressionFlag.DOTALL: int(re.DOTALL),
}


def compile_rule(rule: SigmaRule) -> CompiledRule:
    """Compile a parsed, pipeline-processed rule; raise `UnsupportedRuleError` if it cannot be evaluated."""
    parsed = [condition.parsed for condition in rule.detection.parsed_condition]
    source = rule.source.path if rule.source is not None else None
    return build_rule(
        id=str(rule.id) if rule.id is not None else rule.name or stable_id("sigma-rule", rule.title, str(source)),
        title=rule.title,
        level=Severity.parse(rule.level.name) if rule.level is not None else _DEFAULT_LEVEL,
        tags=[str(tag) for tag in rule.tags],
        logsource=LogSource(
            product=rule.logsource.product,
            service=rule.logsource.service,
            category=rule.logsource.category,
        ),
        description=rule.description,
        conditions=[lower(condition) for condition in parsed],
        source=source,
        requirements=requirements(parsed),
    )


def lower(node: Any) -> list[Any]:
    """A resolved condition (sub)tree as plain data (see the module docstring)."""
    if node is None:
        raise UnsupportedRuleError(
            "the condition refers to no detection (an 'x of' pattern matched no identifier, "
            "or a processing pipeline dropped every item)"
        )
    if isinstance(node, ConditionAND):
        return ["and", [lower(arg) for arg in node.args]]
    if isinstance(node, ConditionOR):
        return ["or", [lower(arg) for arg in node.args]]
    if isinstance(node, ConditionNOT):
        return ["not", lower(node.args[0] if node.args else None)]
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = node.value
        if isinstance(value, SigmaNull):
            return ["null", node.field]
        if isinstance(value, SigmaExists):
            return ["exists", node.field, value.exists]
        if isinstance(value, SigmaFieldReference):
            return ["ref", node.field, value.field, value.starts_with, value.ends_with]
        try:
            return ["eq", node.field, lower_value(value)]
        except UnsupportedRuleError as exc:
            raise UnsupportedRuleError(str(exc), exc.field or node.field) from None
    if isinstance(node, ConditionValueExpression):
        return ["keyword", lower_value(node.value)]
    raise UnsupportedRuleError(f"unsupported condition element {type(node).__name__}")


def lower_value(value: SigmaType) -> list[Any]:
    """One detection value as plain data."""
    if isinstance(value, SigmaExpansion):
        return ["exp", [lower_value(item) for item in value.values]]
    if isinstance(value, SigmaString):
        return ["str", _parts(value), isinstance(value, SigmaCasedString)]
    if isinstance(value, SigmaBool):
        return ["bool", value.boolean]
    if isinstance(value, SigmaTimestampPart):
        return ["ts", value.timestamp_part.name.lower()]
    if isinstance(value, SigmaNumber):
        return ["num", value.number]
    if isinstance(value, SigmaRegularExpression):
        if value.regexp.contains_placeholder():
            raise UnsupportedRuleError("unresolved placeholder in a regular expression (|expand|re)")
        flags = 0
        for flag in value.flags:
            flags |= _RE_FLAGS[flag]
        return ["re", value.regexp.to_plain(), flags]
    if isinstance(value, SigmaCIDRExpression):
        return ["cidr", str(value.network)]
    if isinstance(value, SigmaCompareExpression):
        return ["cmp", value.op.name, value.number.number]
    return ["type", type(value).__name__]


def _parts(value: SigmaString) -> list[str | int]:
    parts: list[str | int] = []
    for part in value.s:
        if isinstance(part, Placeholder):
            raise UnsupportedRuleError(
                f"unresolved placeholder %{part.name}% (the |expand modifier needs a processing pipeline "
                "that supplies its values)"
            )
        if part is SpecialChars.WILDCARD_MULTI:
            parts.append(MULTI)
        elif part is SpecialChars.WILDCARD_SINGLE:
            parts.append(SINGLE)
        else:
            parts.append(str(part))
    return parts
