"""Exactly-once across a crash: a connector process killed between fetching a batch and committing it loses
nothing and repeats nothing when it starts again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import orjson
import sqlalchemy as sa

from conftest import OKTA_TOKEN, ROOT
from custodes.config import DatabaseSettings
from custodes.sandbox import okta
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import events

CHILD = """
import asyncio, os, sys, orjson
from pathlib import Path
import aiohttp
from custodes.config import DatabaseSettings, Secret, Settings
from custodes.sources import SourceSettings
from custodes.connectors.okta import OktaLogOptions, OktaSystemLog
from custodes.connectors.options import RetryOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.services import Services

url, db, empty, crash_after = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

async def main() -> None:
    settings = Settings(database=DatabaseSettings(url=db))
    settings.detection.rules = [empty]
    settings.playbooks.paths = [empty]
    async with await Services.open(settings) as services, aiohttp.ClientSession() as http:
        pipeline = services.pipeline
        real = pipeline.ingest
        committed = 0

        async def ingest(batch, **kwargs):
            nonlocal committed
            if crash_after >= 0 and committed == crash_after and batch:
                print("FETCHED", len(batch), flush=True)
                await asyncio.sleep(3600)
            committed += 1
            return await real(batch, **kwargs)

        pipeline.ingest = ingest
        options = OktaLogOptions(base_url=url, page_size=10, retry=RetryOptions(attempts=3, backoff=0.01))
        source = OktaSystemLog("okta-log", "okta", SourceSettings(format="okta"), http,
                               token=Secret(os.environ["OKTA_TOKEN"], "env:OKTA_TOKEN"), options=options)
        report = await ConnectorRuntime(pipeline).poll(source)
        print(orjson.dumps({"received": report.received, "stored": report.stored}).decode(), flush=True)

asyncio.run(main())
"""


async def _child(url: str, db: str, empty: Path, crash_after: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "OKTA_TOKEN": OKTA_TOKEN, "PYTHONPATH": str(ROOT / "src")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        db,
        str(empty),
        str(crash_after),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_killed_between_fetch_and_commit_then_restarted_stores_each_event_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    state = okta.OktaState(token=OKTA_TOKEN)
    expected = [
        state.add_log_event(actor=f"u{n}@example.com", published=time.time() - 900 + n)["uuid"] for n in range(47)
    ]
    async with running(okta.create_app(state)) as url:
        crashed = await _child(url, db, empty, crash_after=2)
        assert crashed.stdout is not None
        line = await asyncio.wait_for(crashed.stdout.readline(), timeout=60)
        assert line.startswith(b"FETCHED 10"), line
        crashed.send_signal(signal.SIGKILL)
        assert await crashed.wait() == -signal.SIGKILL
        fetched_before = len(state.calls("GET"))
        restarted = await _child(url, db, empty, crash_after=-1)
        out, _ = await asyncio.wait_for(restarted.communicate(), timeout=60)
        assert restarted.returncode == 0
    report = orjson.loads(out.strip().splitlines()[-1])
    assert report == {"received": 27, "stored": 27}, "resumed after the 2 committed pages, re-reading only the lost one"
    assert fetched_before == 3
    store = await Store.open(DatabaseSettings(url=db))
    try:
        async with store.engine.connect() as conn:
            rows = [dict(row[0]) for row in await conn.execute(sa.select(events.c.raw))]
    finally:
        await store.close()
    assert sorted(row["uuid"] for row in rows) == sorted(expected)
