"""A screen over NDJSON lines: the lines that may hold a record some rule matches, found without decoding them.

Every record a rule matches has a string holding one of the rule's literal texts, case-folded (`RuleIndex.literals`).
Such a string is written in its line as JSON spells it, so the line holds the text's JSON spelling, whatever the
letter case. That is certain only where the spelling of a string is unique: the screen therefore also takes every
line in which it is not, or in which a value's text as rules read it may not be spelled out:

- a `\\u` escape (any character may be written so), or an escaped `/` where a literal holds a `/`;
- any byte outside ASCII (case folding outside ASCII can yield ASCII letters, and undecodable bytes are replaced);
- where a literal could be part of Python's text of a float (digits, `.`, `e`, ...): a number with an exponent, of
  16 or more digits, or under 0.0001, which Python spells differently (`1e3` is read as `1000.0`, and rules
  compare numbers by that text). Integers, `true` and `false` are spelled as JSON spells them.

A line whose JSON is malformed is kept as its text (`connectors.files`), which holds the literal itself; both
spellings are searched. The screen also takes every line not shaped like an object (`{...}`): the lines it leaves
are objects that no rule can match, and only those are skipped undecoded (`connectors.files`).

The search is Hyperscan's (every literal at once, case-insensitive, over a block of lines); without it there is no
screen and every line is decoded.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from typing import Any, Final

_FORMAT: Final = "custodes-line-screen 1"
"""Changes when the expressions a screen compiles change meaning (its cached databases are then not read)."""
_SHORT_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HAZARDS: Final = (rb"\\u", rb"[\x80-\xff]")
_SHAPES: Final = (rb"\n[^{]", rb"[^}\r]\n", rb"[^}]\r\n")
"""A line not starting with `{` or not ending with `}` (before an optional carriage return)."""
_OBJECT_ENDS: Final = (b"}", b"}\r")
_SLASH: Final = rb"\\/"
_NUMBER_START: Final = rb"[:,\[][\x20\t\r\n]*-?"
_NUMBERS: Final = (
    _NUMBER_START + rb"[0-9]+(\.[0-9]+)?[eE]",
    _NUMBER_START + rb"[0-9.]{17}",
    _NUMBER_START + rb"0\.0000",
)
_FLOAT_TEXT: Final = frozenset("0123456789.e+-infa")
"""The characters of Python's text of a float (`1e+16`, `inf`, `nan`); other texts are never part of one."""


class LineScreen:
    """A compiled search for a set of literal texts and for the lines where spelling is not unique."""

    def __init__(self, database: Any) -> None:
        self._database = database

    @classmethod
    def build(cls, literals: Iterable[str] | None) -> LineScreen | None:
        """The screen for `literals` (case-folded texts); None without Hyperscan, or when a literal is empty."""
        if literals is None:
            return None
        patterns: set[bytes] = set()
        hazards = [*_HAZARDS, *_SHAPES]
        for literal in literals:
            if not literal:
                return None  # an empty text is in every line
            patterns.update(_pattern(spelling) for spelling in _spellings(literal))
            if "/" in literal and _SLASH not in hazards:
                hazards.append(_SLASH)
            if _FLOAT_TEXT.issuperset(literal) and _NUMBERS[0] not in hazards:
                hazards.extend(_NUMBERS)
        try:
            import hyperscan
        except ImportError:
            return None
        expressions = [*hazards, *sorted(patterns)]
        flags = [0] * len(hazards) + [hyperscan.HS_FLAG_CASELESS] * len(patterns)
        try:
            return cls(_database(hyperscan, expressions, flags))
        except hyperscan.error:  # e.g. a processor Hyperscan does not support
            return None

    def lines(self, block: bytes) -> tuple[list[tuple[int, bytes]], int]:
        """The lines of `block` (NDJSON lines joined by newlines) the screen takes, with their positions, in order;
        and the number of lines in the block (its newlines are counted once, on the way)."""
        if not block:
            return [(0, block)], 1
        ends: list[int] = []
        self._database.scan(block, match_event_handler=_found, context=ends)
        if block[:1] != b"{":
            ends.append(1)
        if not block.endswith(_OBJECT_ENDS):
            ends.append(len(block))
        ends.sort()
        taken: list[tuple[int, bytes]] = []
        position = counted = 0
        previous = -1
        for end in ends:  # the match's last byte is in the line (or is the newline ending it)
            start = block.rfind(b"\n", 0, end - 1) + 1
            if start == previous:
                continue
            position += block.count(b"\n", counted, start)
            counted = previous = start
            stop = block.find(b"\n", start)
            taken.append((position, block[start:] if stop < 0 else block[start:stop]))
        return taken, position + block.count(b"\n", counted) + 1


def _database(hyperscan: Any, expressions: list[bytes], flags: list[int]) -> Any:
    """The block-mode database of `expressions`: from the rule-set cache's folder, else compiled (and stored)."""
    from custodes.detections.sigma.cache import cache_folder, read_entry, write_entry

    folder = cache_folder()
    digest = hashlib.sha256(f"{_FORMAT}\x00{hyperscan.__version__}\x00{platform.machine()}".encode())
    for expression, flag in zip(expressions, flags, strict=True):
        digest.update(b"%d\x00%b\x00" % (flag, expression))
    entry = None if folder is None else folder / f"{digest.hexdigest()}.hsdb"
    stored = None if entry is None else read_entry(entry)
    if stored is not None:
        try:  # Hyperscan checks the database's own checksum and that it suits this processor
            database = hyperscan.loadb(stored, mode=hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)
            return database
        except hyperscan.error:
            pass
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    if entry is not None:
        write_entry(entry, hyperscan.dumpb(database))
    return database


def _found(_pattern: int, _start: int, end: int, _flags: int, ends: list[int]) -> None:
    ends.append(end)


def _spellings(literal: str) -> set[str]:
    """The literal as a JSON string spells it and as it stands (in a malformed line kept as text).

    Characters JSON can only write as `\\u` escapes, and non-ASCII ones, leave a spelling out: a line holding them
    is taken for its `\\u` escape or its non-ASCII bytes.
    """
    found = set()
    if literal.isascii() and "\n" not in literal:
        found.add(literal)
    spelled = "".join(_SHORT_ESCAPES.get(char, char) for char in literal)
    if spelled.isascii() and all(char >= " " for char in spelled):
        found.add(spelled)
    return found


def _pattern(text: str) -> bytes:
    """A Hyperscan expression matching `text` literally."""
    return b"".join(bytes([byte]) if chr(byte).isalnum() else b"\\x%02x" % byte for byte in text.encode())
