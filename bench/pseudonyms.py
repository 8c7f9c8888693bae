"""Pseudonym lookups at 100,000 entities: recomputing every entity's pseudonym per request (what the API did) against
the pseudonym stored beside each entity (indexed; filled once per entity, on the first lookup).

    .venv/bin/python bench/pseudonyms.py [--entities 100000] [--lookups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from custodes.config import DatabaseSettings
from custodes.detections.scoring.privacy import Pseudonymizer
from custodes.detections.scoring.service import entity_for_pseudonym
from custodes.store import Store


async def main(count: int, lookups: int) -> None:
    pseudonymizer = Pseudonymizer(b"k" * 32)
    names = [f"user{n}@corp.example" for n in range(count)]
    now = datetime(2026, 11, 19, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"))
        try:
            async with store.transaction() as tx:
                for start in range(0, count, 10_000):
                    await tx.touch_entities({name: (now, now) for name in names[start : start + 10_000]})
            wanted = [pseudonymizer(names[(n * 7919) % count]) for n in range(lookups)]

            started = time.perf_counter()
            async with store.transaction() as tx:  # as the API did: every entity, then every pseudonym
                stored = [row["id"] for row in await tx.list_entities(limit=1_000_000)]
            assert pseudonymizer.find(wanted[0], stored) is not None
            recompute = time.perf_counter() - started

            started = time.perf_counter()
            assert await entity_for_pseudonym(store, pseudonymizer, wanted[0]) is not None
            first = time.perf_counter() - started
            times = []
            for pseudonym in wanted:
                started = time.perf_counter()
                assert await entity_for_pseudonym(store, pseudonymizer, pseudonym) is not None
                times.append(time.perf_counter() - started)
        finally:
            await store.close()
    times.sort()
    print(f"{count:,} entities, SQLite")
    print(f"  recompute every pseudonym per lookup : {recompute * 1000:8.1f} ms per lookup")
    print(f"  indexed, first lookup (fills index)  : {first * 1000:8.1f} ms, once per entity")
    print(
        f"  indexed, later lookups               : p50 {statistics.median(times) * 1000:.2f} ms, "
        f"p99 {times[int(len(times) * 0.99) - 1] * 1000:.2f} ms ({lookups} lookups)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.entities, arguments.lookups))
