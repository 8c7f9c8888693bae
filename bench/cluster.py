"""The cluster end to end: events/s from webhook to stored and detected with 1, 2 and 4 detection workers, beside
the one-process `all` role, in the same run; the bus's own cost per event; a paper estimate for 100k events/s.

Every configuration starts fresh (its own PostgreSQL schema and exchange), then N distinct signed Okta records are
posted in batches of `--batch` from `--concurrency` connections to the receiver(s), and the clock stops when the
last event is in the store (the one process answers once committed; a cluster's receivers answer once the broker
confirmed, the workers commit after). The CPU each kind of process, RabbitMQ and PostgreSQL used per event is read
from /proc, which is what the estimate scales.

    .venv/bin/python bench/cluster.py [--events 6000] [--workers 1,2,4] [--batch 100] [--concurrency 8]
        [--postgres URL] [--amqp URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import orjson
from sqlalchemy.engine import make_url

from custodes.bus.publisher import Publisher
from custodes.bus.topology import queue_name
from custodes.bus.wire import Envelope
from custodes.model import Event, LogSource, utcnow
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.store.database import drop_schema
from webhooks import SECRET, cpu_seconds, free_port, record

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 16
TARGET = 100_000


@dataclass(slots=True)
class Run:
    """One configuration's figures."""

    name: str
    rate: float
    cpu_us: dict[str, float]
    """CPU microseconds per event, by kind of process (receiver, worker, all, rabbitmq, postgresql)."""


def config(folder: Path, postgres: str, schema: str, exchange: str) -> Path:
    (folder / "playbooks").mkdir(parents=True)
    body = {
        "database": {"url": postgres, "schema_name": schema},
        "detection": {"rules": [str(ROOT / "detections" / "rules")]},
        "playbooks": {"paths": [str(folder / "playbooks")]},
        "scoring": {"pseudonym_key": "env:BENCH_PSEUDONYM_KEY"},
        "hunts": {"schedule": False},
        "webhooks": {
            "generic": {"kind": "generic", "source": "okta", "auth": {"scheme": "hmac", "secret": "env:BENCH_SECRET"}}
        },
        "cluster": {"amqp_url": "env:BENCH_AMQP_URL", "partitions": PARTITIONS, "exchange": exchange},
    }
    path = folder / "custodes.yaml"
    path.write_bytes(orjson.dumps(body))
    return path


def pids_of(name: str) -> list[int]:
    """Processes whose command name is `name` (RabbitMQ's beam.smp, PostgreSQL's postgres)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


async def count(postgres: str, schema: str, table: str) -> int:
    """Rows in one of the store's tables (0 before the store is created)."""
    url = make_url(postgres)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, database=url.database)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))  # noqa: S608 (names made here)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def post_all(url: str, events: int, batch: int, concurrency: int) -> None:
    """Post `events` distinct records in signed batches; every batch must be accepted."""
    left = list(range(0, events, batch))

    async def worker(http: aiohttp.ClientSession) -> None:
        while left:
            start = left.pop()
            body = b"[" + b",".join(record() for _ in range(min(batch, events - start))) + b"]"
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(SECRET, stamp, body),
            }
            while True:
                async with http.post(f"{url}/webhooks/generic", data=body, headers=headers) as response:
                    if response.status == 202:
                        break
                    if response.status != 429:
                        raise SystemExit(f"unexpected answer {response.status}: {(await response.text())[:300]}")
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))


async def measure(name: str, roles: Sequence[str], args: argparse.Namespace) -> Run:
    """Start the processes of `roles`, post the events to the first receiver, time until all are stored."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    exchange = f"custodes.bench.{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "BENCH_SECRET": SECRET,
        "BENCH_AMQP_URL": args.amqp,
        "BENCH_PSEUDONYM_KEY": "bench-pseudonym-key-0123",
    }
    processes: list[tuple[str, asyncio.subprocess.Process]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = config(Path(folder), args.postgres, schema, exchange)
        log = os.open(Path(folder) / "processes.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            port = free_port()
            for role in roles:
                command = ["-m", "custodes", "serve", "--config", str(path), "--role", role]
                command += ["--port", str(port) if role in ("all", "receiver") else "0"]
                process = await asyncio.create_subprocess_exec(
                    sys.executable, *command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                processes.append((role, process))
                if role in ("all", "receiver"):
                    await ready(f"http://127.0.0.1:{port}", process)
            while True:  # every worker subscribed and heartbeating
                if await count(args.postgres, schema, "cluster_workers") >= roles.count("worker"):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # the partitions handed over (heartbeats are 1 s apart)
            watched = {"rabbitmq": pids_of("beam.smp"), "postgresql": pids_of("postgres")}
            before = {role: cpu_of([p.pid for r, p in processes if r == role]) for role in set(roles)}
            before |= {kind: cpu_of(pids) for kind, pids in watched.items()}
            began = time.perf_counter()
            await post_all(f"http://127.0.0.1:{port}", args.events, args.batch, args.concurrency)
            while True:
                if await count(args.postgres, schema, "events") >= args.events:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
            after = {role: cpu_of([p.pid for r, p in processes if r == role]) for role in set(roles)}
            after |= {kind: cpu_of(pids) for kind, pids in watched.items()}
        finally:
            for _, process in processes:
                if process.returncode is None:
                    process.terminate()
            for _, process in processes:
                await asyncio.wait_for(process.wait(), 30)
            os.close(log)
            await drop_schema(args.postgres, schema)
            await delete_topology(args.amqp, exchange)
    cpu = {kind: (after[kind] - before[kind]) / args.events * 1e6 for kind in after}
    return Run(name, args.events / elapsed, cpu)


async def ready(url: str, process: asyncio.subprocess.Process) -> None:
    """Wait until the process answers /healthz."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if process.returncode is not None:
                raise SystemExit(f"custodes serve exited with {process.returncode}")
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("custodes serve did not start")


