"""The exchange and partition queues of a cluster, declared (idempotently) by every process that uses them, one
process at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange

from custodes.store import Store
from custodes.store.locks import holding

EXCHANGE_TYPE = "x-consistent-hash"
"""Routes each message by the hash of its routing key (the entity) to one bound queue (plugin
rabbitmq_consistent_hash_exchange)."""
QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum", "x-single-active-consumer": True}
"""Partition queues are replicated by Raft (quorum) and delivered to one consumer at a time; another consumer of the
queue takes over when it goes."""


def queue_name(exchange: str, partition: int) -> str:
    """The partition queue's name, which also names its state in the store."""
    return f"{exchange}.{partition}"


async def declare(channel: AbstractChannel, exchange: str, partitions: int) -> AbstractExchange:
    """Declare the exchange and its `partitions` queues, each bound with weight 1 (an equal share of entities)."""
    declared = await channel.declare_exchange(exchange, type=EXCHANGE_TYPE, durable=True)
    for partition in range(partitions):
        queue = await channel.declare_queue(queue_name(exchange, partition), durable=True, arguments=QUEUE_ARGUMENTS)
        await queue.bind(declared, routing_key="1")
    return declared


@asynccontextmanager
async def declaring(store: Store, exchange: str) -> AsyncIterator[None]:
    """The cluster's declaration lock, held while a process declares the topology. RabbitMQ answers the first
    declaration of a quorum queue once its replica runs, but answers another connection's declaration made meanwhile
    at once, and a consumer of the queue before it runs closes the connection (INTERNAL_ERROR); so replicas starting
    together declare one after the other, and each finds the queues running when its declaration returns."""
    async with holding(store, "topology", exchange):
        yield
