"""The topology compose.yaml describes, run as local processes: its services' commands and environments as Compose
would give them (interpolated from a deploy/.env made as .env.example says), with the machine's PostgreSQL and
RabbitMQ standing in for the `postgres` and `rabbitmq` services. The migration runs once and exits; then every
replica of every role starts and becomes ready: every replica answers /readyz, /metrics and the image's health
check over HTTP, and the workers' readiness holds up: they are live in the store and consume every partition queue.
On SIGTERM each stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from conftest import POSTGRES_URL, _drop_schema
from custodes.bus.topology import queue_name
from custodes.config import DatabaseSettings
from custodes.store import Store
from custodes.store.cluster import live_workers
from custodes.store.migrate import alembic_config
from deploy_support import DEPLOY, compose_model, custodes_services, dockerfile_instruction, generated_env
from test_cluster import AMQP_URL
from test_webhook_durability import free_port

pytestmark = pytest.mark.needs_postgres

PARTITIONS = 4
"""Set through compose.yaml's own CUSTODES_PARTITIONS variable (fewer queues than the default 16, for speed)."""
READY_SECONDS = 90.0


@dataclass
class Replica:
    """One process of a compose service."""

    service: str
    process: asyncio.subprocess.Process
    log: Path
    port: int | None

    def lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far."""
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                found.append(orjson.loads(line))
        return found


@pytest.fixture
async def isolation() -> AsyncIterator[tuple[str, str]]:
    """A fresh PostgreSQL schema and exchange name for this topology, both removed afterwards."""
    schema, exchange = f"t_{uuid.uuid4().hex[:12]}", f"custodes.deploy.{uuid.uuid4().hex[:10]}"
    try:
        yield schema, exchange
    finally:
        await _drop_schema(schema)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for partition in range(PARTITIONS):
                await channel.queue_delete(queue_name(exchange, partition))
            await channel.exchange_delete(exchange)


def local_environment(service: dict[str, Any], model: dict[str, Any], schema: str, exchange: str) -> dict[str, str]:
    """The service's environment, with this machine's PostgreSQL and RabbitMQ in place of compose's `postgres` and
    `rabbitmq` services and the mounted custodes.yaml read from deploy/; a schema and an exchange of its own."""
    environ: dict[str, str] = dict(service["environment"])
    assert "@postgres:5432/" in environ["CUSTODES_DATABASE_URL"]
    assert "@rabbitmq:5672/" in environ["CUSTODES_AMQP_URL"]
    assert POSTGRES_URL is not None
    (mount,) = service["configs"]
    assert mount["target"] == environ["CUSTODES_CONFIG"]
    environ.update(
        CUSTODES_CONFIG=str(DEPLOY / model["configs"][mount["source"]]["file"]),
        CUSTODES_DATABASE_URL=POSTGRES_URL,
        CUSTODES_AMQP_URL=AMQP_URL,
        CUSTODES_DATABASE__SCHEMA_NAME=schema,
        CUSTODES_CLUSTER__EXCHANGE=exchange,
    )
    return environ


def output_file(workdir: Path) -> Path:
    """Make a replica's working folder; where its output goes."""
    workdir.mkdir(parents=True)
    return workdir / "output.log"


async def start(name: str, argv: list[str], environ: dict[str, str], workdir: Path, port: int | None) -> Replica:
    """Start one replica in a working folder of its own (the image's /var/lib/custodes)."""
    log = output_file(workdir)
    base = {key: value for key, value in os.environ.items() if not key.startswith("CUSTODES_")}
    if port is not None:  # each container has its own network; local replicas need ports of their own
        environ = {**environ, "CUSTODES_SERVER__HOST": "127.0.0.1", "CUSTODES_SERVER__PORT": str(port)}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=workdir, env={**base, **environ}, stdout=out, stderr=subprocess.STDOUT
        )
    return Replica(name, process, log, port)


