"""Paging pieces the vendor simulators share: opaque page tokens, and the empty or repeated page a test injects
(`empty_pages`, `repeat_pages` on a simulator's state) to check that a connector neither stalls nor duplicates."""

from __future__ import annotations

import base64
from typing import Any, Protocol, TypeVar

import orjson

RowT = TypeVar("RowT")


def page_token(value: dict[str, Any]) -> str:
    """`value` as an opaque, URL-safe page token."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def read_page_token(value: str) -> dict[str, Any]:
    """The object a `page_token` holds; ValueError when `value` is not one."""
    decoded = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("not a token")
    return decoded


class PageFaults(Protocol):
    """How many of the next non-empty pages answer empty, and how many answer without moving the cursor on."""

    empty_pages: int
    repeat_pages: int


def injected_page(state: PageFaults, page: list[RowT]) -> tuple[list[RowT], bool]:
    """The page to answer and whether the cursor moves past it: a non-empty page spends one injected empty page
    (answering none) or else one repeated page (answering it, the cursor staying where it was)."""
    if page and state.empty_pages:
        state.empty_pages -= 1
        return [], False
    if page and state.repeat_pages:
        state.repeat_pages -= 1
        return page, False
    return page, bool(page)
