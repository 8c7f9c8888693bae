"""Checks on untrusted JSON before it goes anywhere: nesting depth."""

from __future__ import annotations

from typing import Any


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests deeper than `limit` (iterative, so it cannot overflow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def body_depth_exceeds(body: bytes, value: Any, limit: int) -> bool:
    """`json_depth_exceeds` for a decoded `body`, skipping the walk when the body has too few brackets to nest
    that deep (the count includes brackets inside strings, so it only ever over-estimates)."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    return json_depth_exceeds(value, limit)
