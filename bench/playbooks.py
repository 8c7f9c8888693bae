"""Playbook engine bench: trigger-to-first-action latency (p50/p99) and runs/s of a 5-step playbook.

Each run is durable as in production: run start, every step's `running` record (with the previous step's final
record) before its action, the run's end, and every audit entry are committed (SQLite in WAL with
synchronous=FULL; PostgreSQL). Concurrent runs share commits (group commit). The action is a registered
no-network action, so the figures measure the engine and the store. One process, one event loop (one core).

    .venv/bin/python bench/playbooks.py            # PostgreSQL from CUSTODES_BENCH_POSTGRES_URL, else 127.0.0.1
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from custodes.config import DatabaseSettings, PlaybookSettings, ResponderSettings
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder.registry import ActionContext, ActionSpec, Registry
from custodes.store import Store
from custodes.store.database import drop_schema

POSTGRES = os.environ.get("CUSTODES_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
LATENCY_RUNS = 300
THROUGHPUT_RUNS = 2000
IN_FLIGHT = 128
P50_BAR_MS, P99_BAR_MS, RUNS_BAR = 20.0, 100.0, 200.0
PLAYBOOK = "name: bench\ntrigger: {manual: true}\nsteps:\n" + "".join(
    f"  - id: s{i}\n    uses: bench.noop\n    with: {{n: {i}, text: 'step {i} of {{{{ playbook.name }}}}'}}\n"
    for i in range(5)
)

registry = Registry()
first_action: dict[str, float] = {}


@registry.action("bench.noop", plan="nothing ({n})", target="text")
async def noop(ctx: ActionContext, *, n: int, text: str) -> dict[str, Any]:
    """Do nothing, and note when the first step of a run got here."""
    if ctx.run_id is not None and n == 0:
        first_action.setdefault(ctx.run_id, time.perf_counter())
    return {"n": n}


async def invoke(spec: ActionSpec, ctx: ActionContext, arguments: dict[str, Any]) -> dict[str, Any]:
    return await spec.fn(ctx, **arguments)


async def measure(name: str, database: DatabaseSettings, loaded: LoadedPlaybook) -> dict[str, float]:
    store = await Store.open(database)
    try:
        async with aiohttp.ClientSession() as http:
            runner = Runner(
                store,
                registry,
                ResponderSettings(),
                http,
                engine=PlaybookSettings(heartbeat_seconds=30),
                invoke=invoke,
            )
            for _ in range(20):
                await runner.start_manual(loaded, {}, requested_by="bench")
            latencies = []
            for _ in range(LATENCY_RUNS):
                began = time.perf_counter()
                run = await runner.start_manual(loaded, {}, requested_by="bench")
                latencies.append((first_action[run.id] - began) * 1000)
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def one() -> str:
                async with gate:
                    return (await runner.start_manual(loaded, {}, requested_by="bench")).status.value

            batches, units = store.group.batches, store.group.units
            began = time.perf_counter()
            statuses = await asyncio.gather(*(one() for _ in range(THROUGHPUT_RUNS)))
            elapsed = time.perf_counter() - began
            assert set(statuses) == {"succeeded"}, set(statuses)
            batches, units = store.group.batches - batches, store.group.units - units
    finally:
        await store.close()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "runs_per_s": THROUGHPUT_RUNS / elapsed,
        "transitions_per_commit": units / batches,
    }


async def postgres_schema() -> tuple[DatabaseSettings, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    return DatabaseSettings(url=POSTGRES, schema_name=schema), schema


async def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yml"
        path.write_text(PLAYBOOK)
        [loaded] = load_playbooks([path], registry)
        results = {
            "SQLite": await measure("SQLite", DatabaseSettings(url=f"sqlite+aiosqlite:///{folder}/b.db"), loaded)
        }
        database, schema = await postgres_schema()
        try:
            results["PostgreSQL"] = await measure("PostgreSQL", database, loaded)
        finally:
            await drop_schema(POSTGRES, schema)
    print(
        f"5-step playbook, {LATENCY_RUNS} sequential runs for latency, {THROUGHPUT_RUNS} runs ({IN_FLIGHT} in flight)"
    )
    print(f"{'store':<12}{'measure':<34}{'measured':>12}{'target':>12}  verdict")
    ok = True
    for name, r in results.items():
        rows: list[tuple[str, float, str, bool]] = [
            ("runs/s, 5 steps", r["runs_per_s"], f">= {RUNS_BAR:.0f}", r["runs_per_s"] >= RUNS_BAR)
        ]
        if name == "SQLite":
            rows[:0] = [
                ("trigger -> first action p50 (ms)", r["p50_ms"], f"< {P50_BAR_MS:.0f}", r["p50_ms"] < P50_BAR_MS),
                ("trigger -> first action p99 (ms)", r["p99_ms"], f"< {P99_BAR_MS:.0f}", r["p99_ms"] < P99_BAR_MS),
            ]
        else:
            rows[:0] = [
                ("trigger -> first action p50 (ms)", r["p50_ms"], "reported", True),
                ("trigger -> first action p99 (ms)", r["p99_ms"], "reported", True),
            ]
        rows.append(("transitions per commit", r["transitions_per_commit"], "reported", True))
        for label, value, target, met in rows:
            verdict = "" if target == "reported" else ("met" if met else "NOT MET")
            print(f"{name:<12}{label:<34}{value:>12.2f}{target:>12}  {verdict}")
            ok = ok and met
    print("all bars met" if ok else "some bars NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
