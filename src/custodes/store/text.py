"""Text PostgreSQL refuses: the NUL character, in a text column or anywhere in a JSON document.

PostgreSQL fails the whole statement (and so every record committed with it) on one NUL; records are cleaned
before their transaction instead, NUL removed from every string, key and value alike.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from custodes.model import Event, Finding

NUL = "\x00"
Record = TypeVar("Record", Event, Finding)


def has_nul(value: Any) -> bool:
    """Whether a string, or any key or string inside a JSON-like value, holds a NUL (a loop, not recursion: the
    nesting is the record's)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list | tuple):
            stack += item
    return False


def without_nul(value: Any) -> Any:
    """The value with NUL removed from every string, key and value (a copy where anything changed; a tuple becomes a
    list), built by a loop, however deep."""
    if not isinstance(value, dict | list | tuple):
        return _clean(value)
    root: dict[Any, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, dict[Any, Any] | list[Any]]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        for key, item in source.items() if isinstance(source, dict) else enumerate(source):
            if isinstance(item, dict | list | tuple):
                child: Any = {} if isinstance(item, dict) else []
                stack.append((item, child))
            else:
                child = _clean(item)
            if isinstance(target, dict):
                target[_clean(key)] = child
            else:
                target.append(child)
    return root


def _clean(value: Any) -> Any:
    return value.replace(NUL, "") if isinstance(value, str) else value


def cleaned(record: Record) -> Record:
    """A dataclass record (an event, a finding) with NUL removed from its fields (itself when it has none)."""
    changes = {
        field.name: without_nul(getattr(record, field.name))
        for field in fields(record)
        if field.name != "warnings" and has_nul(getattr(record, field.name))
    }
    if not changes:
        return record
    if isinstance(record, Event):
        changes["warnings"] = [*record.warnings, f"NUL characters removed from {', '.join(changes)}"]
    return replace(record, **changes)
