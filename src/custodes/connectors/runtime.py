"""The connector runtime: poll loops, checkpoints committed with their batches, status metrics, backfill.

`ConnectorRuntime.poll` drains one round of a connector: each batch goes through `Pipeline.ingest` together
with the checkpoint that covers it (one transaction), so a crash at any point neither loses nor repeats events.
`run` polls every scheduled connector on its interval until stopped; a failing connector backs off and
recovers by itself. Status (events/s, newest event for lag, last error, consecutive failures) is kept in the
store for `custodes connectors status`. See docs/connectors.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from custodes.connectors.base import Batch, Connector
from custodes.connectors.envelope import parse_time
from custodes.errors import describe
from custodes.model import Event, utcnow
from custodes.pipeline import IngestReport, Pipeline
from custodes.store import ConnectorStatus

log = logging.getLogger(__name__)

MAX_SEEN_IDS = 20_000
"""The most ids of events already sent a checkpoint keeps to drop from an overlap's re-read: past that, the oldest
are forgotten and a re-read sends them again, which the store drops (event ids are deterministic)."""
Stamp = TypeVar("Stamp", str, int, float)
MAX_REPEATED_CURSORS = 3
"""How many times one sweep takes a cursor the API gave before (the same page again, or a cycle of pages) before
the round fails and the next one resumes from the saved cursor."""


@runtime_checkable
class Backfillable(Protocol):
    """A connector that can also read a fixed time range on demand."""

    name: str

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """Yield batches after `checkpoint`."""
        ...

    def backfill(self, start: datetime, end: datetime) -> Connector:
        """A connector over [start, end) only, with its own checkpoint name, that stops when the range is read."""
        ...


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A connector and how often to poll it."""

    connector: Connector
    kind: str
    interval: float
    max_backoff: float = 300.0


def backfill_name(name: str, start: datetime, end: datetime) -> str:
    """The checkpoint name of a backfill, so that a backfill of the same range resumes."""
    return f"{name}#backfill:{start.isoformat()}/{end.isoformat()}"


class _Named(Protocol):
    name: str


ParentT = TypeVar("ParentT", bound=_Named)


class RangeBackfill(Generic[ParentT]):
    """A fixed time range of a parent connector, read under a checkpoint name of its own."""

    def __init__(self, parent: ParentT, start: datetime, end: datetime) -> None:
        self.name = backfill_name(parent.name, start, end)
        self.parent = parent
        self.start = start.astimezone(UTC)
        self.end = end.astimezone(UTC)


@dataclass(slots=True)
class Watermark:
    """The newest time a connector has fully read, and the ids of events near it (the overlap window).

    Connectors re-read `overlap` before the watermark on every round, to catch late-arriving records, and
    drop what they already emitted with `fresh`.
    """

    time: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data: Any) -> Watermark:
        """Read a watermark from a checkpoint value (anything unreadable starts afresh)."""
        if not isinstance(data, Mapping):
            return cls()
        raw_time = data.get("time")
        seen = data.get("seen")
        return cls(
            parse_time(raw_time) if isinstance(raw_time, str) else None,
            {str(k): str(v) for k, v in seen.items()} if isinstance(seen, Mapping) else {},
        )

    def dump(self) -> dict[str, Any]:
        """The checkpoint value."""
        return {"time": None if self.time is None else self.time.isoformat(), "seen": dict(self.seen)}

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """The events not emitted before (by id), remembering them."""
        out: list[Event] = []
        for event in events:
            if event.id in self.seen:
                continue
            self.seen[event.id] = event.time.isoformat()
            out.append(event)
        return out

    def advance(self, to: datetime | None, overlap: timedelta) -> None:
        """Move the watermark forward to `to` and forget ids older than the overlap window before it."""
        if to is not None and (self.time is None or to > self.time):
            self.time = to
        if self.time is None:
            return
        self.seen = recent_ids(self.seen, (self.time - overlap).isoformat())


