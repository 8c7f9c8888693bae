"""Consuming partition queues: one channel per partition, messages handled in batches, acknowledged after the
handler returns (it commits what they produced), returned to the queue when it fails or the partition is given up.

Every worker subscribes to every partition; the queue's single active consumer is the first subscribed still
there, the others wait to take over. `resubscribe` moves this worker to the back of a partition's line (the
assignment hands partitions over that way)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from custodes.bus.topology import QUEUE_ARGUMENTS, queue_name

log = logging.getLogger(__name__)

Handler = Callable[[int, Sequence[AbstractIncomingMessage]], Awaitable[None]]
"""Commits what a batch of one partition's messages produced; raising leaves them unacknowledged."""
RETRY_SECONDS = 1.0
SUBSCRIBE_SECONDS = 30.0
"""How long a subscription the broker refuses is tried again before it is an error: a connection the broker closed
takes the robust connection a few seconds to reopen. (A queue not yet running would refuse too, but the roles declare
the topology one at a time before they consume: `topology.declaring`.)"""


@dataclass(slots=True)
class _Partition:
    number: int
    channel: AbstractChannel | None = None
    buffer: list[AbstractIncomingMessage] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


class PartitionConsumer:
    """Consumes an exchange's partition queues into a handler, a batch of at most `batch` messages at a time."""

    def __init__(
        self, connection: AbstractRobustConnection, exchange: str, partitions: int, handle: Handler, batch: int
    ) -> None:
        self.connection = connection
        self.exchange = exchange
        self.handle = handle
        self.batch = batch
        self.partitions = [_Partition(number) for number in range(partitions)]

    async def subscribe(self, order: Sequence[int]) -> None:
        """Subscribe to the partitions in this order (the first ones are offered to this worker first)."""
        for number in order:
            partition = self.partitions[number]
            await self._subscribe(partition)
            partition.task = asyncio.get_running_loop().create_task(self._work(partition))

    async def resubscribe(self, number: int) -> None:
        """Give the partition up (after the batch under way) and queue up again as a standby consumer."""
        partition = self.partitions[number]
        async with partition.lock:
            await self._release(partition)
            await self._subscribe(partition)

    def unsubscribed(self) -> list[int]:
        """The partitions without an open channel consuming them (none once subscribed, unless the broker closed
        one)."""
        return [p.number for p in self.partitions if p.channel is None or p.channel.is_closed]

    async def close(self) -> None:
        """Stop consuming; messages not acknowledged go back to their queues."""
        for partition in self.partitions:
            if partition.task is not None:
                partition.task.cancel()
        await asyncio.gather(*(p.task for p in self.partitions if p.task is not None), return_exceptions=True)
        for partition in self.partitions:
            await self._release(partition)

    async def _subscribe(self, partition: _Partition) -> None:
        """Consume the partition, trying again for `SUBSCRIBE_SECONDS` (backing off) while the broker refuses."""
        deadline = time.monotonic() + SUBSCRIBE_SECONDS
        delay = RETRY_SECONDS / 4
        while True:
            try:
                await self._consume(partition)
                return
            except CONNECTION_EXCEPTIONS as exc:
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    await self._release(partition)
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "partition %d: the broker refused the subscription (%s: %s); trying again in %.2f s",
                    partition.number,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4 * RETRY_SECONDS)

    async def _consume(self, partition: _Partition) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.batch * 2)
        queue = await channel.declare_queue(
            queue_name(self.exchange, partition.number), durable=True, arguments=QUEUE_ARGUMENTS
        )

        async def deliver(message: AbstractIncomingMessage) -> None:
            if partition.channel is channel:
                partition.buffer.append(message)
                partition.wake.set()

        partition.channel = channel
        await queue.consume(deliver)

    async def _release(self, partition: _Partition) -> None:
        """Close the partition's channel: its unacknowledged messages return to the queue, in order."""
        channel, partition.channel = partition.channel, None
        partition.buffer.clear()
        if channel is not None and not channel.is_closed:
            await channel.close()

    async def _work(self, partition: _Partition) -> None:
        while True:
            await partition.wake.wait()
            async with partition.lock:
                partition.wake.clear()
                taken = partition.buffer[: self.batch]
                del partition.buffer[: self.batch]
                if partition.buffer:
                    partition.wake.set()
                if not taken:
                    continue
                try:
                    await self.handle(partition.number, taken)
                    await taken[-1].ack(multiple=True)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "partition %d: a batch of %d failed; it goes back to the queue", partition.number, len(taken)
                    )
                    await self._release(partition)
                    await asyncio.sleep(RETRY_SECONDS)
                    await self._subscribe(partition)
                    continue
