"""Replay of log files: NDJSON, JSON arrays, single objects and CloudTrail `{"Records": [...]}` files, gzipped
or not. The checkpoint records how many records of each file were committed, so a replay resumes."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson

from custodes.config import SourceSettings
from custodes.connectors.base import Batch
from custodes.connectors.envelope import to_event
from custodes.errors import CustodesError, Location, Problem
from custodes.model import Event

GZIP_MAGIC = b"\x1f\x8b"


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data
    except FileNotFoundError:
        raise CustodesError.at(path, "file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CustodesError.at(path, f"cannot read log file: {exc}") from None


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def _json_error(path: Path, data: bytes, exc: orjson.JSONDecodeError, base: int = 0) -> CustodesError:
    line, column = _position(data, base + exc.pos)
    return CustodesError([Problem(Location(str(path), line, column), f"invalid JSON: {exc.msg}")])


def iter_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (record number, decoded record, warning) from a log file in any supported layout.

    A malformed line of an NDJSON file is kept as a string record with a warning naming its line; a
    malformed JSON document (array or object) is an error naming line and column.
    """
    return parse_records(_read(path), path)


def parse_records(data: bytes, path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """`iter_records` over content already read (and decompressed)."""
    stripped = data.lstrip()
    if not stripped:
        return
    first_line_end = stripped.find(b"\n")
    first_line = stripped if first_line_end < 0 else stripped[:first_line_end]
    single_line_object = False
    if stripped[:1] == b"{":
        try:
            orjson.loads(first_line)
            single_line_object = True
        except orjson.JSONDecodeError:
            single_line_object = False
    if stripped[:1] == b"{" and single_line_object and stripped[len(first_line) :].strip():
        yield from _ndjson(path, data)
        return
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if stripped[:1] in (b"[", b"{"):
            raise _json_error(path, data, exc) from None
        yield from _ndjson(path, data)
        return
    if isinstance(document, dict) and isinstance(document.get("Records"), list):
        records: list[Any] = document["Records"]
    elif isinstance(document, list):
        records = document
    else:
        records = [document]
    for number, record in enumerate(records, start=1):
        yield number, record, None


def _ndjson(path: Path, data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line), None
        except orjson.JSONDecodeError as exc:
            text = line.decode("utf-8", errors="replace")
            yield number, text, f"{path}:{number}:{exc.pos + 1}: invalid JSON ({exc.msg}); kept as text"


FINGERPRINT_BYTES = 4096


def fingerprint(data: bytes, length: int) -> str:
    """Hash of the first `length` bytes: a file that only grew keeps it, a replaced file does not."""
    return hashlib.sha256(data[:length]).hexdigest()[:32]


class FileConnector:
    """Replays one or more log files of one configured source."""

    def __init__(
        self, name: str, source: str, settings: SourceSettings, paths: list[Path], batch_size: int = 1000
    ) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        self.paths = paths
        self.batch_size = batch_size

    def _events(self, data: bytes, path: Path, skip: int) -> Iterator[tuple[int, Event]]:
        for number, record, warning in parse_records(data, path):
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
            data = _read(path)
            done = positions.get(key, {})
            length = int(done.get("prefix", 0))
            same = bool(done) and length <= len(data) and done.get("fingerprint") == fingerprint(data, length)
            skip = int(done.get("records", 0)) if same else 0
            length = min(len(data), FINGERPRINT_BYTES)
            mark = {"fingerprint": fingerprint(data, length), "prefix": length}
            pending: list[Event] = []
            last = skip
            for number, event in self._events(data, path, skip):
                pending.append(event)
                last = number
                if len(pending) >= self.batch_size:
                    positions[key] = {**mark, "records": last}
                    yield Batch(pending, {"files": dict(positions)})
                    pending = []
            positions[key] = {**mark, "records": last}
            yield Batch(pending, {"files": dict(positions)})
