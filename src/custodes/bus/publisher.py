"""Publishing events to the partitions, each confirmed by its quorum queue before `publish` returns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange
from pamqp.commands import Basic

from custodes.bus.topology import declare
from custodes.bus.wire import Envelope, encode


class BusError(RuntimeError):
    """The broker did not take a message (refused, unroutable or unreachable)."""


class Publisher:
    """A connection and a confirming channel to the exchange."""

    def __init__(self, connection: AbstractConnection, exchange: AbstractExchange) -> None:
        self.connection = connection
        self.exchange = exchange

    @classmethod
    async def open(cls, url: str, exchange: str, partitions: int) -> Publisher:
        """Connect (reconnecting by itself after a broker restart) and declare the topology."""
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(connection, await declare(channel, exchange, partitions))

    async def publish(self, messages: Sequence[tuple[str, Envelope]]) -> None:
        """Publish (entity key, envelope) pairs, persistent, routed by the key; return once every one is confirmed
        by its queue, or raise BusError (some may then be in a queue: a retry is deduplicated by event id)."""
        results = await asyncio.gather(
            *(
                self.exchange.publish(
                    aio_pika.Message(
                        encode(envelope),
                        message_id=envelope.event.id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=key,
                    mandatory=True,
                )
                for key, envelope in messages
            ),
            return_exceptions=True,
        )
        refused = [result for result in results if not isinstance(result, Basic.Ack)]
        if refused:
            raise BusError(f"{len(refused)} of {len(results)} events not confirmed by the broker: {refused[0]!r}")

    async def close(self) -> None:
        """Close the connection."""
        await self.connection.close()
