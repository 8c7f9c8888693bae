"""Read a field of a raw vendor record the way Sigma rules name it: a literal key first, then a dotted path."""

from __future__ import annotations

from typing import Any


def field_values(record: dict[str, Any], name: str) -> list[Any]:
    """The non-null values of field `name` in `record`; a list-valued field gives each of its elements.

    A literal key (even one containing dots) wins over a dotted path into nested objects; a path through a
    list collects the value from each element.
    """
    if name in record:
        return _flatten(record[name])
    found: list[Any] = []
    _walk(record, name.split("."), found)
    return found


def field_value(record: dict[str, Any], name: str) -> Any:
    """The field's value as one item: a scalar, a tuple for several values, None when absent or null."""
    values = field_values(record, name)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _walk(node: Any, parts: list[str], found: list[Any]) -> None:
    if isinstance(node, list):
        for element in node:
            _walk(element, parts, found)
        return
    if not isinstance(node, dict) or not parts:
        return
    for cut in range(len(parts), 0, -1):  # a nested key may itself contain dots
        key = ".".join(parts[:cut])
        if key in node:
            rest = parts[cut:]
            if rest:
                _walk(node[key], rest, found)
            else:
                found.extend(_flatten(node[key]))
            return


def _flatten(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return [item for element in value for item in _flatten(element)]
    return [value]
