"""A detection worker and a playbook runner serve /healthz, /readyz and /metrics on the server's port: ready once
connected and holding every partition's consumer (worker) or once the store answers (runner), with the worker's
deliveries committed, redeliveries and partitions owned, and the runner's outbox claims and starts. A worker is
not ready before it connects, nor while a partition's channel is closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from custodes.bus.publisher import Publisher
from custodes.bus.wire import Envelope
from custodes.bus.worker import DetectionWorker
from custodes.config import DatabaseSettings, Role, Settings, load_settings
from custodes.model import Event, LogSource
from custodes.server.metrics import Metrics, WorkerMetrics
from custodes.server.roles import serve_role
from custodes.services import Services
from test_cluster import AMQP_URL, fresh_exchange, postgres  # noqa: F401 (a fixture)
from test_webhook_durability import free_port

pytestmark = pytest.mark.needs_postgres

PARTITIONS = 2


def settings_for(tmp_path: Path, database: DatabaseSettings, exchange: str, port: int) -> Settings:
    """A worker's or runner's settings: the test schema, the broker, a port of its own."""
    config = tmp_path / f"custodes-{port}.yaml"
    config.write_text(
        f"database: {{url: '{database.url}', schema_name: {database.schema_name}}}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "hunts: {schedule: false}\n"
        f"cluster: {{amqp_url: 'env:AMQP', partitions: {PARTITIONS}, exchange: '{exchange}'}}\n"
    )
    return load_settings(config, environ={"AMQP": AMQP_URL})


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """An exchange name of its own, its queues and itself deleted afterwards."""
    async with fresh_exchange("custodes.probes", PARTITIONS) as name:
        yield name


async def eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check()` until true, for at most 20 s."""
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, f"{what} not seen in 20 s"
        await asyncio.sleep(0.1)


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The samples of /metrics by name and labels, e.g. `custodes_partitions_owned` or `name{partition="0"}`."""
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def status(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    """/readyz's status and body."""
    try:
        async with http.get(f"{url}/readyz") as response:
            return response.status, await response.json()
    except aiohttp.ClientError:
        return 0, {}


async def test_a_worker_and_a_runner_answer_their_probes_and_metrics(
    tmp_path: Path,
    postgres: DatabaseSettings,  # noqa: F811 (the fixture)
    exchange: str,
) -> None:
    worker_port, runner_port = free_port(), free_port()
    worker_url, runner_url = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{runner_port}"
    stop = asyncio.Event()
    worker_settings = settings_for(tmp_path, postgres, exchange, worker_port)
    runner_settings = settings_for(tmp_path, postgres, exchange, runner_port)
    async with (
        await Services.open(worker_settings) as worker_services,
        await Services.open(runner_settings) as runner_services,
        aiohttp.ClientSession() as http,
    ):
        roles = [
            asyncio.create_task(serve_role(worker_services, Role.WORKER, stop)),
            asyncio.create_task(serve_role(runner_services, Role.RUNNER, stop)),
        ]
        try:

            async def ready() -> bool:
                return [(await status(http, u))[0] for u in (worker_url, runner_url)] == [200, 200]

            await eventually("both /readyz 200", ready)
            for url in (worker_url, runner_url):
                async with http.get(f"{url}/healthz") as response:
                    assert (response.status, await response.json()) == (200, {"status": "ok"})
                async with http.get(f"{url}/api/v1/events") as response:
                    assert response.status == 404, "workers and runners serve the probes and metrics only"

            publisher = await Publisher.open(AMQP_URL, exchange, PARTITIONS)
            try:
                when = datetime.now(UTC)
                events = [
                    Event(f"e{n}", when, "okta", LogSource("okta", "okta"), {}, f"user{n}@example.com")
                    for n in range(20)
                ]
                await publisher.publish([(event.actor or event.id, Envelope(event)) for event in events])
            finally:
                await publisher.close()

            async def committed() -> bool:
                samples = await scrape(http, worker_url)
                done = sum(
                    samples.get(f'custodes_partition_deliveries_committed_total{{partition="{p}"}}', 0)
                    for p in range(PARTITIONS)
                )
                return done == len(events)

            await eventually("20 deliveries committed", committed)
            samples = await scrape(http, worker_url)
            assert samples["custodes_partitions_owned"] == PARTITIONS, "the only worker owns every partition"
            assert samples["custodes_partition_commit_seconds_count"] >= 1
            assert not any(name.startswith("custodes_partition_redeliveries_total") for name in samples)
            samples = await scrape(http, runner_url)
            assert samples["custodes_outbox_claimed_total"] == 0
            assert samples["custodes_outbox_runs_started_total"] == 0
            assert samples["custodes_runs_reaped_total"] == 0
        finally:
            stop.set()
            await asyncio.gather(*roles)
        for url in (worker_url, runner_url):
            assert await status(http, url) == (0, {}), "the listener stops with its role"


async def test_a_worker_is_not_ready_until_connected_nor_while_a_partition_has_no_consumer(
    tmp_path: Path,
    postgres: DatabaseSettings,  # noqa: F811 (the fixture)
    exchange: str,
) -> None:
    settings = settings_for(tmp_path, postgres, exchange, free_port())
    async with await Services.open(settings) as services:
        worker = DetectionWorker(services, settings.cluster, WorkerMetrics(Metrics().registry))
        assert await worker.unready() == "not connected to RabbitMQ"
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:

            async def ready() -> bool:
                return await worker.unready() is None

            await eventually("the worker ready", ready)
            assert worker.consumer is not None
            channel = worker.consumer.partitions[1].channel
            assert channel is not None
            await channel.close()  # as when the broker closes a channel
            assert await worker.unready() == "not subscribed to partition(s) 1"
        finally:
            stop.set()
            await running
        assert await worker.unready() == "not connected to RabbitMQ"