def recent_ids(seen: Mapping[str, Stamp], horizon: Stamp) -> dict[str, Stamp]:
    """The ids seen at or after `horizon`, at most the newest `MAX_SEEN_IDS` of them."""
    kept = {key: at for key, at in seen.items() if at >= horizon}
    if len(kept) > MAX_SEEN_IDS:
        kept = dict(sorted(kept.items(), key=lambda item: item[1])[-MAX_SEEN_IDS:])
    return kept


Progress = Callable[[Batch, IngestReport], None]
"""Told of every committed batch of a round (progress bars)."""

PageFetcher = Callable[[datetime, datetime, str | None], Awaitable[tuple[list[Event], str | None]]]
"""Fetch one page of a time range: (start, end, cursor or None for the first page) -> (events, next cursor)."""


async def sweep(
    fetch: PageFetcher,
    checkpoint: dict[str, Any] | None,
    *,
    overlap: timedelta,
    lookback: timedelta,
    now: datetime,
    window: tuple[datetime, datetime] | None = None,
) -> AsyncIterator[Batch]:
    """Batches of a newest-first API (Graph reports, Google reports): one complete sweep per round.

    A sweep reads [watermark - overlap, now] page by page; every page is committed with the sweep's progress
    (its range and the next cursor), so a crash resumes mid-sweep, and the watermark advances to the sweep's
    end only once the last page is read. Ids already emitted inside the overlap are dropped. A cursor given more
    than `MAX_REPEATED_CURSORS` times again fails the round. With `window`, the one sweep over that range is a
    backfill, and a finished backfill yields nothing more.
    """
    state = checkpoint or {}
    if window is not None and state.get("done"):
        return
    mark = Watermark.load(state.get("watermark"))
    progress = state.get("sweep")
    if isinstance(progress, Mapping):
        start, end = parse_time(progress["start"]), parse_time(progress["end"])
        cursor = progress.get("cursor")
    elif window is not None:
        start, end, cursor = window[0], window[1], None
    else:
        start = (mark.time or now - lookback) - overlap
        end, cursor = now, None
    resumed = cursor is not None
    previous_end = None if mark.time is None else mark.time.isoformat()
    horizon = (end - overlap).isoformat()
    given: Counter[str] = Counter()
    while True:
        try:
            events, following = await fetch(start, end, cursor)
        except Exception:
            if not resumed:
                raise
            log.warning("a saved page cursor was refused; restarting the sweep from its start")
            resumed, cursor = False, None
            continue
        resumed = False
        fresh = mark.fresh(events)
        if following is not None:
            given[following] += 1
            if given[following] > 1 + MAX_REPEATED_CURSORS:  # served again, after a page or a cycle of them
                raise RuntimeError("the API keeps answering with cursors it has given before; resuming next round")
        if following is None:
            mark.advance(end, overlap)
            done: dict[str, Any] = {"watermark": mark.dump(), "sweep": None}
            if window is not None:
                done["done"] = True
            yield Batch(fresh, done)
            return
        # Mid-sweep, keep the ids the next sweep's overlap needs, those of the previous sweep's overlap, and
        # this page's (a repeated cursor serves it again).
        page = {event.id for event in events}
        mark.seen = {
            key: at
            for key, at in mark.seen.items()
            if at >= horizon or key in page or (previous_end is not None and at <= previous_end)
        }
        cursor = following
        progress_value = {"start": start.isoformat(), "end": end.isoformat(), "cursor": cursor}
        yield Batch(fresh, {"watermark": mark.dump(), "sweep": progress_value})