async def revisions(schema: str) -> list[str]:
    """The revisions the schema's store is at (without migrating it)."""
    assert POSTGRES_URL is not None
    store = await Store.open(DatabaseSettings(url=POSTGRES_URL, schema_name=schema), migrate_schema=False)
    try:
        async with store.engine.connect() as conn:
            return sorted((await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars())
    finally:
        await store.close()


async def wait_until(what: str, replicas: list[Replica], check: Any) -> None:
    """Poll `check()` until true; fail naming `what` (and a replica that died, with its output)."""
    deadline = time.monotonic() + READY_SECONDS
    while not await check():
        for replica in replicas:
            if replica.process.returncode is not None:
                raise AssertionError(
                    f"{replica.service} exited {replica.process.returncode}: {replica.log.read_text()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {READY_SECONDS} s")
        await asyncio.sleep(0.3)


async def test_compose_topology_runs_as_processes(isolation: tuple[str, str], tmp_path: Path) -> None:
    schema, exchange = isolation
    env = {**generated_env(), "CUSTODES_PARTITIONS": str(PARTITIONS)}
    model = compose_model(env)
    services = custodes_services(model)
    entrypoint = [sys.executable, "-m", "custodes"]  # what the image's ENTRYPOINT runs
    assert dockerfile_instruction("ENTRYPOINT") == ["custodes"]

    # the migration: once, before everything that depends on its completion
    migrate = services["migrate"]
    dependants = [name for name, s in services.items() if "migrate" in s.get("depends_on", {})]
    assert sorted(dependants) == ["receiver", "runner", "worker"]
    environ = local_environment(migrate, model, schema, exchange)
    migration = await start("migrate", [*entrypoint, *migrate["command"]], environ, tmp_path / "migrate", None)
    assert await asyncio.wait_for(migration.process.wait(), READY_SECONDS) == 0, migration.log.read_text()
    heads = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert await revisions(schema) == heads

    replicas: list[Replica] = []
    try:
        for name in dependants:
            service = services[name]
            environ = local_environment(service, model, schema, exchange)
            for index in range(service.get("deploy", {}).get("replicas", 1)):
                port = free_port()
                argv = [*entrypoint, *service["command"]]
                replicas.append(await start(name, argv, environ, tmp_path / f"{name}-{index}", port))
        counts = {name: sum(r.service == name for r in replicas) for name in dependants}
        assert counts == {"receiver": 2, "worker": 3, "runner": 2}
        await ready(replicas, schema, exchange)
        assert all(replica.process.returncode is None for replica in replicas)
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        codes = []
        for replica in replicas:
            try:
                codes.append(await asyncio.wait_for(replica.process.wait(), 30))
            except TimeoutError:
                replica.process.kill()
                codes.append(await replica.process.wait())
    assert codes == [0] * len(replicas), [
        (r.service, r.log.read_text()[-2000:]) for r in replicas if r.process.returncode
    ]


async def healthcheck(port: int | None) -> int:
    """Run the image's HEALTHCHECK command against a replica's port; its exit code."""
    argv = dockerfile_instruction("HEALTHCHECK")
    assert argv[0] == "python"
    environ = {**os.environ, "CUSTODES_SERVER__PORT": str(port)}
    process = await asyncio.create_subprocess_exec(sys.executable, *argv[1:], env=environ, stderr=subprocess.DEVNULL)
    return await asyncio.wait_for(process.wait(), 30)


async def ready(replicas: list[Replica], schema: str, exchange: str) -> None:
    """Every replica answers /readyz (each role by what it does), /metrics and the image's health check; the
    workers' readiness is checked against the store and the broker."""
    assert POSTGRES_URL is not None
    workers = [r for r in replicas if r.service == "worker"]

    async with aiohttp.ClientSession() as http:

        async def all_ready() -> bool:
            for replica in replicas:
                try:
                    async with http.get(f"http://127.0.0.1:{replica.port}/readyz") as response:
                        if response.status != 200:
                            return False
                except aiohttp.ClientError:
                    return False
            return True

        await wait_until("every replica's /readyz", replicas, all_ready)
        for replica in replicas:
            async with http.get(f"http://127.0.0.1:{replica.port}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            if replica.service == "worker":
                assert "custodes_partitions_owned" in text
            if replica.service == "runner":
                assert "custodes_outbox_claimed_total" in text
            assert await healthcheck(replica.port) == 0
    assert await healthcheck(free_port()) != 0  # nothing listening: the image's check fails

    store = await Store.open(DatabaseSettings(url=POSTGRES_URL, schema_name=schema), migrate_schema=False)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()

        async def workers_ready() -> bool:
            async with store.transaction() as tx:
                live = await live_workers(tx, exchange, timedelta(seconds=5))
            pids = {int(name.split(":")[1]) for name in live}
            if pids != {worker.process.pid for worker in workers}:
                return False
            for partition in range(PARTITIONS):
                queue = await channel.declare_queue(queue_name(exchange, partition), passive=True)
                consumers = queue.declaration_result.consumer_count
                assert consumers is not None, "a passive declaration answers with the queue's consumer count"
                if consumers < 1:
                    return False
            return True

        assert await workers_ready(), "ready workers are live and consume every partition"
    finally:
        await connection.close()
        await store.close()
    # nothing any replica logged is an error
    errors = [(r.service, line["message"]) for r in replicas for line in r.lines() if line["level"] == "error"]
    assert errors == []
