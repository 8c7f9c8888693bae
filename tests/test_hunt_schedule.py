"""Two real `custodes serve` processes on one PostgreSQL schema run a hunt every 2 s: each slot runs exactly
once, and restarting one process mid-schedule loses no slot and repeats none."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import POSTGRES_URL, ROOT, _drop_schema
from custodes.config import DatabaseSettings
from custodes.sandbox import cloudtrail as ct_sim
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import hunt_runs

pytestmark = pytest.mark.needs_postgres
PERIOD = 2


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await _drop_schema(name)


async def serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "AWS_KEY": "testing", "AWS_SECRET": "testing"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "custodes", "serve", "--config", str(config), "--port", "0",
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def scheduling(log: Path, times: int = 1) -> None:
    """Wait until the process writing `log` has started its schedules `times` times (start-up takes seconds on a
    loaded machine; the test's windows count from there)."""
    for _ in range(600):
        text = await asyncio.to_thread(lambda: log.read_text() if log.exists() else "")
        if text.count("schedules started") >= times:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no schedules started in {log}")


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_two_servers_run_each_slot_once_across_a_restart(schema: str, tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    state = ct_sim.CloudTrailState(rate_per_second=1000)
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "hunts").mkdir()
    (tmp_path / "hunts" / "fast.yaml").write_text(
        f"name: fast\nrules: {{paths: [{ROOT / 'detections/rules/aws'}]}}\nsource: {{connector: api}}\n"
        f"schedule: '*/{PERIOD} * * * * *'\nlookback: 60\n"
    )
    async with running(ct_sim.create_app(state)) as url:
        config = tmp_path / "custodes.yaml"
        config.write_text(
            f"database: {{url: '{POSTGRES_URL}', schema_name: {schema}}}\n"
            f"playbooks: {{paths: ['{empty}']}}\nscoring: {{enabled: false}}\n"
            f"hunts: {{paths: ['{tmp_path / 'hunts'}']}}\n"
            "connectors:\n  api:\n    kind: cloudtrail_lookup\n"
            "    credentials: {access_key_id: env:AWS_KEY, secret_access_key: env:AWS_SECRET}\n"
            f"    options: {{endpoint_url: '{url}'}}\n"
        )
        await (await Store.open(DatabaseSettings(url=POSTGRES_URL, schema_name=schema))).close()  # migrate once
        first = await serve(config, tmp_path / "a.log")
        second = await serve(config, tmp_path / "b.log")
        try:
            await scheduling(tmp_path / "a.log")
            await scheduling(tmp_path / "b.log")
            await asyncio.sleep(6)
            await stop(first)
            await asyncio.sleep(2 * PERIOD + 1)  # at least one slot passes while it is down
            first = await serve(config, tmp_path / "a.log")
            await scheduling(tmp_path / "a.log", times=2)
            await asyncio.sleep(5)
        finally:
            for process in (first, second):
                if process.returncode is None:
                    await stop(process)
    store = await Store.open(DatabaseSettings(url=POSTGRES_URL, schema_name=schema))
    try:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(hunt_runs.c.slot, hunt_runs.c.worker, hunt_runs.c.status))).all()
    finally:
        await store.close()
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    slots: list[datetime] = sorted(row.slot for row in rows)
    assert len(slots) == len(set(slots)) and len(slots) >= 6, logs
    assert all(row.status == "succeeded" for row in rows), logs
    gaps = {b - a for a, b in itertools.pairwise(slots)}
    assert gaps == {timedelta(seconds=PERIOD)}, (slots, logs)  # no slot missed, none run twice
    assert "already run by another worker" in logs  # both servers fired; the store let one run each slot