async def delete_topology(amqp: str, exchange: str) -> None:
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        for partition in range(PARTITIONS):
            await channel.queue_delete(queue_name(exchange, partition))
        await channel.exchange_delete(exchange)


async def bus_cost(args: argparse.Namespace) -> tuple[float, float, float]:
    """(client µs per event published and confirmed, client µs per event consumed and acknowledged, RabbitMQ CPU µs
    per event for both), on a fresh exchange, without Custodes' detection."""
    exchange = f"custodes.bench.{uuid.uuid4().hex[:10]}"
    events = [
        Envelope(
            Event(
                str(uuid.uuid4()),
                utcnow(),
                "okta",
                LogSource("okta", "okta"),
                orjson.loads(record()),
                f"user{n % 5000}",
            )
        )
        for n in range(args.events)
    ]
    broker = pids_of("beam.smp")
    broker_before = cpu_of(broker)
    publisher = await Publisher.open(args.amqp, exchange, PARTITIONS)
    try:
        began = time.process_time()
        for start in range(0, len(events), 500):
            await publisher.publish(
                [(envelope.event.actor or "", envelope) for envelope in events[start : start + 500]]
            )
        published = (time.process_time() - began) / len(events) * 1e6
        connection = await aio_pika.connect(args.amqp)
        async with connection:
            began = time.process_time()
            left = len(events)
            for partition in range(PARTITIONS):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=1000)
                queue = await channel.get_queue(queue_name(exchange, partition))
                count = queue.declaration_result.message_count or 0
                if count:
                    taken = 0
                    async with queue.iterator() as messages:
                        async for message in messages:
                            taken += 1
                            if taken == count:
                                await message.ack(multiple=True)
                                break
                await channel.close()
                left -= count
            consumed = (time.process_time() - began) / len(events) * 1e6
        assert left == 0, f"{left} events not consumed"
    finally:
        await publisher.close()
        await delete_topology(args.amqp, exchange)
    return published, consumed, (cpu_of(broker) - broker_before) / len(events) * 1e6


def estimate(runs: Sequence[Run], broker_us: float) -> list[str]:
    """Processes and brokers for TARGET events/s, from the CPU per event measured (one core per process)."""
    cluster = [run for run in runs if "worker" in run.cpu_us]
    worker_us = min(run.cpu_us["worker"] for run in cluster)
    receiver_us = min(run.cpu_us["receiver"] for run in cluster)
    rabbit_us = min(run.cpu_us["rabbitmq"] for run in cluster)
    postgres_us = min(run.cpu_us["postgresql"] for run in cluster)
    cores = {
        "detection workers": TARGET * worker_us / 1e6,
        "receivers": TARGET * receiver_us / 1e6,
        "RabbitMQ (leader work; x3 for quorum replicas)": TARGET * rabbit_us / 1e6 * 3,
        "PostgreSQL": TARGET * postgres_us / 1e6,
    }
    lines = [f"paper estimate for {TARGET:,} events/s (cores at this machine's speed, busy 100%; plan 70%):"]
    for kind, need in cores.items():
        lines.append(f"  {kind:<48} {need:7.1f} cores -> {max(1, round(need / 0.7))} at 70%")
    lines.append(f"  bus alone (publish + consume, client side, no detection): {broker_us:.0f} µs/event broker CPU")
    brokers = max(3, round(cores["RabbitMQ (leader work; x3 for quorum replicas)"] / 0.7 / 8 + 0.5))
    lines.append(
        f"  => about {max(1, round(cores['detection workers'] / 0.7))} worker processes, "
        f"{max(1, round(cores['receivers'] / 0.7))} receivers, a {brokers}-node RabbitMQ cluster of 8-core nodes, "
        f"and partitions >= workers (e.g. {max(PARTITIONS, 2 * round(cores['detection workers'] / 0.7))})"
    )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CUSTODES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    print(f"{args.events} events, batches of {args.batch}, {args.concurrency} connections, {os.cpu_count()} cores")
    published, consumed, broker_us = await bus_cost(args)
    print(
        f"bus per event: publish+confirm {published:.0f} µs client CPU, consume+ack {consumed:.0f} µs, "
        f"RabbitMQ {broker_us:.0f} µs CPU"
    )
    runs = [await measure("one process (--role all)", ["all"], args)]
    for workers in (int(n) for n in args.workers.split(",")):
        runs.append(await measure(f"1 receiver + {workers} worker(s)", ["receiver"] + ["worker"] * workers, args))
    print(f"{'configuration':<28} {'events/s':>9}   CPU µs/event by process kind")
    for run in runs:
        shares = ", ".join(f"{kind} {value:.0f}" for kind, value in sorted(run.cpu_us.items()))
        print(f"{run.name:<28} {run.rate:9.0f}   {shares}")
    for line in estimate(runs, broker_us):
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
