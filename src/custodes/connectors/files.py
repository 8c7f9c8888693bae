"""Replay of log files: NDJSON, JSON arrays, single objects and the answers of SIEMs and vendor APIs saved whole
(CloudTrail's `{"Records": [...]}`, a Graph page, an Elasticsearch search: `custodes.connectors.exports`, which also
unwraps each record of an export: Elasticsearch hits, Splunk's JSON export lines), auditd's and syslog's text logs
(`custodes.connectors.textlogs`), and the CERT insider-threat datasets' event CSVs (`custodes.connectors.cert`),
gzipped or not. Files are streamed (read and decompressed in chunks), so memory stays bounded whatever their size.
The checkpoint records how many records of each file were committed, so a replay resumes."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import itertools
import json
import os
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final, Protocol, cast

import orjson

from custodes.connectors.base import Batch
from custodes.connectors.cert import cert_kind, cert_rows, csv_rows, is_csv, not_events
from custodes.connectors.envelope import to_event
from custodes.connectors.exports import (
    RECORD_LISTS,
    TABLE_LISTS,
    Columns,
    RecordLists,
    Wrapping,
    table_columns,
    table_record,
    table_rows,
    wrapping_of,
)
from custodes.connectors.textlogs import LineParser, parse_auditd_line, parse_syslog_line
from custodes.errors import CustodesError, Location, Problem
from custodes.model import Event, utcnow
from custodes.sources import SourceSettings

GZIP_MAGIC: Final = b"\x1f\x8b"
BOM: Final = codecs.BOM_UTF8
"""A UTF-8 byte order mark, which Windows tools write at the start of a file: skipped where a file starts with it."""
CHUNK_BYTES: Final = 1 << 20
"""How much is read (after decompression) at a time."""
_SNIFF_BYTES: Final = 1 << 20
"""A file starting with `{` is NDJSON if its first line, found within this many bytes, is a whole object."""
LONGEST_RECORD: Final = 64 << 20
"""A JSON document element still unparsed after this many characters past its start, or an NDJSON line without its
end after this many bytes (`/dev/zero`, a binary file), is reported as malformed rather than read on."""
_WHITESPACE: Final = " \t\r\n"
_DECODER: Final = json.JSONDecoder()
TEXT_LOGS: Final[dict[str, LineParser]] = {"auditd": parse_auditd_line, "syslog": parse_syslog_line}
"""The text logs a file can be, by the parser its lines are read with (sudo's lines, and any other syslog line as
its program, host and message)."""

_Row = tuple[int, Any, str | None]


@contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    """The file's (decompressed) byte stream, past a leading byte order mark; errors while opening or reading name
    the file."""
    try:
        with path.open("rb") as raw:
            compressed = raw.peek(2)[:2] == GZIP_MAGIC  # peeked, not read: a pipe (/dev/stdin) cannot seek back
            stream = gzip.GzipFile(fileobj=raw) if compressed else raw
            if stream.peek(len(BOM)).startswith(BOM):
                stream.read(len(BOM))
            yield cast(IO[bytes], stream)
    except FileNotFoundError:
        raise CustodesError.at(path, "file not found") from None
    except IsADirectoryError:
        raise CustodesError.at(path, "is a folder, not a log file: name the files in it") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise CustodesError.at(path, f"cannot read log file: {exc}") from None


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


class Screen(Protocol):
    """Picks, in a block of NDJSON lines, those worth decoding (`detections.sigma.linefilter.LineScreen`)."""

    def lines(self, block: bytes) -> tuple[list[tuple[int, bytes]], int]:
        """The lines of `block` to decode with their positions in it (in order; the others are objects), and the
        number of lines in the block."""
        ...


def iter_records(path: Path, screen: Screen | None = None) -> Iterator[_Row]:
    """Yield (record number, decoded record, warning) from a log file in any supported layout, streaming it.

    A malformed line of an NDJSON file is kept as a string record with a warning naming its line; a
    malformed JSON document (array or object) is an error naming line and column. With a `screen`, the lines of
    an NDJSON file it does not pick (each shaped like an object, `{...}`) are skipped undecoded, so a malformed
    one among them is not reported. A CSV (`.csv`, `.csv.gz`) yields its rows: a CERT dataset's event CSV's as ECS
    records (a row that is not one of its kind kept as its fields, with a warning naming its line), any other's
    as records of its columns (`exports.table_rows`); a CERT dataset's directory or answers are refused.
    """
    if is_csv(path):
        yield from _csv(path)
        return
    with _opened(path) as stream:
        yield from parse_stream(_chunks(stream), path, screen)


def _csv(path: Path) -> Iterator[_Row]:
    with text_lines(path) as lines:
        header, rows = csv_rows(lines)
        records = cert_rows(header, rows)
        if records is None:
            refused = not_events(header)
            if refused is not None:
                raise CustodesError.at(path, refused)
            records = _unwrapped(table_rows(header, rows))
        yield from records


def is_cert_csv(path: Path) -> bool:
    """Whether a log file is a CERT dataset's event CSV: named as a CSV, with a CERT event file's header."""
    if not is_csv(path):
        return False
    with text_lines(path) as lines:
        return cert_kind(csv_rows(lines)[0]) is not None


def file_bytes(path: Path) -> bytes:
    """A file read whole (a directory, labels), past a leading byte order mark."""
    return path.read_bytes().removeprefix(BOM)


@contextmanager
def text_lines(path: Path) -> Iterator[Iterator[str]]:
    """A log file's (decompressed) content as lines of UTF-8 text (undecodable bytes replaced, line ends kept as
    written), streamed: for formats read row by row (CSV). A line past `LONGEST_RECORD` characters without its
    end is an error naming it."""
    with _opened(path) as stream:
        yield _bounded_lines(path, io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=""))


def _bounded_lines(path: Path, text: IO[str]) -> Iterator[str]:
    number = 0
    while line := text.readline(LONGEST_RECORD + 1):
        number += 1
        if len(line) > LONGEST_RECORD:
            raise _long_line(path, number)
        yield line


def _long_line(path: Path, number: int) -> CustodesError:
    return CustodesError.at(
        path,
        f"line {number}: more than {LONGEST_RECORD >> 20} MiB without a line end: not a log of records "
        "(a binary file, a stream of NUL bytes?)",
    )


def parse_stream(chunks: Iterator[bytes], path: Path, screen: Screen | None = None) -> Iterator[_Row]:
    """`iter_records` over chunks of (decompressed) content: NDJSON line by line, documents element by element,
    auditd's and syslog's text logs line by line (`TEXT_LOGS`)."""
    layout, head = _sniff(chunks)
    if layout == "document":
        yield from _Document(path, _rejoin(head, chunks)).records()
    elif layout == "ndjson":
        yield from _lines(path, _rejoin(head, chunks), screen)
    elif layout is not None:
        yield from _text_log(path, _rejoin(head, chunks), TEXT_LOGS[layout])


def ndjson_ranges(path: Path, count: int) -> list[tuple[int, int]] | None:
    """Up to `count` byte ranges of an uncompressed NDJSON file, each of whole lines (`iter_range` reads one);
    None for a compressed file, one JSON document, a CSV, or what is not a regular file (a pipe is read once)."""
    if not path.is_file() or is_csv(path):
        return None
    with _opened(path) as stream:
        first = stream.tell()  # past a byte order mark
        if isinstance(stream, gzip.GzipFile) or _sniff(_chunks(stream))[0] != "ndjson":
            return None
        size = os.fstat(stream.fileno()).st_size
        cuts = [first]
        for part in range(1, count):
            stream.seek(max(size * part // count, cuts[-1]))
            while chunk := stream.read(CHUNK_BYTES):
                end = chunk.find(b"\n")
                if end >= 0:
                    cuts.append(stream.tell() - len(chunk) + end + 1)
                    break
            else:
                break
        cuts.append(size)
    return [(start, stop) for start, stop in itertools.pairwise(cuts) if stop > start]


def iter_range(
    path: Path, start: int, stop: int, screen: Screen | None = None, ended: Callable[[int], object] | None = None
) -> Iterator[_Row]:
    """`iter_records` over the lines of an NDJSON file from byte `start` to `stop` (line boundaries), numbered from
    1 at `start` (the lines before are not read: whoever knows their number adds it); `ended` is given the number
    of lines in the range once they are read."""
    with _opened(path) as stream:
        stream.seek(start)

        def span() -> Iterator[bytes]:
            while (left := stop - stream.tell()) > 0 and (chunk := stream.read(min(CHUNK_BYTES, left))):
                yield chunk

        yield from _lines(path, span(), screen, ended)


def _sniff(chunks: Iterator[bytes]) -> tuple[str | None, bytes]:
    """The layout of content read from `chunks` ("ndjson", "document", a text log's `TEXT_LOGS` name, or None when
    blank) and what was read.

    A file whose first line is a whole JSON object followed by more content is NDJSON; one that starts with `[`
    or `{` otherwise is one JSON document; one whose first line is an auditd record or a syslog line is that text
    log; anything else is NDJSON (its lines that are not JSON kept as text, with a warning).
    """
    head = b""
    for chunk in chunks:
        head += chunk
        if head.strip():
            break
    stripped = head.lstrip()
    if not stripped:
        return None, head
    if stripped[:1] == b"{":
        while b"\n" not in stripped and len(stripped) < _SNIFF_BYTES:  # the first line, unless it is huge
            more = next(chunks, b"")
            if not more:
                break
            head, stripped = head + more, stripped + more
        end = stripped.find(b"\n")
        if end >= 0 and _is_object(stripped[:end]):
            rest = stripped[end:]
            while not rest.strip():
                more = next(chunks, b"")
                if not more:
                    break
                head, rest = head + more, rest + more
            if rest.strip():
                return "ndjson", head
    if stripped[:1] in (b"[", b"{"):
        return "document", head
    while b"\n" not in stripped and len(stripped) < _SNIFF_BYTES:
        more = next(chunks, b"")
        if not more:
            break
        head, stripped = head + more, stripped + more
    first = stripped.partition(b"\n")[0].rstrip(b"\r").decode("utf-8", errors="replace")
    now = utcnow()
    found = (name for name, parse in TEXT_LOGS.items() if parse(first, now)[1] is None)
    return next(found, "ndjson"), head


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _rejoin(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from chunks


class _LongLine(Exception):
    """A line past `LONGEST_RECORD` bytes without its end."""


def _blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The content in blocks of whole lines (each without its last newline); `_LongLine` past a line too long."""
    pending = b""
    for chunk in chunks:
        end = chunk.rfind(b"\n")
        if end < 0:
            pending += chunk
            if len(pending) > LONGEST_RECORD:
                raise _LongLine
            continue
        yield pending + chunk[:end] if pending else chunk[:end]
        pending = chunk[end + 1 :]
    if pending:
        yield pending


