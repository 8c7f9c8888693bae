"""The roles of a cluster (`custodes serve --role receiver|worker|runner`), each one part of what `--role all` runs.

- receiver: the HTTP service (webhooks, API) and, in the one receiver holding their lease (`ConnectorLease`), the
  pull connectors; events go to the bus (`PublishingPipeline`).
- worker: consumes partitions (`DetectionWorker`): stores events, detects, correlates, owes playbook starts.
- runner: starts what the outbox owes (claimed with SKIP LOCKED), reaps stalled runs, runs the hunt and playbook
  schedules (one run per slot), re-scores behaviour when the store changed (one runner at a time), applies
  retention.

Workers and runners serve /healthz, /readyz and /metrics on `server.host`:`server.port` (`custodes.server.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from custodes.bus.lease import ConnectorLease
from custodes.bus.publisher import Publisher
from custodes.bus.receiving import PublishingPipeline
from custodes.bus.scoring import rescore
from custodes.bus.topology import declaring
from custodes.bus.worker import DetectionWorker
from custodes.config import Role
from custodes.connectors.runtime import ConnectorRuntime
from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.server.health import Readiness, health_serving, store_unready
from custodes.server.metrics import DirectoryCollector, Metrics, RunnerMetrics, WorkerMetrics
from custodes.services import Services

log = logging.getLogger(__name__)
DRAIN_SECONDS = 1.0
"""How often a runner looks for owed playbook starts."""
SCORE_SECONDS = 3.0
"""How often a runner re-scores behaviour when the store changed."""


async def serve_role(services: Services, role: Role, stop: asyncio.Event) -> None:
    """Run one role of a cluster until `stop` is set."""
    cluster = services.settings.cluster
    assert cluster.amqp_url is not None  # checked at start-up (check_cluster)
    if role is Role.RECEIVER:
        async with declaring(services.store, cluster.exchange):
            publisher = await Publisher.open(cluster.amqp_url.reveal(), cluster.exchange, cluster.partitions)
        try:
            services.pipeline = PublishingPipeline(services.pipeline, publisher)
            await _receive(services, stop)
        finally:
            await publisher.close()
    elif role is Role.WORKER:
        metrics = Metrics()
        worker = DetectionWorker(services, cluster, WorkerMetrics(metrics.registry))
        async with _probes(services, metrics, worker.unready):
            await worker.run(stop)
    else:
        metrics = Metrics()
        metrics.registry.register(DirectoryCollector(services))  # the runner re-scores with it

        async def unready() -> str | None:
            return await store_unready(services.store)

        async with _probes(services, metrics, unready):
            await _run(services, RunnerMetrics(metrics.registry, metrics.starts_held), stop)


@asynccontextmanager
async def _probes(services: Services, metrics: Metrics, ready: Readiness) -> AsyncIterator[None]:
    async with health_serving(services.settings.server, metrics, ready) as url:
        log.info(f"probes and metrics on {url}")
        yield


async def _receive(services: Services, stop: asyncio.Event) -> None:
    from custodes.server.serve import serving

    settings = services.settings
    supervisor = ConnectorSupervisor.from_settings(settings, ConnectorRuntime(services.pipeline), services.http)
    async with serving(services, settings.server.host, settings.server.port, supervisor) as url:
        log.info(f"receiver serving on {url}")
        await ConnectorLease(services.store, supervisor, settings.cluster.exchange).run(stop)
        await supervisor.close()


async def _run(services: Services, metrics: RunnerMetrics, stop: asyncio.Event) -> None:
    from custodes.server.serve import RETENTION_INTERVAL_SECONDS, reap_once, start_schedules

    scheduler = start_schedules(services)
    log.info("runner started")
    reap_every = services.settings.playbooks.stale_after_seconds / 2
    loop = asyncio.get_running_loop()
    last_reap = last_retention = last_score = float("-inf")
    scored: tuple[Any, ...] | None = None
    while not stop.is_set():
        now = loop.time()
        if now - last_score >= SCORE_SECONDS:
            last_score = now
            try:
                scored, found = await rescore(services.pipeline, scored)
            except Exception:
                log.exception("re-scoring failed; trying again later")
            else:
                if found:
                    log.info("scoring: %d finding(s) raised", len(found))
        if now - last_retention >= RETENTION_INTERVAL_SECONDS:
            last_retention = now
            await services.store.apply_retention()
        claimed = services.pipeline.claimed_starts
        started, reaped = await reap_once(services, reap=now - last_reap >= reap_every)
        metrics.claimed.inc(services.pipeline.claimed_starts - claimed)
        metrics.started.inc(started)
        metrics.reaped.inc(reaped)
        for playbook, count in services.pipeline.start_cap.held.items():
            metrics.held.labels(playbook).set(count)
        if now - last_reap >= reap_every:
            last_reap = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DRAIN_SECONDS)
    if scheduler is not None:
        await scheduler.stop()
