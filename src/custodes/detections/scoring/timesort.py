"""A file's events put in time order in bounded memory, for `eval scoring` (a file out of order may be gigabytes).

Events are taken `RUN_EVENTS` at a time, each run sorted and written to a temporary file as NDJSON; the runs are
then merged as they are read back, so memory holds one run while sorting and one event per run while merging.
A file of fewer events than a run is sorted in memory alone.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import orjson

from custodes.model import Event, LogSource

RUN_EVENTS = 100_000
"""Events sorted in memory at a time (about 150 MB of decoded records)."""

Timed = tuple[datetime, int, Event]
"""An event with its time and its record number in the file: the order sorted by."""


def _key(item: Timed) -> tuple[datetime, int]:
    return item[0], item[1]


def in_time_order(events: Iterable[Timed], logsource: LogSource) -> Iterator[Timed]:
    """`events` sorted by time (then record number), in runs of `RUN_EVENTS` spilled to temporary files; every
    event read back has `logsource`, as the events given do."""
    run: list[Timed] = []
    run_events = RUN_EVENTS
    with tempfile.TemporaryDirectory(prefix="custodes-timesort-") as folder:
        runs: list[Path] = []
        for item in events:
            run.append(item)
            if len(run) >= run_events:
                runs.append(_spill(run, Path(folder) / f"run-{len(runs)}.ndjson"))
                run = []
        run.sort(key=_key)
        if not runs:
            yield from run
            return
        handles = [path.open("rb") for path in runs]
        try:
            yield from heapq.merge(*(_read(handle, logsource) for handle in handles), run, key=_key)
        finally:
            for handle in handles:
                handle.close()


def _spill(run: list[Timed], path: Path) -> Path:
    run.sort(key=_key)
    with path.open("wb") as out:
        for when, number, event in run:
            out.write(orjson.dumps([when, number, event.id, event.source, event.raw]) + b"\n")
    return path


def _read(handle: IO[bytes], logsource: LogSource) -> Iterator[Timed]:
    for line in handle:
        when, number, ident, source, raw = orjson.loads(line)
        moment = datetime.fromisoformat(when)
        yield moment, number, Event(ident, moment, source, logsource, raw)
