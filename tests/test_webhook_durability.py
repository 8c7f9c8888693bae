"""Accepted means stored: SIGKILL `custodes serve` in the middle of a webhook flood, then check the store."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

from custodes.config import DatabaseSettings
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.store import Store

ROOT = Path(__file__).resolve().parents[1]
SECRET = "flood-secret-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def flood(url: str, stop_after: float) -> tuple[set[str], int]:
    """Post distinct signed records from 16 connections until the server dies; return accepted event ids."""
    accepted: set[str] = set()
    failures = 0
    deadline = time.monotonic() + stop_after

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            body = orjson.dumps(
                {
                    "uuid": str(uuid.uuid4()),
                    "published": "2026-11-19T02:00:00Z",
                    "eventType": "user.session.start",
                    "actor": {"alternateId": "ann@example.com"},
                }
            )
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(SECRET, stamp, body),
            }
            try:
                async with http.post(f"{url}/webhooks/generic", data=body, headers=headers) as response:
                    if response.status == 202:
                        accepted.update((await response.json())["event_ids"])
            except (aiohttp.ClientError, TimeoutError):
                failures += 1
                await asyncio.sleep(0.01)

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(16)))
    return accepted, failures


async def test_every_accepted_alert_survives_a_killed_server(tmp_path: Path) -> None:
    database = tmp_path / "flood.db"
    (tmp_path / "playbooks").mkdir()
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database:\n  url: sqlite+aiosqlite:///{database}\nplaybooks:\n  paths: [{tmp_path / 'playbooks'}]\n"
        "webhooks:\n  generic:\n    kind: generic\n    source: okta\n"
        "    auth: {scheme: hmac, secret: 'env:FLOOD_SECRET'}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("w") as log:
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
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLOOD_SECRET": SECRET},
        )
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"{url}/healthz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            flooding = asyncio.create_task(flood(url, stop_after=6.0))
            await asyncio.sleep(2.0)
            server.send_signal(signal.SIGKILL)
            accepted, failures = await flooding
        finally:
            if server.returncode is None:
                server.kill()
            await asyncio.wait_for(server.wait(), 30)
    assert server.returncode == -signal.SIGKILL
    assert len(accepted) > 50 and failures > 0, (len(accepted), failures)
    store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"))
    try:
        async with store.transaction() as tx:
            stored = {event.id for event in await tx.get_events(sorted(accepted))}
    finally:
        await store.close()
    assert stored == accepted
