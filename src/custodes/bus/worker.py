"""A detection worker: consumes the partitions it is the active consumer of, runs detection and correlation on
their events with each partition's own state, commits, then acknowledges; takes its share of the partitions as
workers come and go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from custodes.bus.assignment import owner, preferred
from custodes.bus.consumer import PartitionConsumer
from custodes.bus.partition import PartitionCorrelator
from custodes.bus.topology import declare, declaring, queue_name
from custodes.bus.wire import BadMessage, Envelope, decode
from custodes.config import ClusterSettings
from custodes.pipeline import Pipeline
from custodes.server.health import store_unready
from custodes.server.metrics import WorkerMetrics
from custodes.services import Services
from custodes.store.cluster import heartbeat, leave, live_workers

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 1.0
DEAD_AFTER = timedelta(seconds=5)
"""A worker not seen for this long is left out of the assignment (RabbitMQ moves its partitions at once anyway)."""
BATCH = 500


class DetectionWorker:
    """The partitions this process works on, each with its pipeline."""

    def __init__(self, services: Services, settings: ClusterSettings, metrics: WorkerMetrics) -> None:
        self.services = services
        self.settings = settings
        self.metrics = metrics
        self.connection: AbstractRobustConnection | None = None
        self.consumer: PartitionConsumer | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pipelines: dict[int, Pipeline] = {}

    def pipeline(self, partition: int) -> Pipeline:
        """The partition's pipeline: the process's rules and playbooks, the partition's correlation state."""
        found = self.pipelines.get(partition)
        if found is None:
            base = self.services.pipeline
            found = Pipeline(
                base.store,
                base.engine,
                base.playbooks,
                base.runner,
                dedup_window=base.dedup_window,
                correlator=PartitionCorrelator(
                    queue_name(self.settings.exchange, partition), base.correlator, self.name
                ),
                window=base.window,
                claim_lease=base.claim_lease,
            )
            found.disabled_rules, found.disabled_playbooks = base.disabled_rules, base.disabled_playbooks
            self.pipelines[partition] = found
        return found

    async def handle(self, partition: int, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Store and detect on a batch of the partition's events, with the state and deliveries it covers."""
        started = time.perf_counter()
        envelopes: list[Envelope] = []
        for message in messages:
            try:
                envelopes.append(decode(message.body))
            except BadMessage as exc:
                log.warning("partition %d: message %s dropped: %s", partition, message.message_id, exc)
        pipeline = self.pipeline(partition)
        correlator = pipeline.correlator
        assert isinstance(correlator, PartitionCorrelator)
        correlator.covering = (len(messages), messages[-1].message_id)
        hooked: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            if envelope.receiver is not None:
                hooked.setdefault(envelope.receiver, []).append(envelope)
        await pipeline.ingest(
            [envelope.event for envelope in envelopes],
            alerts=[envelope.alert for envelope in envelopes if envelope.alert is not None],
            webhooks=[(receiver, [e.event for e in items]) for receiver, items in hooked.items()],
            run_playbooks=False,
            score=False,
        )
        label = str(partition)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.committed.labels(label).inc(len(messages))
        redelivered = sum(1 for message in messages if message.redelivered)
        if redelivered:
            self.metrics.redelivered.labels(label).inc(redelivered)

    async def unready(self) -> str | None:
        """Why this worker is not ready (not connected to RabbitMQ, not subscribed to every partition, the store
        not answering), or None."""
        if self.connection is None or self.connection.is_closed or self.consumer is None:
            return "not connected to RabbitMQ"
        missing = self.consumer.unsubscribed()
        if missing:
            return f"not subscribed to partition(s) {', '.join(map(str, missing))}"
        return await store_unready(self.services.store)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, handing partitions over as workers join and leave."""
        assert self.settings.amqp_url is not None
        connection = self.connection = await aio_pika.connect_robust(self.settings.amqp_url.reveal())
        partitions = self.settings.partitions
        consumer = PartitionConsumer(connection, self.settings.exchange, partitions, self.handle, BATCH)
        try:
            async with declaring(self.services.store, self.settings.exchange), await connection.channel() as channel:
                await declare(channel, self.settings.exchange, partitions)
            workers = sorted({self.name, *await self._live()})
            await consumer.subscribe(preferred(self.name, workers, partitions))
            self.consumer = consumer
            self._owned(workers)
            log.info("worker %s: subscribed to %d partitions", self.name, partitions)
            while not stop.is_set():
                now = sorted({self.name, *await self._live()})
                if now != workers:
                    workers = now
                    given_up = [p for p in range(partitions) if owner(p, workers) != self.name]
                    for partition in given_up:
                        await consumer.resubscribe(partition)
                    self._owned(workers)
                    log.info("worker %s: %d workers, %d partitions to others", self.name, len(workers), len(given_up))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
        finally:
            await consumer.close()
            async with self.services.store.transaction() as tx:
                await leave(tx, self.settings.exchange, self.name)
            await connection.close()

    def _owned(self, workers: Sequence[str]) -> None:
        partitions = range(self.settings.partitions)
        self.metrics.owned.set(sum(1 for p in partitions if owner(p, workers) == self.name))

    async def _live(self) -> list[str]:
        async with self.services.store.transaction() as tx:
            await heartbeat(tx, self.settings.exchange, self.name)
            return await live_workers(tx, self.settings.exchange, DEAD_AFTER)
