"""Two real receiver processes share a cluster with an enabled Okta pull connector: exactly one runs it (its
/metrics says so, the other's says stopped), and when that one is killed with SIGKILL the other takes over and
polls Okta itself."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import OKTA_TOKEN
from custodes.bus.lease import LEASE_SECONDS
from custodes.config import DatabaseSettings
from custodes.sandbox import okta
from test_cluster import AMQP_URL, fresh_exchange, postgres  # noqa: F401 (a fixture)
from test_webhook_durability import ROOT, free_port

pytestmark = pytest.mark.needs_postgres

PARTITIONS = 2


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """An exchange name of its own, its queues and itself deleted afterwards."""
    async with fresh_exchange("custodes.lease", PARTITIONS) as name:
        yield name


async def running(http: aiohttp.ClientSession, url: str) -> float | None:
    """The receiver's `custodes_connector_running` for the Okta connector (None: it does not answer)."""
    try:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "custodes_connector_running" and sample.labels == {"connector": "okta"}:
                return sample.value
    return None


async def test_one_receiver_runs_the_pull_connectors_and_another_takes_over_when_it_dies(
    tmp_path: Path,
    org: tuple[okta.OktaState, str],
    postgres: DatabaseSettings,  # noqa: F811 (the fixture)
    exchange: str,
) -> None:
    state, okta_url = org
    config = tmp_path / "custodes.yaml"
    config.write_text(
        orjson.dumps(
            {
                "database": postgres.model_dump(exclude_none=True),
                "hunts": {"schedule": False},
                "connectors": {
                    "okta": {
                        "kind": "okta",
                        "interval_seconds": 0.3,
                        "max_backoff_seconds": 1.0,
                        "credentials": {"token": "env:LEASE_OKTA"},
                        "options": {"base_url": okta_url},
                    }
                },
                "cluster": {"amqp_url": "env:LEASE_AMQP", "partitions": PARTITIONS, "exchange": exchange},
            }
        ).decode()
    )
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CUSTODES_")},
        "LEASE_OKTA": OKTA_TOKEN,
        "LEASE_AMQP": AMQP_URL,
    }
    urls, processes = [], []
    log = tmp_path / "receivers.log"
    with log.open("ab") as out:
        for _ in range(2):
            port = free_port()
            urls.append(f"http://127.0.0.1:{port}")
            processes.append(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "custodes", "serve", "--role", "receiver", "--config", str(config)),
                    *("--port", str(port)),
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        async with aiohttp.ClientSession() as http:

            async def states() -> list[float | None]:
                return [await running(http, url) for url in urls]

            async def settle(expect: set[tuple[float | None, ...]], what: str) -> tuple[float | None, ...]:
                deadline = time.monotonic() + 60
                while (found := tuple(await states())) not in expect:
                    assert time.monotonic() < deadline, f"{what}: {found}; {log.read_text()[-3000:]}"
                    await asyncio.sleep(0.1)
                return found

            first = await settle({(1.0, 0.0), (0.0, 1.0)}, "one receiver runs the connector")
            for _ in range(int(3 * LEASE_SECONDS / 0.2)):  # and only ever one, rounds after rounds
                assert tuple(await states()) == first
                await asyncio.sleep(0.2)
            leader = first.index(1.0)
            assert state.calls("GET"), "the leader polls Okta"

            processes[leader].send_signal(signal.SIGKILL)
            await processes[leader].wait()
            polled = len(state.calls("GET"))
            expect = (None, 1.0) if leader == 0 else (1.0, None)
            await settle({expect}, "the other receiver takes over")
            deadline = time.monotonic() + 20
            while len(state.calls("GET")) == polled:
                assert time.monotonic() < deadline, "the new leader polls Okta"
                await asyncio.sleep(0.1)
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert [process.returncode for process in processes].count(0) == 1, "the survivor stops cleanly"
    text = log.read_text()
    assert text.count("connector lease taken") == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
