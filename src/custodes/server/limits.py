"""Checks on untrusted JSON before it goes anywhere: nesting depth."""

from __future__ import annotations

from typing import Any


def json_depth_exceeds(body: bytes, value: Any, limit: int) -> bool:
    """Whether `value`, decoded from `body`, nests deeper than `limit`. A body with too few brackets to nest that
    deep is not walked (the count includes brackets inside strings, so it only over-estimates); the walk is
    iterative, so it cannot overflow the stack."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
