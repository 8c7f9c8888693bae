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
    """Whether a string, or any key or string inside a JSON-like value, holds a NUL."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(item) for item in value)
    return False


def without_nul(value: Any) -> Any:
    """The value with NUL removed from every string, key and value (a copy where anything changed)."""
    if isinstance(value, str):
        return value.replace(NUL, "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value


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
