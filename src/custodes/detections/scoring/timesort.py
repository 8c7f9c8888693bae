"""A file's events put in time order in bounded memory, for `eval scoring` (a file out of order may be gigabytes).

Events are taken `RUN_EVENTS` at a time, each run sorted and written to a temporary file; the runs are then merged
as they are read back, so memory holds one run while sorting and, while merging, the last run and one block of
`BLOCK_EVENTS` per run written. A file of fewer events than a run is sorted in memory alone. Runs are written with
`marshal`, which keeps what a record decoded from JSON holds exactly (integers past 64 bits, NaN) and is read back
only by this process, from its own private folder.
"""

from __future__ import annotations

import heapq
import marshal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO

from custodes.errors import CustodesError
from custodes.model import Event, LogSource

RUN_EVENTS = 100_000
"""Events sorted in memory at a time (a run of CERT logon records adds about 90 MB to an evaluation's peak)."""

BLOCK_EVENTS = 1000
"""Events written and read back with one `marshal` call (a block is read whole, its length before it)."""

Timed = tuple[datetime, int, Event]
"""An event with its time and its record number in the file: the order sorted by (a file's record numbers are
distinct, so the event itself is never compared)."""


def _key(item: Timed) -> tuple[datetime, int]:
    return item[0], item[1]


def in_time_order(events: Iterable[Timed], logsource: LogSource) -> Iterator[Timed]:
    """`events` sorted by time (then record number), in runs of `RUN_EVENTS` spilled to temporary files; every
    event read back has `logsource`, as the events given do."""
    run: list[Timed] = []
    with tempfile.TemporaryDirectory(prefix="custodes-timesort-") as folder, ExitStack() as files:
        runs: list[Path] = []
        for item in events:
            run.append(item)
            if len(run) >= RUN_EVENTS:
                runs.append(_spill(run, Path(folder) / f"run-{len(runs)}"))
                run = []
        run.sort(key=_key)
        readers = [_read(files.enter_context(path.open("rb")), logsource) for path in runs]
        yield from heapq.merge(*readers, run) if readers else run


def _spill(run: list[Timed], path: Path) -> Path:
    run.sort(key=_key)
    try:
        with path.open("wb") as out:
            for start in range(0, len(run), BLOCK_EVENTS):
                block = run[start : start + BLOCK_EVENTS]
                data = marshal.dumps([(when.isoformat(), number, e.id, e.source, e.raw) for when, number, e in block])
                out.write(len(data).to_bytes(8, "little") + data)
    except OSError as exc:
        raise CustodesError.at(
            path.parent,
            f"cannot write a run of events being sorted by time ({exc.strerror}): set TMPDIR to a folder with room "
            "for the file's records, or give the file in time order",
        ) from None
    return path


def _read(handle: IO[bytes], logsource: LogSource) -> Iterator[Timed]:
    while size := int.from_bytes(handle.read(8), "little"):
        for when, number, ident, source, raw in marshal.loads(handle.read(size)):  # noqa: S302 (our own run file)
            moment = datetime.fromisoformat(when)
            yield moment, number, Event(ident, moment, source, logsource, raw)
