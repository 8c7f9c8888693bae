"""Memory of Sigma correlation state: bytes per group key and per kept event, measured with tracemalloc.

Loads the rule pack's "Mass Download by One User" correlation (event_count, group-by user, 1 h sliding window,
threshold 100) and feeds it SharePoint downloads from 10,000 users: once with one event per user (the cost of a
group key: its OrderedDict slot, `Group`, values list and key string, plus one entry) and once with 50 events per
user (below the threshold, so every event is kept); event ids are 36-character UUIDs.
Bytes per kept event = (second - first) / (49 * groups).
Also prints the events/s of feeding (matching excluded) and the JSON size of a group as the store keeps it.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from custodes.detections.sigma.correlation import Correlator
from custodes.detections.sigma.loader import load_rules
from custodes.model import Event, LogSource

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "detections" / "rules"
CORRELATION = "95f156eb-cb65-4bd7-b1dd-89a348252378"
SHAREPOINT = "d317c3d8-2694-474e-bfdb-bd935c9b216c"
GROUPS = 10_000
START = datetime(2026, 11, 21, 22, 0, tzinfo=UTC)


def events(per_group: int) -> list[Event]:
    """SharePoint downloads: `per_group` per user, users interleaved, one second apart per user."""
    logsource = LogSource("m365", "audit")
    made = []
    for step in range(per_group):
        for user in range(GROUPS):
            raw = {"Workload": "SharePoint", "Operation": "FileDownloaded", "UserId": f"user{user:05d}@example.com"}
            made.append(
                Event(str(uuid.UUID(int=user << 32 | step)), START + timedelta(seconds=step), "m365", logsource, raw)
            )
    return made


def measure(per_group: int) -> tuple[int, float, Correlator]:
    """Bytes the correlator holds after feeding, and the seconds feeding took."""
    ruleset = load_rules([RULES])
    base = next(rule for rule in ruleset.rules if rule.id == SHAREPOINT)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    batch = events(per_group)  # made while tracing: the ids entries keep count, the rest is freed below
    correlator = Correlator([ruleset], max_groups=GROUPS, max_events_per_group=1_000)
    started = time.process_time()
    for event in batch:
        assert not correlator.feed(event, [base])
    seconds = time.process_time() - started
    del batch
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = correlator.stats()[CORRELATION]
    assert stats.groups == GROUPS and stats.events == GROUPS * per_group, stats
    return held, seconds, correlator


def main() -> None:
    one, _, _ = measure(1)
    many, seconds, correlator = measure(50)
    per_event = (many - one) / (49 * GROUPS)
    per_group = one / GROUPS - per_event
    state = correlator.states[CORRELATION]
    stored = sum(len(orjson.dumps(group.dump())) for group in state.groups.values()) / GROUPS
    print(f"groups: {GROUPS:,}; events kept: 1 and 50 per group (correlation {CORRELATION})")
    print(f"correlator memory, 1 event per group:   {one / 2**20:7.2f} MiB")
    print(f"correlator memory, 50 events per group: {many / 2**20:7.2f} MiB")
    print(f"bytes per group key (without its events): {per_group:,.0f}")
    print(f"bytes per kept event:                     {per_event:,.0f}")
    print(f"stored JSON per group of 50 events:       {stored:,.0f} bytes")
    print(f"feeding (no matching): {GROUPS * 50 / seconds:,.0f} events/s (tracemalloc on, which slows it)")


if __name__ == "__main__":
    main()