class ConnectorRuntime:
    """Polls connectors into a pipeline and keeps their status in the store."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        run_playbooks: bool = True,
        failure_backoff: float = 5.0,
        flush_seconds: float = 1.0,
    ) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.run_playbooks = run_playbooks
        self.failure_backoff = failure_backoff
        self.flush_seconds = flush_seconds
        self.statuses: dict[str, ConnectorStatus] = {}
        """The latest status of each connector polled by this process (for /metrics)."""
        self.errors: dict[str, int] = {}
        """Failed rounds per connector since this process started (for /metrics)."""

    async def status(self, name: str) -> ConnectorStatus | None:
        """A connector's stored status."""
        async with self.store.transaction() as tx:
            return await tx.get_connector_status(name)

    async def _save(self, status: ConnectorStatus) -> None:
        self.statuses[status.connector] = status
        async with self.store.transaction() as tx:
            await tx.save_connector_status(status)

    async def poll(
        self, connector: Connector, *, kind: str = "connector", progress: Progress | None = None
    ) -> IngestReport:
        """Drain one round of `connector` from its checkpoint; each batch commits with its checkpoint, then
        `progress` sees it.

        Failures are recorded in the connector's status and re-raised.
        """
        status = await self.status(connector.name) or ConnectorStatus(connector.name, kind)
        status.kind = kind
        total = IngestReport()
        started = last_flush = time.monotonic()
        try:
            async with self.store.transaction() as tx:
                checkpoint = await tx.get_checkpoint(connector.name)
            async for batch in connector.batches(checkpoint):
                report = await self.pipeline.ingest(
                    batch.events,
                    connector=connector.name,
                    checkpoint=batch.checkpoint,
                    run_playbooks=self.run_playbooks,
                )
                total.add(report)
                if progress is not None:
                    progress(batch, report)
                status.events_total += report.stored
                newest = max((event.time for event in batch.events), default=None)
                if newest is not None and (status.newest_event is None or newest > status.newest_event):
                    status.newest_event = newest
                for warning in batch.warnings:
                    log.warning("%s: %s", connector.name, warning)
                if time.monotonic() - last_flush >= self.flush_seconds:
                    last_flush = time.monotonic()
                    await self._save(status)
        except Exception as error:
            status.consecutive_failures += 1
            self.errors[connector.name] = self.errors.get(connector.name, 0) + 1
            status.last_error = describe(error)
            status.last_error_at = utcnow()
            await self._save(status)
            raise
        elapsed = time.monotonic() - started
        status.last_round_events = total.received
        status.events_per_second = total.received / elapsed if elapsed > 0 else 0.0
        status.last_success = utcnow()
        status.consecutive_failures = 0
        await self._save(status)
        return total

    async def backfill(
        self, connector: Backfillable, start: datetime, end: datetime, *, progress: Progress | None = None
    ) -> IngestReport:
        """Read [start, end) of a connector now; re-running the same range resumes, then does nothing."""
        if end <= start:
            raise ValueError("a backfill range must end after it starts")
        return await self.poll(connector.backfill(start, end), kind="backfill", progress=progress)

    async def run(self, scheduled: Sequence[Scheduled], stop: asyncio.Event) -> None:
        """Poll each scheduled connector on its interval until `stop` is set."""
        await asyncio.gather(*(self.loop(item, stop) for item in scheduled))

    async def loop(self, item: Scheduled, stop: asyncio.Event) -> None:
        """Poll one connector every `interval` until `stop` is set; after a failure wait `failure_backoff`,
        doubling with each failure in a row up to `max_backoff` (an outage shows as lag, then recovers)."""
        failures = 0
        while not stop.is_set():
            try:
                await self.poll(item.connector, kind=item.kind)
                failures, delay = 0, item.interval
            except Exception as error:  # a failing connector must not stop the others
                failures += 1
                delay = backoff(self.failure_backoff, failures, max(item.max_backoff, self.failure_backoff))
                log.warning("%s: poll failed (%s); next try in %.1fs", item.connector.name, describe(error), delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def backoff(first: float, failures: int, ceiling: float) -> float:
    """The wait after `failures` failed rounds in a row: `first`, doubling each time, at most `ceiling`."""
    return min(ceiling, first * 2.0 ** min(failures - 1, 30))