def _ndjson(
    path: Path, chunks: Iterator[bytes], screen: Screen | None = None, ended: Callable[[int], object] | None = None
) -> Iterator[_Row]:
    """The rows of NDJSON content (its lines numbered from 1); `ended` is given the number of lines at the end."""
    number = 0
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    try:
        for block in _blocks(chunks):
            if screen is None:
                lines = block.split(b"\n")
                rows: Iterable[tuple[int, bytes]] = enumerate(lines)
                count = len(lines)
            else:
                rows, count = screen.lines(block)
            for position, line in rows:
                try:
                    yield number + position + 1, loads(line), None
                except decode_error as exc:
                    if not line.strip():
                        continue
                    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
                    at = number + position + 1
                    yield at, text, f"{path}:{at}:{exc.pos + 1}: invalid JSON ({exc.msg}); kept as text"
            number += count
    except _LongLine:
        raise _long_line(path, number + 1) from None
    if ended is not None:
        ended(number)


def _lines(
    path: Path, chunks: Iterator[bytes], screen: Screen | None = None, ended: Callable[[int], object] | None = None
) -> Iterator[_Row]:
    """`_ndjson`, its records unwrapped where the first object line is an export's (`exports.wrapping_of`): told
    from the content up to the end of its first line, so a file that is no export is read as before."""
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n" in head or len(head) > LONGEST_RECORD:
            break
    wrapping = _first_wrapping(head)
    if wrapping is None:
        return _ndjson(path, _rejoin(head, chunks), screen, ended)
    # a record within a string is not spelled as its line spells it: no screen
    return _unwrapped(_ndjson(path, _rejoin(head, chunks), None if wrapping.encoded else screen, ended), wrapping)


