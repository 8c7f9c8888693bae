"""Read a field of a raw vendor record the way Sigma rules name it: a literal key first, then a dotted path; and the
record rules are matched against (`match_view`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from custodes.connectors.windows import flatten


def match_view(record: dict[str, Any]) -> dict[str, Any]:
    """What rules are matched against: the record as it is, except a Windows event rendered as evtx JSON
    (`{"Event": {"System": ..., "EventData": ...}}`, as `evtx_dump` writes it), matched by its flat field view
    (`EventID`, `Channel`, `Provider_Name`, the event's data by name), as Sigma's Windows rules are written and as
    Splunk, Sentinel and Winlogbeat's `event_data` hold it. The record itself is not changed."""
    event = record.get("Event")
    if type(event) is dict and type(event.get("System")) is dict:
        return flatten(record)
    return record


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
    """The values at `parts` under `node` into `found`; the elements of a list (of lists, however deep) each looked
    in. Recursion is by path part only, so its depth is the field name's."""
    for element in scalars(node) if isinstance(node, list) else (node,):
        if not isinstance(element, dict) or not parts:
            continue
        for cut in range(len(parts), 0, -1):  # a nested key may itself contain dots
            key = ".".join(parts[:cut])
            if key in element:
                rest = parts[cut:]
                if rest:
                    _walk(element[key], rest, found)
                else:
                    found.extend(_flatten(element[key]))
                break


def _flatten(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return [item for item in scalars(value) if item is not None]
    return [value]


def scalars(values: list[Any]) -> Iterator[Any]:
    """The items of a list and of the lists in it, in order, however deep (a loop: the nesting is the record's)."""
    stack = [iter(values)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            yield value
        else:
            stack.pop()
