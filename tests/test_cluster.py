"""A cluster of real processes on real RabbitMQ and PostgreSQL gives what one process gives.

2 receivers, 3 detection workers and 2 runners (`custodes serve --role ...`) take a simulated organisation's
Microsoft 365 audit records, posted in batches alternating between the two receivers, among them 120 SharePoint
downloads by one person (the "Mass Download" correlation, which needs the events of both receivers in one
place). Half-way a worker is killed with SIGKILL while records still flow. The cluster must end with every event
stored once, the findings one process raises from the same events in the same order (no more, no fewer, same
counts), one playbook run per finding and one chat message per run, and the killed worker's partitions committed
by another worker."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time as clock
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from conftest import POSTGRES_URL, _drop_schema
from custodes.bus.topology import queue_name
from custodes.config import DatabaseSettings, load_settings
from custodes.connectors.envelope import to_event
from custodes.connectors.files import iter_records
from custodes.detections.scoring.simulate import SCENARIOS, SimulationSettings, simulate
from custodes.model import Event
from custodes.sandbox import chat
from custodes.sandbox.server import running
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.services import Services
from custodes.sources import SourceSettings
from custodes.store import Store
from custodes.store.tables import cluster_partitions, events, findings, outbox, runs, scoring_scores
from test_webhook_durability import ROOT, SECRET, free_port

pytestmark = pytest.mark.needs_postgres

AMQP_URL = os.environ.get("CUSTODES_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PARTITIONS = 6
PLAYBOOK = """\
name: tell-soc
trigger:
  findings: {min_severity: informational}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "finding {{ finding.id }} {{ finding.rule_id }}"}
"""
PSEUDONYM_KEY = "pseudonym-key-for-the-cluster-test"
MALLORY = "mallory@example.com"
SOURCES = {name: SourceSettings(format=name) for name in ("okta", "cloudtrail", "m365")}
MASS_DOWNLOAD = "95f156eb-cb65-4bd7-b1dd-89a348252378"


def organisation(out: Path) -> list[tuple[str, dict[str, Any]]]:
    """(receiver, record) in time order: a simulated organisation's Okta and CloudTrail records over two weeks
    (`directory.json` beside them), and on day 10 120 SharePoint downloads by mallory 30 s apart (one hour)."""
    settings = SimulationSettings(population=20, days=14, seed=5, warmup_days=4, scenarios=SCENARIOS[:1], insiders=1)
    simulate(settings, out)
    records = [
        (name, record) for name in ("okta", "cloudtrail") for _, record, _ in iter_records(out / f"{name}.ndjson")
    ]
    start = datetime.combine(settings.start + timedelta(days=10), time(22), UTC)
    records += [("m365", _record(MALLORY, "FileDownloaded", start + timedelta(seconds=30 * n))) for n in range(120)]
    return sorted(records, key=lambda item: to_event(item[1], SOURCES[item[0]], item[0]).time)


def _record(who: str, operation: str, when: datetime) -> dict[str, Any]:
    return {
        "Id": str(uuid.uuid4()),
        "CreationTime": when.strftime("%Y-%m-%dT%H:%M:%S"),
        "Workload": "SharePoint",
        "Operation": operation,
        "UserId": who,
        "ObjectId": f"https://corp.sharepoint.com/sites/finance/{uuid.uuid4().hex[:8]}.xlsx",
        "ClientIP": "203.0.113.9",
        "ResultStatus": "Succeeded",
    }


@asynccontextmanager
async def fresh_exchange(prefix: str, partitions: int) -> AsyncIterator[str]:
    """A fresh exchange name, the consistent-hash plugin enabled; its partition queues and itself deleted afterwards."""
    plugins = shutil.which("rabbitmq-plugins")
    assert plugins is not None, "RabbitMQ is not installed"
    enabling = await asyncio.create_subprocess_exec(
        plugins, "enable", "--quiet", "rabbitmq_consistent_hash_exchange", stdout=subprocess.DEVNULL
    )
    assert await enabling.wait() == 0
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for partition in range(partitions):
            await channel.queue_delete(queue_name(name, partition))
        await channel.exchange_delete(name)


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """A fresh exchange of PARTITIONS partition queues."""
    async with fresh_exchange("custodes.test", PARTITIONS) as name:
        yield name


def configuration(path: Path, database: DatabaseSettings, exchange: str, chat_url: str) -> Path:
    """A configuration for the cluster (or, without its cluster section being used, for one process)."""
    (path / "playbooks").mkdir()
    (path / "playbooks" / "tell.yml").write_text(PLAYBOOK)
    config = path / "custodes.yaml"
    config.write_text(
        f"database: {{url: '{database.url}', schema_name: {database.schema_name}}}\n"
        f"playbooks: {{paths: ['{path / 'playbooks'}']}}\n"
        "sources: {m365: {format: m365}}\n"
        "webhooks:\n"
        + "".join(
            f"  {source}: {{kind: generic, source: {source}, auth: {{scheme: hmac, secret: 'env:FLOOD_SECRET'}}}}\n"
            for source in SOURCES
        )
        + f"responder: {{channels: {{soc: {{url: 'env:SOC_HOOK'}}}}}}\n"
        f"scoring: {{pseudonym_key: 'env:PSEUDONYM_KEY', directory: '{path / 'org' / 'directory.json'}'}}\n"
        "hunts: {schedule: false}\n"
        f"cluster: {{amqp_url: 'env:CUSTODES_AMQP_URL', partitions: {PARTITIONS}, exchange: '{exchange}'}}\n"
    )
    os.environ.setdefault("FLOOD_SECRET", SECRET)
    return config


class Cluster:
    """The processes of a cluster, started from one configuration."""

    def __init__(self, config: Path, chat_url: str, log: Path) -> None:
        self.config = config
        self.log = log
        self.env = {
            **os.environ,
            "FLOOD_SECRET": SECRET,
            "CUSTODES_AMQP_URL": AMQP_URL,
            "SOC_HOOK": f"{chat_url}/hooks/soc",
            "PSEUDONYM_KEY": PSEUDONYM_KEY,
        }
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.receivers: list[str] = []

    async def start(self, role: str, name: str) -> None:
        port = free_port()
        with self.log.open("a") as out:
            self.processes[name] = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "custodes", "serve", "--role", role, "--config", str(self.config)),
                *("--port", str(port)),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        if role == "receiver":
            self.receivers.append(f"http://127.0.0.1:{port}")

    async def ready(self, http: aiohttp.ClientSession) -> None:
        for url in self.receivers:
            for _ in range(600):
                try:
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"receiver {url} did not start; see {self.log}")

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def post(http: aiohttp.ClientSession, urls: Sequence[str], records: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Post the records in time order, in batches of up to 10 of one receiver, alternating between the cluster's
    receivers; each batch must be accepted (202)."""
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    for receiver, record in records:
        if not batches or batches[-1][0] != receiver or len(batches[-1][1]) == 10:
            batches.append((receiver, []))
        batches[-1][1].append(record)
    for index, (receiver, batch) in enumerate(batches):
        body = orjson.dumps(batch)
        stamp = str(int(clock.time()))
        signature = sign(SECRET, stamp, body)
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature}
        async with http.post(f"{urls[index % len(urls)]}/webhooks/{receiver}", data=body, headers=headers) as response:
            assert response.status == 202, await response.text()