def _first_wrapping(head: bytes) -> Wrapping | None:
    """How the records of NDJSON content are wrapped, by the first object among its whole lines in `head`."""
    for line in head.split(b"\n")[:-1] or [head]:
        if line.lstrip()[:1] == b"{":
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(record) is dict:
                return wrapping_of(record)
    return None


def _unwrapped(rows: Iterable[_Row], wrapping: Wrapping | None = None) -> Iterator[_Row]:
    """Rows of records, each unwrapped as `wrapping` says, else as the first object is (`exports.wrapping_of`; a
    message line of an export is no record), a warning of the row's kept before the unwrapping's."""
    decided = wrapping is not None
    for number, value, warning in rows:
        if type(value) is not dict:
            yield number, value, warning
            continue
        if not decided:
            wrapping, decided = wrapping_of(value), True
        if wrapping is None:
            yield number, value, warning
            continue
        record, note = wrapping.unwrap(value)
        if record is not None:
            yield number, record, note if warning is None else warning if note is None else f"{warning}; {note}"


def _text_log(path: Path, chunks: Iterator[bytes], parse: LineParser) -> Iterator[_Row]:
    """The rows of a text log (its lines numbered from 1, blank ones skipped), each line parsed; one the parser
    cannot read is kept as text with its warning. A syslog time without a year is read as of now."""
    number = 0
    now = utcnow()
    try:
        for block in _blocks(chunks):
            lines = block.split(b"\n")
            for position, line in enumerate(lines):
                text = line.rstrip(b"\r").decode("utf-8", errors="replace")
                if text.strip():
                    at = number + position + 1
                    record, warning = parse(text, now)
                    yield (at, record, None) if warning is None else (at, text, f"{path}:{at}: {warning}")
            number += len(lines)
    except _LongLine:
        raise _long_line(path, number + 1) from None


