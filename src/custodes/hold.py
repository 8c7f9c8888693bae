"""The event-time hold of live sources: scoring sees events in event-time order whatever source lags.

Every live source (a connector `custodes serve` runs) has a watermark: the newest event time it has delivered.
Events and findings bound for behaviour scoring are held until the low watermark (the slowest live source's)
has passed them, then released in event-time order, so a lagging source neither makes its own events late nor
lets the others close a date it still owes events to. A source holds at most `max_hold` behind the newest event
time any source delivered (a stalled or quiet source stops holding there); what it delivers later for a date
already closed counts as late, and a backfill or replay re-scores those days (`Pipeline.settle`).

Changes are planned inside the ingest transaction (`plan`) and applied once it commits (`apply`), so a failed
transaction leaves the hold as it was. The release cursor is persisted with the scoring state, so a restarted
service holds again what was held (`Pipeline.restore_held`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from custodes.model import Event, Finding

Item = tuple[datetime, int, int, Event | Finding]
"""(time, 0 for an event and 1 for a finding, arrival order, the item): a finding follows its event."""


@dataclass(slots=True)
class Plan:
    """What one batch does to the hold: the items released to scoring now, and the hold after it."""

    released: list[Event | Finding]
    heap: list[Item]
    cursor: datetime | None
    watermarks: dict[str, datetime | None]
    past_bound: Counter[str]


@dataclass(slots=True)
class EventTimeHold:
    """Live sources' watermarks and the items held until the slowest passes them."""

    max_hold: timedelta = timedelta(hours=2)
    watermarks: dict[str, datetime | None] = field(default_factory=dict)
    """Live source -> the newest event time it delivered (None: nothing yet)."""
    heap: list[Item] = field(default_factory=list)
    cursor: datetime | None = None
    """Everything at or before this time has been released; what arrives for it is fed at once."""
    past_bound: Counter[str] = field(default_factory=Counter)
    """Items released while a source was held no longer (it lagged by more than `max_hold`), by that source."""
    _order: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def active(self) -> bool:
        """Whether any live source holds (else items pass straight through)."""
        return bool(self.watermarks)

    def join(self, source: str) -> None:
        """A live source starts."""
        self.watermarks.setdefault(source, None)

    def leave(self, source: str) -> None:
        """A live source stops: it holds nothing any more (the next batch releases what it held)."""
        self.watermarks.pop(source, None)

    def held(self) -> dict[str, int]:
        """Items held now, by source."""
        counts: Counter[str] = Counter(_source(item[3]) for item in self.heap)
        return dict(sorted(counts.items()))

    def stalled(self, watermarks: dict[str, datetime | None] | None = None) -> list[str]:
        """Live sources lagging by more than the bound (they hold no longer)."""
        marks = self.watermarks if watermarks is None else watermarks
        top = max((mark for mark in marks.values() if mark is not None), default=None)
        if top is None:
            return []
        return sorted(name for name, mark in marks.items() if mark is None or mark < top - self.max_hold)

    def plan(
        self, source: str | None, events: Sequence[Event], findings: Sequence[Finding], *, newest: datetime | None
    ) -> Plan:
        """Hold a committed-with-this-transaction batch and release what the low watermark has passed.

        `newest` is scoring's clock before the hold started (the cursor of a first plan)."""
        watermarks = dict(self.watermarks)
        if source in watermarks:
            delivered = max((event.time for event in events), default=None)
            mark = watermarks[source]
            if delivered is not None and (mark is None or delivered > mark):
                watermarks[source] = delivered
        heap = list(self.heap)
        cursor = self.cursor if self.heap or self.cursor is not None else newest
        released: list[Event | Finding] = []
        for item in _items(events, findings, self._order):
            if cursor is not None and item[0] <= cursor:
                released.append(item[3])
            else:
                heapq.heappush(heap, item)
        low = self._low(watermarks)
        stalled = self.stalled(watermarks)
        past_bound: Counter[str] = Counter()
        while heap and (not watermarks or (low is not None and heap[0][0] <= low)):
            item = heapq.heappop(heap)
            released.append(item[3])
            for name in stalled:
                past_bound[name] += 1
        if low is not None and (cursor is None or low > cursor):
            cursor = low
        elif not watermarks and released:
            newest_released = max(_time(item) for item in released)
            cursor = newest_released if cursor is None else max(cursor, newest_released)
        return Plan(released, heap, cursor, watermarks, self.past_bound + past_bound)

    def apply(self, plan: Plan) -> None:
        """Take a committed plan's hold."""
        self.heap, self.cursor, self.past_bound = plan.heap, plan.cursor, plan.past_bound
        for name, mark in plan.watermarks.items():
            if name in self.watermarks:
                self.watermarks[name] = mark

    def restore(self, events: Iterable[Event], findings: Iterable[Finding], cursor: datetime | None) -> None:
        """Hold again what a previous process held (stored after `cursor`, not yet scored)."""
        self.cursor = cursor
        self.heap = list(_items(list(events), list(findings), self._order))
        heapq.heapify(self.heap)

    def clear(self, cursor: datetime | None) -> None:
        """Forget what is held (a re-score from the store has scored it)."""
        self.heap, self.cursor = [], cursor

    def _low(self, watermarks: dict[str, datetime | None]) -> datetime | None:
        """The time up to which every live source has delivered, each held at most `max_hold` behind the newest;
        None when no source holds or none has delivered anything yet."""
        top = max((mark for mark in watermarks.values() if mark is not None), default=None)
        if top is None:
            return None
        floor = top - self.max_hold
        return min(floor if mark is None else max(mark, floor) for mark in watermarks.values())


def _items(events: Sequence[Event], findings: Sequence[Finding], order: itertools.count[int]) -> list[Item]:
    return [(event.time, 0, next(order), event) for event in events] + [
        (finding.last_seen, 1, next(order), finding) for finding in findings
    ]


def _time(item: Event | Finding) -> datetime:
    return item.time if isinstance(item, Event) else item.last_seen


def _source(item: Event | Finding) -> str:
    return item.source if isinstance(item, Event) else item.detector
