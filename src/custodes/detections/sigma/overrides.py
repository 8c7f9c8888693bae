"""Per-rule overrides from configuration: disable a rule, change its level, suppress matches by field values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from custodes.config import RuleOverride, SuppressValue
from custodes.detections.sigma.compiler import CompiledRule
from custodes.detections.sigma.fields import field_values
from custodes.errors import Location, Problem
from custodes.model import Severity

Suppression = Callable[[dict[str, Any]], bool]
"""True when a record is suppressed."""


def suppression(conditions: Sequence[Mapping[str, SuppressValue | list[SuppressValue]]]) -> Suppression | None:
    """A predicate for `suppress:` conditions, or None when there are none.

    A record is suppressed when every field of some condition has one of that condition's values (strings
    compare case-insensitively, numbers and numeric strings by their text; any element of a list-valued field).
    """
    compiled = [
        [(name, _texts(wanted if isinstance(wanted, list) else [wanted])) for name, wanted in condition.items()]
        for condition in conditions
        if condition
    ]
    if not compiled:
        return None

    def suppressed(record: dict[str, Any]) -> bool:
        return any(all(_has_value(record, name, texts) for name, texts in condition) for condition in compiled)

    return suppressed


def apply_override(rule: CompiledRule, override: RuleOverride) -> CompiledRule:
    """`rule` with the override's level and suppression applied (`enabled` is handled by the loader)."""
    changes: dict[str, Any] = {}
    if override.level is not None:
        changes["level"] = Severity.parse(override.level)
    suppressed = suppression(override.suppress)
    if suppressed is not None:
        match = rule.match
        changes["match"] = lambda record: match(record) and not suppressed(record)
    return dataclasses.replace(rule, **changes) if changes else rule


def unknown_overrides(overrides: Mapping[str, RuleOverride], known: Collection[str]) -> list[Problem]:
    """A located problem for each override whose key is not the id (or name) of any rule that was read."""
    return [
        Problem(
            Location("configuration", field=f"detection.overrides.{rule_id}"),
            f"no rule has id {rule_id!r} (overrides name rules by their id; rejected rules count as known)",
        )
        for rule_id in overrides
        if rule_id not in known
    ]


def _texts(values: list[SuppressValue]) -> frozenset[str | None]:
    return frozenset(_text(value) for value in values)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower()


def _has_value(record: dict[str, Any], name: str, texts: frozenset[str | None]) -> bool:
    values = field_values(record, name)
    if not values:
        return None in texts
    return any(_text(value) in texts for value in values)
