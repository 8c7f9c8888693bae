"""Running the HTTP service: a context manager for embedding (demo, tests) and `serve_forever` for the CLI, which
also runs the configured connectors, the hunt and playbook schedules and the inventory review."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from custodes import logs
from custodes.config import Role, Settings, missing_paths
from custodes.connectors.runtime import ConnectorRuntime
from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.errors import ConfigError, Location, Problem
from custodes.hunts.definition import cron_trigger, load_hunts
from custodes.hunts.runner import HuntRunner
from custodes.hunts.scheduler import CronScheduler, Scheduled, hunt_jobs
from custodes.inventory.schedule import review_loop
from custodes.playbooks.loader import LoadedPlaybook, unconfigured_receivers
from custodes.playbooks.runner import EngineError, Runner
from custodes.server.app import create_app
from custodes.server.health import listening_on
from custodes.services import Services

log = logging.getLogger(__name__)
RETENTION_INTERVAL_SECONDS = 3600


@asynccontextmanager
async def serving(
    services: Services, host: str, port: int, supervisor: ConnectorSupervisor | None = None
) -> AsyncIterator[str]:
    """Serve the application on host:port (0 picks a free port); yields the base URL."""
    async with listening_on(create_app(services, supervisor), host, port) as url:
        yield url


async def serve_forever(settings: Settings, role: Role = Role.ALL) -> None:
    """Open the services and serve until SIGINT or SIGTERM: everything (`all`), or one role of a cluster."""
    if role is not Role.ALL:
        check_cluster(settings, role)
    missing = missing_paths(settings, hunts=settings.hunts.schedule)
    if missing is not None:
        raise missing
    logs.configure()  # once the settings are known good: a refused start prints its one line and installs nothing
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Services.open(settings) as services:
        check_receivers(services)
        settle_garbage_collector()
        if role is Role.ALL:
            await _serve(services, stop)
        else:
            from custodes.server.roles import serve_role

            await serve_role(services, role, stop)
    log.info("stopped")


def settle_garbage_collector() -> None:
    """Keep full garbage collections off the request path once everything is loaded.

    Rules, pipelines, playbooks and libraries are hundreds of thousands of objects that live as long as the
    process; frozen, collections no longer walk them. Full collections then run after 100 young-generation ones
    rather than 10: measured on the webhook benchmark, each stalled the event loop 20-200 ms and set the p99.
    Young collections run after 10,000 net allocations rather than 700 (requests free nearly all they allocate,
    by reference counting): on the same benchmark, 8 collections taking 20 ms in 10 s instead of 800 taking 380 ms.
    """
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(10_000, middle, 100)


def check_cluster(settings: Settings, role: Role) -> None:
    """Fail start-up (a config error naming the setting) when a cluster role lacks RabbitMQ or PostgreSQL."""
    problems = []
    if settings.cluster.amqp_url is None:
        problems.append(
            Problem(Location("configuration", field="cluster.amqp_url"), f"the {role.value} role needs RabbitMQ")
        )
    if not settings.database.url.startswith("postgresql"):
        problems.append(
            Problem(
                Location("configuration", field="database.url"),
                f"the {role.value} role needs PostgreSQL (processes of a cluster share one store)",
            )
        )
    if problems:
        raise ConfigError(
            problems, hint="set cluster.amqp_url (e.g. env:CUSTODES_AMQP_URL) and a postgresql+asyncpg database.url"
        )


def check_receivers(services: Services) -> None:
    """Fail start-up (a located config error) when an enabled playbook's webhook trigger names a receiver that
    is not configured under `webhooks:`."""
    problems = unconfigured_receivers(services.playbooks, services.settings.webhooks)
    if problems:
        raise ConfigError(problems, hint="configure the receiver under `webhooks:` or fix the playbook's trigger")


async def _serve(services: Services, stop: asyncio.Event) -> None:
    settings = services.settings
    supervisor = ConnectorSupervisor.from_settings(settings, ConnectorRuntime(services.pipeline), services.http)
    async with serving(services, settings.server.host, settings.server.port, supervisor) as url:
        log.info(f"serving on {url}", extra={"rules": len(services.rules.rules), "playbooks": len(services.playbooks)})
        retention = asyncio.create_task(_retention_loop(services))
        reaper = asyncio.create_task(_reaper_loop(services))
        reviews = asyncio.create_task(review_loop(services, stop))
        scheduler = start_schedules(services)
        supervisor.start_all()
        await stop.wait()
        await supervisor.close()
        if scheduler is not None:
            await scheduler.stop()
        # wait for the loops to unwind, so that no transaction is left open when the store closes
        for task in (retention, reaper, reviews):
            task.cancel()
        await asyncio.gather(retention, reaper, reviews, return_exceptions=True)


def start_schedules(services: Services) -> CronScheduler | None:
    """Schedule the hunts under `hunts.paths` (unless `hunts.schedule` is off) and the enabled playbooks with a
    schedule trigger, in one scheduler; None when nothing is scheduled."""
    settings = services.settings
    jobs: list[Scheduled] = []
    if settings.hunts.schedule:
        loaded = load_hunts(settings.hunts.paths, settings)
        jobs += hunt_jobs(HuntRunner(settings, services.pipeline, loaded))
    jobs += playbook_jobs(services.runner, services.playbooks)
    if not jobs:
        return None
    scheduler = CronScheduler(jobs, settings.hunts, settings.database)
    scheduler.start()
    log.info("schedules started", extra={"jobs": [job.job_id for job in jobs]})
    return scheduler


def playbook_jobs(runner: Runner, playbooks: list[LoadedPlaybook]) -> list[Scheduled]:
    """A job per enabled playbook with a schedule trigger: each slot starts one run (the slot's claim)."""

    def job(loaded: LoadedPlaybook) -> Callable[[datetime], Awaitable[None]]:
        async def run(slot: datetime) -> None:
            try:
                started = await runner.start_scheduled(loaded, slot)
            except EngineError as exc:
                log.warning("%s", exc)
                return
            name = loaded.playbook.name
            if started is None:
                log.info("playbook %s: slot %s already run by another worker", name, slot.isoformat())
            else:
                log.info("playbook %s: slot %s run %s %s", name, slot.isoformat(), started.id, started.status.value)

        return run

    jobs = []
    for loaded in playbooks:
        schedule = loaded.playbook.trigger.schedule
        if loaded.playbook.enabled and schedule is not None:
            cron = cron_trigger(schedule.cron, schedule.timezone)
            jobs.append(Scheduled("playbook", loaded.playbook.name, cron, job(loaded)))
    return jobs


async def _retention_loop(services: Services) -> None:
    """Apply the event retention period now and every hour."""
    while True:
        purged = await services.store.apply_retention()
        if purged:
            log.info(
                "retention: deleted %d events older than %s days",
                purged,
                services.settings.database.event_retention_days,
            )
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)


async def _reaper_loop(services: Services) -> None:
    """Start the playbook runs the outbox holds (a crash's leftovers first), resume or fail playbook runs whose
    worker stopped, apply expired approvals, start queued runs."""
    while True:
        await reap_once(services)
        await asyncio.sleep(services.settings.playbooks.stale_after_seconds / 2)


async def reap_once(services: Services, *, reap: bool = True) -> tuple[int, int]:
    """Start what the outbox owes, then (with `reap`) resume or fail stalled runs; failures are logged. (Runs
    started, runs resumed or failed.)"""
    try:
        started = await services.pipeline.drain()
        if started:
            log.info("outbox: %d playbook run(s) started", len(started))
        touched = await services.runner.reap() if reap else []
    except Exception:
        log.exception("the playbook reaper failed; trying again later")
        return 0, 0
    if touched:
        log.info("reaper: %d playbook run(s) resumed or failed", len(touched))
    return len(started), len(touched)