class _Document:
    """One JSON document (an array, an API's answer holding a list of records, or any object) read incrementally:
    array elements are decoded one at a time, so only the current element and one chunk are held."""

    def __init__(self, path: Path, chunks: Iterator[bytes]) -> None:
        self.path = path
        self.chunks = chunks
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.line = 1  # line and column of text[0] in the file
        self.column = 1
        self.ended = False
        self.listed = False

    def records(self) -> Iterator[_Row]:
        """The records: an array's elements, the elements of an object's lists of records (`exports.RECORD_LISTS`),
        or the object itself; each unwrapped as the first is (`exports.wrapping_of`)."""
        opening = self._next()
        self.pos += 1
        document: dict[str, Any] = {}
        self.listed = opening == "["
        elements = self._elements() if self.listed else self._listed(RECORD_LISTS, document)
        yield from _unwrapped((number, value, None) for number, value in enumerate(elements, start=1))
        if not self.listed:
            yield 1, document, None
        if self._next():
            raise self._error("Extra data")

    def _listed(self, lists: RecordLists, found: dict[str, Any]) -> Iterator[Any]:
        """The elements of the lists of records (`lists`) in the object being read (past its `{`), setting `listed`
        if there is one; the object's other members go into `found`. A list is of records when its first element
        is an object (or it is empty)."""
        for key in self._members():
            within = lists.get(key, False)
            opening = self._next()
            if key in TABLE_LISTS and lists is RECORD_LISTS and opening == "[":
                self.pos += 1
                self.listed = True
                yield from self._tables()
            elif within is None and opening == "[":
                self.pos += 1
                if self._next() in ("{", "]"):
                    self.listed = True
                    yield from self._elements()
                else:  # a list of something else: a member of a record
                    found[key] = list(self._elements())
            elif isinstance(within, dict) and opening == "{":
                self.pos += 1
                inner: dict[str, Any] = {}
                before, self.listed = self.listed, False
                yield from self._listed(within, inner)
                if not self.listed:
                    found[key] = inner
                self.listed = self.listed or before
            else:
                found[key] = self._value()

    def _tables(self) -> Iterator[Any]:
        """The rows of each table of a Log Analytics or Azure Data Explorer answer (past the `[` of its tables) as
        records (`exports.table_record`): streamed where the table's columns come before its rows, as the services
        write them, else read whole once the columns are known."""
        for first in self._items("]"):
            if first != "{":
                yield self._value()  # not a table: kept as it is, which the reader says
                continue
            self.pos += 1
            columns: Columns | None = None
            waiting: Any = None
            for key in self._members():
                if key in ("columns", "Columns"):
                    columns = table_columns(self._value())
                elif key in ("rows", "Rows") and columns is not None and self._next() == "[":
                    self.pos += 1
                    for _ in self._items("]"):
                        yield table_record(columns, self._value())
                elif key in ("rows", "Rows"):
                    waiting = self._value()
                else:
                    self._value()
            if isinstance(waiting, list):
                yield from (table_record(columns or [], row) for row in waiting)

    def _items(self, closing: str) -> Iterator[str]:
        """Walk the comma-separated items of an array or object up to `closing` (consumed): before each item,
        yield its first character with the position on it, for the caller to read the item."""
        first = True
        while True:
            found = self._next()
            if found == closing:
                self.pos += 1
                return
            if not first:
                if found != ",":
                    raise self._error("Expecting ',' delimiter")
                self.pos += 1
                found = self._next()
            first = False
            yield found

    def _elements(self) -> Iterator[Any]:
        for _ in self._items("]"):
            yield self._value()

    def _members(self) -> Iterator[str]:
        for found in self._items("}"):
            if found != '"':
                raise self._error("Expecting property name enclosed in double quotes")
            key = self._value()
            if self._next() != ":":
                raise self._error("Expecting ':' delimiter")
            self.pos += 1
            self._next()
            yield key

    def _next(self) -> str:
        """The next character that is not whitespace (not consumed); "" at the end of the file."""
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(text):
                return text[pos]
            if not self._more():
                return ""

    def _value(self) -> Any:
        """Decode the value at the current position (reading on while it is cut by the end of the text)."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                error = self._error(exc.msg, exc.pos)  # located before `_more` drops the consumed text
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.text) - 16
                if cut and len(self.text) - self.pos < LONGEST_RECORD and self._more():
                    continue
                raise error from None
            except RecursionError:  # the decoder recurses per level: about 1,000 levels are too deep
                raise self._error("the value nests too deeply") from None
            except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
                raise self._error(f"a number has more than {sys.get_int_max_str_digits()} digits") from None
            if end < len(self.text):
                self.pos = end
                return value
            start = self.pos
            if not self._more():  # the end of the file: `_more` dropped the `start` characters before the value
                self.pos = end - start
                return value
            # a value ending with the text may go on in the next chunk (a number): decoded again with it

    def _more(self) -> bool:
        """Append the next chunk, dropping the text already consumed; False at the end of the file."""
        consumed = self.text[: self.pos]
        newline = consumed.rfind("\n")
        if newline >= 0:
            self.line += consumed.count("\n")
            self.column = len(consumed) - newline
        else:
            self.column += len(consumed)
        self.text, self.pos = self.text[self.pos :], 0
        if self.ended:
            return False
        chunk = next(self.chunks, None)
        try:
            if chunk is None:
                self.ended = True
                self.text += self.decoder.decode(b"", final=True)
                return False
            self.text += self.decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise self._error(f"not UTF-8 text ({exc.reason})", len(self.text)) from None
        return True

    def _error(self, message: str, pos: int | None = None) -> CustodesError:
        at = self.pos if pos is None else pos
        newline = self.text.rfind("\n", 0, at)
        line = self.line + self.text.count("\n", 0, at)
        column = at - newline if newline >= 0 else self.column + at
        return CustodesError([Problem(Location(str(self.path), line, column), f"invalid JSON: {message}")])


FINGERPRINT_BYTES = 4096


def fingerprint(data: bytes, length: int) -> str:
    """Hash of the first `length` bytes: a file that only grew keeps it, a replaced file does not."""
    return hashlib.sha256(data[:length]).hexdigest()[:32]


def _head(path: Path) -> bytes:
    """The first `FINGERPRINT_BYTES` of the file's (decompressed) content."""
    with _opened(path) as stream:
        head = b""
        while len(head) < FINGERPRINT_BYTES and (chunk := stream.read(FINGERPRINT_BYTES - len(head))):
            head += chunk
        return head


