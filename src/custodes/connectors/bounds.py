"""Length bounds on the envelope's text fields, which are the widths of the store's columns (`custodes.widths`).

A value longer than its column fails the whole transaction it is written in on PostgreSQL (and with it every
record committed alongside), while SQLite would keep it: the two stores would disagree. The envelope's
identifiers (actor, action, target, src_ip, the logsource names) are checked when a record is mapped, before
any transaction. The raw record is never bounded here: it is kept whole, up to the request body limit.
"""

from __future__ import annotations

from typing import Any


def too_long(value: str, limit: int, name: str) -> str | None:
    """Why `value` cannot be stored as `name` (None when it fits)."""
    if len(value) <= limit:
        return None
    return f"{len(value)} characters, more than the {limit} {name} may have"


def clamped(value: str, limit: int) -> str:
    """Descriptive text cut to `limit` characters, ending in an ellipsis when cut."""
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def path_of(record: Any, value: str) -> str | None:
    """The dotted path of the string `value` in a decoded JSON record; when none is equal, of a string holding it
    (an address taken from ``host:port``), else of the longest string it holds (a name built from it, such as
    ``google_workspace.<application>``); None when no string is related."""
    holding: str | None = None
    held: tuple[int, str] | None = None
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        path, node = stack.pop(0)
        if isinstance(node, dict):
            stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}.{index}" if path else str(index), item) for index, item in enumerate(node))
        elif isinstance(node, str) and node:
            if node == value:
                return path
            if holding is None and value in node:
                holding = path
            elif node in value and (held is None or len(node) > held[0]):
                held = (len(node), path)
    return holding or (held[1] if held else None)
