"""Partition queues declared by processes that start together: how many of their connections RabbitMQ closes, with
and without the cluster's declaration lock (`custodes.bus.topology.declaring`).

    .venv/bin/python bench/cluster_declare.py                 # 40 rounds of 8 connections, 4 partitions
    .venv/bin/python bench/cluster_declare.py --load 3        # with 3 busy processes competing for the cores

Each round takes a new exchange, and each of its connections subscribes to every partition queue as a worker's
consumer does: declare the queue, then consume it at once. Without the lock, that is all (how workers started before
the lock); with it, each connection first declares the whole topology holding the lock, as receivers and workers now
do. A quorum queue that another connection is still creating answers its declaration at once, and a consumer of it
before its replica runs crashes the broker's channel: the connection closes with INTERNAL_ERROR. How often depends on
the timing (the machine, its load); with the lock, never. Needs RabbitMQ (`CUSTODES_TEST_AMQP_URL`, default guest on
localhost, with the consistent-hash plugin) and PostgreSQL for the lock (`CUSTODES_TEST_POSTGRES_URL`, default
postgres on localhost, database test; a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from custodes.bus.topology import QUEUE_ARGUMENTS, declare, declaring, queue_name
from custodes.config import DatabaseSettings
from custodes.store import Store
from custodes.store.database import drop_schema

AMQP_URL = os.environ.get("CUSTODES_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get("CUSTODES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def ignore(message: AbstractIncomingMessage) -> None:
    """A consumer's callback (nothing is published)."""


async def subscriber(store: Store | None, exchange: str, partitions: int) -> bool:
    """One connection subscribing to every partition (declaring the topology first under the lock when `store` is
    given); whether the broker closed it."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        if store is not None:
            async with declaring(store, exchange), await connection.channel() as channel:
                await declare(channel, exchange, partitions)
        for partition in range(partitions):
            channel = await connection.channel()
            queue = await channel.declare_queue(
                queue_name(exchange, partition), durable=True, arguments=QUEUE_ARGUMENTS
            )
            await queue.consume(ignore)
    except aio_pika.exceptions.AMQPError:
        return True
    finally:
        await connection.close()
    return False


async def closed(store: Store | None, args: argparse.Namespace) -> int:
    """Connections the broker closed over every round."""
    count = 0
    admin = await aio_pika.connect(AMQP_URL)
    try:
        channel = await admin.channel()
        for _ in range(args.rounds):
            exchange = f"custodes.bench.{uuid.uuid4().hex[:10]}"
            results = await asyncio.gather(
                *(subscriber(store, exchange, args.partitions) for _ in range(args.connections))
            )
            count += sum(results)
            for partition in range(args.partitions):
                await channel.queue_delete(queue_name(exchange, partition))
            await channel.exchange_delete(exchange)
    finally:
        await admin.close()
    return count


async def run(args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = await Store.open(DatabaseSettings(url=POSTGRES_URL, schema_name=schema))
    try:
        total = args.rounds * args.connections
        print(f"{args.rounds} rounds of {args.connections} connections, {args.partitions} partitions, {args.load} busy")
        print(f"without the lock: {await closed(None, args)} of {total} connections closed by the broker")
        print(f"with the lock:    {await closed(store, args)} of {total} connections closed by the broker")
    finally:
        await store.close()
        await drop_schema(POSTGRES_URL, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--load", type=int, default=0, help="busy processes competing for the cores")
    args = parser.parse_args()
    for name in ("aiormq", "aio_pika"):  # each closed connection is counted, not logged
        logging.getLogger(name).setLevel(logging.CRITICAL)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        asyncio.run(run(args))
    finally:
        for process in busy:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
