"""Re-scoring after a replay: behaviour scoring recomputed from the store in event-time order.

Run: .venv/bin/python bench/rescore.py [--population 100] [--days 30]

Simulates an organisation, stores its five sources one after the other without scoring (as `custodes replay` does
per batch), then times `Pipeline.settle`: every stored event read back in (time, id) order, scored, and the
baselines and day scores rewritten, on SQLite; then what a scoring process started again reads before its first
batch (`ScoringService.reseat`: the seats, from the stored events of the last 14 hours).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from custodes.config import Settings
from custodes.connectors.files import FileConnector
from custodes.detections.scoring.service import ScoringService
from custodes.detections.scoring.simulate import SOURCES, SimulationSettings, simulate
from custodes.services import Services

FORMATS = {
    "okta": {"format": "okta"},
    "cloudtrail": {"format": "cloudtrail"},
    "gworkspace": {"format": "google_workspace"},
    "entra": {"format": "generic", "fields": {"time": "createdDateTime|activityDateTime"}},
    "endpoint": {"format": "generic"},
}


async def main(population: int, days: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        simulate(SimulationSettings(population=population, days=days, warmup_days=min(21, days - 10)), root)
        for name in ("rules", "playbooks"):
            (root / name).mkdir()
        settings = Settings.model_validate(
            {
                "database": {"url": f"sqlite+aiosqlite:///{root / 'store.db'}"},
                "sources": FORMATS,
                "detection": {"rules": [str(root / "rules")]},
                "playbooks": {"paths": [str(root / "playbooks")]},
                "scoring": {"directory": str(root / "directory.json")},
            }
        )
        async with await Services.open(settings) as services:
            started = time.perf_counter()
            for source in SOURCES:
                connector = FileConnector(
                    f"bench:{source}", source, settings.source(source), [root / f"{source}.ndjson"]
                )
                async for batch in connector.batches(None):
                    await services.pipeline.ingest(batch.events, score=False)
            stored = time.perf_counter() - started
            async with services.store.transaction() as tx:
                count = await tx.count_events()
            started = time.perf_counter()
            await services.pipeline.settle(close=True, run_playbooks=False)
            rescored = time.perf_counter() - started
            restarted = await ScoringService.open(settings.scoring, services.store)
            started = time.perf_counter()
            async with services.store.transaction() as tx:
                read = await restarted.reseat(tx)
            reseated = time.perf_counter() - started
    print(f"{count} events stored in {stored:.1f} s ({count / stored:,.0f}/s)")
    print(f"re-scored from the store in {rescored:.1f} s ({count / rescored:,.0f} events/s)")
    print(f"seats read again by a process started again: {read} events in {reseated:.2f} s ({read / reseated:,.0f}/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.population, arguments.days))