async def count(store: Store, table: sa.Table) -> int:
    async with store.transaction() as tx:
        return int((await tx.conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


def summary(rows: Sequence[Any]) -> Counter[tuple[str, str | None, int, tuple[str, ...]]]:
    """Findings as what they say: rule, entity, count and events (ids differ with nothing)."""
    return Counter((row.rule_id, row.entity, row.count, tuple(sorted(row.event_ids))) for row in rows)


Scores = dict[tuple[str, str], float]


async def scores(store: Store) -> Scores:
    """Every entity's day scores, to 6 places."""
    async with store.transaction() as tx:
        rows = await tx.conn.execute(sa.select(scoring_scores.c.entity, scoring_scores.c.day, scoring_scores.c.risk))
        return {(row.entity, row.day.isoformat()): round(row.risk, 6) for row in rows}


async def raised_by(store: Store) -> list[Any]:
    async with store.transaction() as tx:
        return list(await tx.conn.execute(sa.select(findings)))


async def one_process(config: Path, tmp_path: Path, stored: Sequence[Event]) -> tuple[Counter[Any], Scores]:
    """The findings and scores `--role all` gives for the same events, in the same batches and order, settled
    (re-scored in event-time order, as a replay does), on SQLite."""
    environ = {**os.environ, "SOC_HOOK": "env:none", "CUSTODES_AMQP_URL": AMQP_URL, "PSEUDONYM_KEY": PSEUDONYM_KEY}
    settings = load_settings(config, environ)
    settings.database = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    async with await Services.open(settings) as services:
        services.pipeline.playbooks = []
        for index in range(0, len(stored), 10):
            await services.pipeline.ingest(stored[index : index + 10], score=False)
        await services.pipeline.settle(run_playbooks=False)
        return summary(await raised_by(services.store)), await scores(services.store)


@pytest.fixture
async def postgres() -> AsyncIterator[DatabaseSettings]:
    """A fresh PostgreSQL schema (a cluster shares a PostgreSQL store), dropped afterwards."""
    assert POSTGRES_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield DatabaseSettings(url=POSTGRES_URL, schema_name=schema)
    finally:
        await _drop_schema(schema)


async def test_a_cluster_raises_what_one_process_raises_through_a_killed_worker(
    postgres: DatabaseSettings, exchange: str, tmp_path: Path
) -> None:
    database = postgres
    state = chat.ChatState()
    records = organisation(tmp_path / "org")
    async with running(chat.create_app(state)) as chat_url, aiohttp.ClientSession() as http:
        config = configuration(tmp_path, database, exchange, chat_url)
        cluster = Cluster(config, chat_url, tmp_path / "cluster.log")
        store = await Store.open(database)  # migrates once, before the processes start
        try:
            for n in range(2):
                await cluster.start("receiver", f"receiver{n}")
            for n in range(3):
                await cluster.start("worker", f"worker{n}")
            for n in range(2):
                await cluster.start("runner", f"runner{n}")
            await cluster.ready(http)
            half = len(records) // 2
            await post(http, cluster.receivers, records[:half])
            victim = await busiest_worker(store)
            flowing = asyncio.create_task(post(http, cluster.receivers, records[half:]))
            os.kill(worker_pid(cluster, victim), signal.SIGKILL)
            await flowing
            await stored_once(store, len(records))
            async with store.transaction() as tx:
                ids = (await tx.conn.execute(sa.select(events.c.id).order_by(events.c.time, events.c.id))).scalars()
                stored = await tx.get_events(list(ids))
            reference, reference_scores = await one_process(config, tmp_path, stored)
            raised = await settled(store, reference, state)
            async with store.transaction() as tx:
                committers = set((await tx.conn.execute(sa.select(cluster_partitions.c.worker))).scalars())
                ran = list(await tx.conn.execute(sa.select(runs.c.finding_id, runs.c.status)))
            cluster_scores = await settled_scores(store, reference_scores)
        finally:
            await cluster.stop()
            await store.close()
        log = (tmp_path / "cluster.log").read_text()[-4000:]
        assert len(stored) == len(records), "every event stored, once"
        assert summary(raised) == reference, log
        assert sum(1 for item in reference if item[0] == MASS_DOWNLOAD) == 1, "one Mass Download finding"
        assert cluster_scores == reference_scores and reference_scores, "the same scores"
        assert Counter(finding_id for finding_id, _ in ran) == Counter(row.id for row in raised), "one run each"
        assert all(status == "succeeded" for _, status in ran), ran
        told = Counter(message.payload["text"].split()[1] for message in state.messages)
        assert told == Counter(row.id for row in raised), "one message per finding: no side effect twice"
        assert victim not in committers, "another worker committed the killed worker's partitions after it"


async def busiest_worker(store: Store) -> str:
    """The worker that committed the partition with the most deliveries (mallory's): the one to kill."""
    for _ in range(300):
        async with store.transaction() as tx:
            query = sa.select(cluster_partitions.c.worker).order_by(cluster_partitions.c.deliveries.desc()).limit(1)
            worker = (await tx.conn.execute(query)).scalar_one_or_none()
        if worker is not None:
            return str(worker)
        await asyncio.sleep(0.1)
    raise AssertionError("no worker committed anything")


def worker_pid(cluster: Cluster, name: str) -> int:
    """The process id of the worker named `name` (host:pid:nonce)."""
    pid = int(name.split(":")[1])
    assert pid in {process.pid for process in cluster.processes.values()}
    return pid


async def stored_once(store: Store, expected: int) -> None:
    """Wait until the workers stored every event."""
    for _ in range(600):
        if await count(store, events) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{await count(store, events)} of {expected} events stored")


async def settled_scores(store: Store, reference: Scores, seconds: float = 60.0) -> Scores:
    """The cluster's day scores once they are the reference's (the scoring runner re-scores after the last
    findings are in, so it may still be at work when they are), or as they are after `seconds`."""
    found = await scores(store)
    for _ in range(int(seconds / 0.2)):
        if found == reference:
            break
        await asyncio.sleep(0.2)
        found = await scores(store)
    return found


async def settled(store: Store, reference: Counter[Any], state: chat.ChatState) -> list[Any]:
    """Wait until the cluster's findings are the reference's (scoring comes last), the outbox is empty and every
    finding has had its run and its message; the findings."""
    raised: list[Any] = []
    for _ in range(600):
        raised = await raised_by(store)
        if summary(raised) == reference and await count(store, outbox) == 0:
            async with store.transaction() as tx:
                done = await tx.conn.execute(
                    sa.select(sa.func.count()).select_from(runs).where(runs.c.status == "succeeded")
                )
                if done.scalar_one() >= len(raised) and len(state.messages) >= len(raised):
                    await asyncio.sleep(1.0)  # anything still to come (a duplicate) would come now
                    return await raised_by(store)
        await asyncio.sleep(0.1)
    return raised
