"""Rule regular expressions (`|re`), searched in event text without letting one crafted value stall matching.

Python's `re` backtracks: a pattern that repeats, without bound, something that can itself match in several ways (a
repetition inside a repetition, `(?:.*\\)){1,}`; an alternation inside one, `(a|aa)+`) takes time exponential in the
length of a text built to fail late. Three SigmaHQ rules have that shape, so whoever controls a command line could
hold every event behind it. Such patterns are searched with the `regex` module (its engine cuts most of these
searches short) under a time budget; past the budget the value counts as matching, since a value crafted to
outlast a detection is not one to let through unseen. Every other pattern is searched with `re` as written.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from typing import Any, Final

import regex

log = logging.getLogger(__name__)

SEARCH_SECONDS: Final = 0.25
"""The time budget of one search with a pattern of the backtracking shape."""

_parser: Any = importlib.import_module("re._parser")  # the parse tree `re` compiles from
_constants: Any = importlib.import_module("re._constants")
_REPEATS = {_constants.MAX_REPEAT, _constants.MIN_REPEAT}
_UNBOUNDED = 16
"""A repetition allowing more than this many times counts as unbounded."""


def search_test(pattern: str, flags: int) -> Callable[[str], bool]:
    """Whether a text contains a match of `pattern` (with `re` flags); `re.error` when it is not a valid pattern."""
    compiled = re.compile(pattern, flags)
    guarded = _guarded(pattern, flags) if backtracks(pattern, flags) else None
    if guarded is None:
        return lambda text: compiled.search(text) is not None

    def search(text: str) -> bool:
        try:
            return guarded.search(text, timeout=SEARCH_SECONDS) is not None
        except TimeoutError:
            log.warning(
                "the rule pattern %.80r took more than %.2f s on a %d-character value; counted as a match",
                pattern,
                SEARCH_SECONDS,
                len(text),
            )
            return True

    return search


def _guarded(pattern: str, flags: int) -> regex.Pattern[str] | None:
    """`pattern` compiled by `regex` (Sigma's flags, i, m and s, have the same values in both modules); None for a
    pattern only `re` reads, which is then searched as written."""
    try:
        return regex.compile(pattern, flags | regex.VERSION0)
    except regex.error:
        return None


def backtracks(pattern: str, flags: int = 0) -> bool:
    """Whether `pattern` repeats without bound something that can match in more than one way: a repetition or an
    alternation inside an unbounded repetition (outside atomic groups and possessive repetitions)."""
    try:
        tree = _parser.parse(pattern, flags)
    except Exception:  # re.compile says what is wrong with it
        return False
    return _ambiguous_repeat(list(tree), inside=False)


def _ambiguous_repeat(items: list[tuple[Any, Any]], *, inside: bool) -> bool:
    """Whether `items` hold an unbounded repetition of an ambiguous body; `inside`: they are within one already,
    so an unbounded repetition or an alternation here is itself the ambiguity."""
    for op, value in items:
        if op in _REPEATS:
            unbounded = value[1] == _constants.MAXREPEAT or value[1] > _UNBOUNDED
            if (inside and unbounded) or _ambiguous_repeat(list(value[2]), inside=inside or unbounded):
                return True
        elif (op == _constants.BRANCH and inside) or any(
            _ambiguous_repeat(child, inside=inside) for child in _children(op, value)
        ):
            return True
    return False


def _children(op: Any, value: Any) -> list[list[tuple[Any, Any]]]:
    """The sub-sequences of one parsed item that can repeat with it (atomic groups and possessive repetitions do
    not backtrack into theirs)."""
    if op == _constants.BRANCH:
        return [list(branch) for branch in value[1]]
    if op == _constants.SUBPATTERN:
        return [list(value[-1])]
    if op in (_constants.ASSERT, _constants.ASSERT_NOT):
        return [list(value[1])]
    return []
