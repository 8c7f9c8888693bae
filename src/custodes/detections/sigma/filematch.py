"""A log file matched against a rule set, as `custodes rules match` runs it: one JSON line per match, in file order.

Records are read streaming (`connectors.files`), NDJSON lines screened for the rules' literals before decoding
(`linefilter`), each record tested only against the rules of the index it meets, and the envelope built only for
the event id of a record that matches. An uncompressed NDJSON file is cut at line ends into ranges matched by
forked processes (the parent takes the first; each other range's matches and warnings go to a file of its own,
written out in order when the parent has done its own), so the output is the same whatever the number of workers.
A worker numbers the lines of its range from 1 and does not read the lines before it: each range's count is
shared when it is read, and the parent adds the counts of the ranges before to the numbers it writes out.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from custodes.connectors.files import iter_range, iter_records, ndjson_ranges
from custodes.detections.sigma.fields import match_view
from custodes.errors import CustodesError

if TYPE_CHECKING:
    from custodes.detections.sigma.compiler import CompiledRule
    from custodes.detections.sigma.engine import SigmaEngine
    from custodes.detections.sigma.index import RuleIndex
    from custodes.detections.sigma.linefilter import LineScreen
    from custodes.detections.sigma.ruleset import RuleSet
    from custodes.sources import SourceSettings

BATCH: Final = 1000
"""Matches written at a time, and records between progress reports."""
RANGE_BYTES: Final = 1 << 20
"""The least a worker is given when the number of workers is left to the file's size."""

_Write = Callable[[str], object]
_Progress = Callable[[int], None]
_Counts = ctypes.Array[ctypes.c_int64]
"""A figure for each worker (the parent's first) in shared memory: records read so far, or lines in its range."""
_LINE_KEY: Final = ',"line":'
"""Where a match line's number starts (a JSON string escapes its quotes: the key's text is found nowhere before)."""
_Rows = Iterable[tuple[int, Any, str | None]]


class RecordMatcher:
    """The rules a record matches, and its event id: the index on every path, the envelope only where needed.

    With a source, records whose logsource is the source's (every format but those that derive it from the
    record) go straight to the engine's index; the envelope is built only for the event id of a record that
    matches, or for every record when rules read the enrichment (`custodes.*`, computed from the event). Without
    a source, one index over every rule tests the record as written.
    """

    def __init__(self, ruleset: RuleSet, source: SourceSettings | None, name: str) -> None:
        from custodes.connectors.envelope import VARYING_LOGSOURCE, event_id, to_event
        from custodes.detections.sigma.engine import SigmaEngine
        from custodes.detections.sigma.index import RuleIndex
        from custodes.sources import SourceSettings

        self._to_event = to_event
        self._event_id = event_id
        self._settings = source or SourceSettings(format="generic")
        self._name = name
        self._match: Callable[[dict[str, Any]], list[CompiledRule]]
        self._index: RuleIndex | None = None  # the rules records are tested against as written, where one is
        if source is None:
            self._index = RuleIndex(ruleset.rules)
            self._match = self._index.match
        elif source.format in VARYING_LOGSOURCE or any(rule.contextual for rule in ruleset.rules):
            self._match = partial(self._match_event, SigmaEngine(ruleset))
        else:  # no rule reads the enrichment: the engine's index for the source's logsource is all there is
            self._index = SigmaEngine(ruleset).index_for(self._settings.logsource)
            self._match = self._index.match

    def screen(self) -> LineScreen | None:
        """A screen over NDJSON lines for the rules, where records are tested as written (not through the envelope)."""
        from custodes.detections.sigma.linefilter import LineScreen

        return LineScreen.build(self._index.literals()) if self._index is not None else None

    def match(self, record: Any) -> list[CompiledRule]:
        """The rules `record` matches, in load order."""
        if type(record) is not dict:
            record = self._to_event(record, self._settings, self._name).raw
        return self._match(match_view(record))

    def _match_event(self, engine: SigmaEngine, record: dict[str, Any]) -> list[CompiledRule]:
        return engine.match(self._to_event(record, self._settings, self._name))

    def event_id(self, record: Any) -> str:
        """The id of the event `record` maps to (as the service would store it)."""
        return self._event_id(record, self._settings, self._name)


def match_file(
    path: Path,
    matcher: RecordMatcher,
    *,
    workers: int | None,
    write: _Write,
    warn: _Write,
    progress: _Progress,
) -> int:
    """Write each match of the records of `path` as a JSON line through `write`; the number of matches.

    `warn` gets each warning (a malformed line), `progress` the number of records read so far. `workers`
    processes share an uncompressed NDJSON file (None: one per core, each given at least `RANGE_BYTES`).
    """
    screen = matcher.screen()
    ranges = _ranges(path, workers)
    if ranges is None:
        return _match_rows(iter_records(path, screen), matcher, write, warn, progress)
    shared = multiprocessing.get_context("fork")
    counts, lines = shared.RawArray(ctypes.c_int64, len(ranges)), shared.RawArray(ctypes.c_int64, len(ranges))
    with tempfile.TemporaryDirectory(prefix="custodes-match-", ignore_cleanup_errors=True) as folder:
        spool = Path(folder)
        parts = [
            _Part(path, span, matcher, screen, spool, counts, lines, number)
            for number, span in enumerate(ranges[1:], start=1)
        ]
        started = [(part, part.start()) for part in parts]

        def own(done: int) -> None:
            counts[0] = done
            progress(sum(counts))

        rows = iter_range(path, *ranges[0], screen, partial(lines.__setitem__, 0))
        matched = _match_rows(rows, matcher, write, warn, own)
        for part, process in started:
            while process.exitcode is None:
                process.join(0.2)
                progress(sum(counts))
            if process.exitcode:
                failure = part.file("error").read_text() if part.file("error").exists() else ""
                raise CustodesError(failure or f"a worker matching {path} stopped (exit code {process.exitcode})")
            before = sum(lines[: part.number])
            for warning in _lines(part.file("warnings")):
                warn(_shifted_warning(warning, f"{path}:", before))
            for block in _blocks(part.file("matches")):
                write(_shifted(block, before))
                matched += block.count("\n")
    return matched


