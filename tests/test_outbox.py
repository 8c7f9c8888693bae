"""Nothing acted on is lost: SIGKILL `custodes serve` while webhook alerts raise findings that trigger a playbook
and records that trigger another (a webhook trigger on the receiver), restart it, and every stored finding and
every stored record gets its run, exactly one (the outbox commits each start with the finding or record)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import sqlalchemy as sa

from custodes.config import DatabaseSettings
from custodes.model import stable_id
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.store import Store
from custodes.store.tables import events, findings, outbox, runs
from test_webhook_durability import ROOT, SECRET, free_port

# Both playbooks lift the hourly cap on runs (`max_runs_per_hour: 0`): the flood is hundreds of findings and records,
# and every one of them must have its run before the test ends.
PLAYBOOK = """\
name: note-every-alert
max_runs_per_hour: 0
trigger:
  findings: {min_severity: low}
steps:
  - id: note
    uses: case.note
    with: {case: "{{ entity }}", text: "seen"}
"""
ON_RECORD = """\
name: note-every-record
max_runs_per_hour: 0
trigger:
  webhook:
    receiver: alerts
    inputs: {who: "{{ record.entity }}"}
inputs:
  who: {type: string, required: true}
steps:
  - id: note
    uses: case.note
    with: {case: "{{ inputs.who }}", text: "received"}
"""


async def alerts(url: str, stop_after: float) -> int:
    """Post signed alerts, each for a new person (so each raises a new finding), until the server dies."""
    accepted = 0
    deadline = time.monotonic() + stop_after

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while time.monotonic() < deadline:
            who = uuid.uuid4().hex
            body = orjson.dumps(
                {"id": who, "title": "bulk download", "entity": f"{who}@example.com", "severity": "high"}
            )
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(SECRET, stamp, body),
            }
            try:
                async with http.post(f"{url}/webhooks/alerts", data=body, headers=headers) as response:
                    accepted += response.status == 202
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        await asyncio.gather(*(worker(http) for _ in range(16)))
    return accepted


async def serve(config: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("a") as out:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "custodes",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLOOD_SECRET": SECRET},
        )
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return server
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"serve did not start; see {log}")


async def without_run(database: DatabaseSettings) -> tuple[int, int, int, int, int]:
    """(findings, findings without a run of the finding playbook, records, records without a run of the webhook
    playbook, outbox rows)."""
    store = await Store.open(database)
    try:
        async with store.transaction() as tx:
            total = (await tx.conn.execute(sa.select(sa.func.count()).select_from(findings))).scalar_one()
            ran = sa.select(runs.c.id).where(runs.c.finding_id == findings.c.id, runs.c.playbook == "note-every-alert")
            missing = (
                await tx.conn.execute(sa.select(sa.func.count()).select_from(findings).where(~sa.exists(ran)))
            ).scalar_one()
            records = set((await tx.conn.execute(sa.select(events.c.id))).scalars())
            hooked = (
                await tx.conn.execute(sa.select(runs.c.id).where(runs.c.playbook == "note-every-record"))
            ).scalars()
            hooked_ids = list(hooked)
            owed = (await tx.conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
    finally:
        await store.close()
    assert len(hooked_ids) == len(set(hooked_ids)) <= len(records), "at most one run per record"
    unrun = {stable_id("run", "note-every-record", "webhook", r) for r in records} - set(hooked_ids)
    return total, missing, len(records), len(unrun), owed


async def test_no_playbook_start_is_lost_to_a_killed_server(database: DatabaseSettings, tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "note.yml").write_text(PLAYBOOK)
    (tmp_path / "playbooks" / "record.yml").write_text(ON_RECORD)
    schema = f"\n  schema_name: {database.schema_name}" if database.schema_name else ""
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database:\n  url: {database.url}{schema}\nplaybooks:\n  paths: [{tmp_path / 'playbooks'}]\n"
        "webhooks:\n  alerts:\n    kind: generic\n"
        "    auth: {scheme: hmac, secret: 'env:FLOOD_SECRET'}\n"
        "    alert_fields: {id: id, title: title, entity: entity, severity: severity}\n"
    )
    port = free_port()
    log = tmp_path / "serve.log"
    server = await serve(config, port, log)
    try:
        flooding = asyncio.create_task(alerts(f"http://127.0.0.1:{port}", stop_after=5.0))
        await asyncio.sleep(2.5)
        server.send_signal(signal.SIGKILL)
        accepted = await flooding
    finally:
        if server.returncode is None:
            server.kill()
        await asyncio.wait_for(server.wait(), 30)
    assert server.returncode == -signal.SIGKILL
    total, missing, records, unrun, owed = await without_run(database)
    assert accepted > 20 and total >= accepted and records >= accepted, (accepted, total, records)
    assert missing + unrun <= owed, "every finding and record without a run is owed one in the outbox"
    server = await serve(config, port, log)
    try:
        for _ in range(600):
            total, missing, records, unrun, owed = await without_run(database)
            if missing == unrun == owed == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 60)
    assert (missing, unrun, owed) == (0, 0, 0), (total, missing, records, unrun, owed, log.read_text()[-3000:])