class FileConnector:
    """Replays one or more log files of one configured source, streaming each."""

    def __init__(
        self, name: str, source: str, settings: SourceSettings, paths: list[Path], batch_size: int = 1000
    ) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        self.paths = paths
        self.batch_size = batch_size

    def _events(self, path: Path, skip: int) -> Iterator[tuple[int, Event]]:
        for number, record, warning in iter_records(path):
            if number <= skip:
                continue
            event = to_event(record, self.settings, self.source)
            if warning:
                event.warnings.append(warning)
            yield number, event

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """Batches of events, each carrying the updated per-file positions."""
        positions: dict[str, Any] = dict((checkpoint or {}).get("files", {}))
        for path in self.paths:
            key = str(path.resolve())
            head = _head(path)
            done = positions.get(key, {})
            length = int(done.get("prefix", 0))
            same = bool(done) and length <= len(head) and done.get("fingerprint") == fingerprint(head, length)
            skip = int(done.get("records", 0)) if same else 0
            mark = {"fingerprint": fingerprint(head, len(head)), "prefix": len(head)}
            pending: list[Event] = []
            last = skip
            for number, event in self._events(path, skip):
                pending.append(event)
                last = number
                if len(pending) >= self.batch_size:
                    positions[key] = {**mark, "records": last}
                    yield Batch(pending, {"files": dict(positions)})
                    pending = []
            positions[key] = {**mark, "records": last}
            yield Batch(pending, {"files": dict(positions)})