def _ranges(path: Path, workers: int | None) -> list[tuple[int, int]] | None:
    """The byte ranges the workers take, or None to read the file in this process alone."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = workers if workers is not None else min(cores, max(1, path.stat().st_size // RANGE_BYTES))
    if count < 2:
        return None
    ranges = ndjson_ranges(path, count)
    return ranges if ranges is not None and len(ranges) > 1 else None


@dataclass(frozen=True)
class _Part:
    """A forked process's share of the file: the lines of `span`, matched into files of its own in `spool`."""

    path: Path
    span: tuple[int, int]
    matcher: RecordMatcher
    screen: LineScreen | None
    spool: Path
    counts: _Counts
    lines: _Counts
    number: int

    def file(self, kind: str) -> Path:
        """Where its `matches`, `warnings` or `error` go."""
        return self.spool / f"{self.number}.{kind}"

    def start(self) -> multiprocessing.process.BaseProcess:
        """The process, started."""
        sys.stdout.flush()  # a forked process flushes the streams it inherits when it ends
        sys.stderr.flush()
        process = multiprocessing.get_context("fork").Process(target=self.run, daemon=True)
        process.start()
        return process

    def run(self) -> None:
        """Match the lines of `span` (in the forked process); a failure is written for the parent to report."""
        try:
            with (
                self.file("matches").open("w", encoding="utf-8") as matches,
                self.file("warnings").open("w", encoding="utf-8") as warnings,
            ):
                rows = iter_range(self.path, *self.span, self.screen, partial(self.lines.__setitem__, self.number))
                _match_rows(rows, self.matcher, matches.write, lambda text: warnings.write(text + "\n"), self.done)
        except BaseException as exc:
            self.file("error").write_text(str(exc) or type(exc).__name__)
            raise SystemExit(1) from None

    def done(self, records: int) -> None:
        """Note the records read so far (the parent shows progress from them)."""
        self.counts[self.number] = records


def _match_rows(rows: _Rows, matcher: RecordMatcher, write: _Write, warn: _Write, progress: _Progress) -> int:
    """Match `rows`, writing each match as a JSON line (in batches); the number of matches."""
    matched = 0
    out: list[bytes] = []
    heads: dict[int, bytes] = {}  # each rule's part of its lines (by the rule's identity), encoded once
    read = shown = 0
    for number, record, warning in rows:
        read += 1
        if warning:
            warn(warning)
        hits = matcher.match(record)
        if hits:
            tail = b',"event_id":%b}' % orjson.dumps(matcher.event_id(record))
            for rule in hits:
                head = heads.get(id(rule))
                if head is None:
                    head = heads[id(rule)] = _head(rule)
                out.append(b"%b%d%b" % (head, number, tail))
            if len(out) >= BATCH:
                matched += _flush(out, write)
        if number - shown >= BATCH:
            progress(read)
            shown = number
    matched += _flush(out, write)
    progress(read)
    return matched


def _head(rule: CompiledRule) -> bytes:
    """The start of a match line of `rule`, up to the line number: `{"rule_id":...,"line":`."""
    fields = orjson.dumps({"rule_id": rule.id, "rule_title": rule.title, "level": rule.level.label, "line": 0})
    return fields[: -len(b"0}")]


def _flush(lines: list[bytes], write: _Write) -> int:
    """Write `lines`, one JSON object a line, and empty the list; how many were written."""
    count = len(lines)
    if count:
        write(b"\n".join(lines).decode() + "\n")
        lines.clear()
    return count


def _shifted(block: str, before: int) -> str:
    """Match lines numbered within a worker's range, numbered as lines of the file (`before` lines precede it)."""
    head, *numbered = block.split(_LINE_KEY)  # each line's number starts one of these pieces, its end a ","
    shifted = [head]
    for piece in numbered:
        end = piece.index(",")
        shifted.append(f"{int(piece[:end]) + before}{piece[end:]}")
    return _LINE_KEY.join(shifted)


def _shifted_warning(warning: str, prefix: str, before: int) -> str:
    """A warning `PATH:LINE:...` about a line of a worker's range, numbered as a line of the file."""
    number, _, rest = warning.removeprefix(prefix).partition(":")
    return f"{prefix}{int(number) + before}:{rest}"


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield line.rstrip("\n")


def _blocks(path: Path) -> Iterator[str]:
    """The text of `path` in blocks of whole lines."""
    with path.open(encoding="utf-8") as text:
        while block := text.read(1 << 20):
            yield block + text.readline()
