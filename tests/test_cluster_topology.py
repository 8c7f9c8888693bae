"""Processes of a cluster that start together declare its exchange and partition queues one at a time (a PostgreSQL
advisory lock per store schema and exchange). RabbitMQ answers a declaration of a quorum queue that another
connection is still creating at once, before the queue's replica runs, and a consumer of it then crashes the
connection (INTERNAL_ERROR); taking turns, every declaration returns once the queues run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from custodes.bus.topology import declaring
from custodes.bus.worker import DetectionWorker
from custodes.config import DatabaseSettings
from custodes.server.metrics import Metrics, WorkerMetrics
from custodes.services import Services
from custodes.store import Store
from custodes.store.locks import lock_key
from test_cluster import fresh_exchange, postgres  # noqa: F401 (a fixture)
from test_cluster_probes import eventually, settings_for
from test_webhook_durability import free_port

pytestmark = pytest.mark.needs_postgres

WORKERS = 4


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """An exchange name of its own, its queues and itself deleted afterwards."""
    async with fresh_exchange("custodes.topology", 2) as name:
        yield name


def test_each_purpose_schema_and_exchange_has_a_lock_of_its_own() -> None:
    keys = {
        lock_key(purpose, schema, exchange)
        for purpose in ("topology", "connectors")
        for schema in (None, "soc")
        for exchange in ("custodes.events", "soc.events")
    }
    assert len(keys) == 8
    assert all(-(2**63) <= key < 2**63 for key in keys), "PostgreSQL's advisory lock keys are signed 64-bit"


async def test_declarations_of_one_cluster_take_turns(postgres: DatabaseSettings) -> None:  # noqa: F811
    store = await Store.open(postgres)
    try:
        entered = asyncio.Event()

        async def second() -> None:
            async with declaring(store, "custodes.events"):
                entered.set()

        async with declaring(store, "custodes.events"):
            waiting = asyncio.create_task(second())
            async with declaring(store, "soc.events"):  # another cluster's lock is free
                pass
            await asyncio.sleep(0.5)
            assert not entered.is_set(), "a second declaration waits while the first is under way"
        await asyncio.wait_for(waiting, 10)
        assert entered.is_set()
    finally:
        await store.close()


async def test_workers_starting_together_subscribe_without_the_broker_refusing(
    tmp_path: Path,
    postgres: DatabaseSettings,  # noqa: F811 (the fixture)
    exchange: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(tmp_path, postgres, exchange, free_port())
    async with await Services.open(settings) as services:
        workers = [
            DetectionWorker(services, settings.cluster, WorkerMetrics(Metrics().registry)) for _ in range(WORKERS)
        ]
        stop = asyncio.Event()
        running = [asyncio.create_task(worker.run(stop)) for worker in workers]
        try:

            async def ready() -> bool:
                return [await worker.unready() for worker in workers] == [None] * WORKERS

            await eventually(f"{WORKERS} workers ready", ready)
        finally:
            stop.set()
            await asyncio.gather(*running)
    assert "refused the subscription" not in caplog.text
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
