"""Hunt and playbook schedules: APScheduler 3 with its SQLAlchemy job store in the store's database.

APScheduler keeps each hunt's job (trigger and next run time) in the job store, so after a restart it knows
which slots were missed: with `hunts.catch_up: latest` it runs the latest missed slot once (coalesce, no
misfire limit); with `none` a slot later than `misfire_grace_seconds` is skipped.

APScheduler 3 does not coordinate several schedulers sharing one job store: each `custodes serve` fires every
slot. Exactly-once comes from the store instead: a run records its unique (hunt, slot) row in the transaction
that commits its findings, and a worker that finds the slot recorded (before reading, or at commit) drops its
run. The job function receives no scheduled time from APScheduler, so the slot is the latest time the hunt's
cron trigger fires at or before now, which is the coalesced run time APScheduler submitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import make_url

from custodes.config import DatabaseSettings, HuntSettings
from custodes.hunts.definition import trigger
from custodes.hunts.runner import HuntRunner
from custodes.model import utcnow
from custodes.store.locks import lock_key

log = logging.getLogger(__name__)

JOB_PREFIXES: Final = ("hunt:", "playbook:")
FUNC_REF: Final = "custodes.hunts.scheduler:fire"
_SYNC_DRIVERS: Final = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
_active: CronScheduler | None = None


async def fire(name: str, kind: str = "hunt") -> None:
    """The job every hunt and playbook schedule runs (referenced by name in the job store, so it survives
    restarts); `kind` is `hunt` or `playbook`."""
    if _active is None:
        log.warning("%s %s fired with no scheduler running; ignored", kind, name)
        return
    await _active.fire(name, kind)


def job_store_url(database: DatabaseSettings) -> str:
    """The store's URL with a synchronous driver, for APScheduler's job store."""
    url = make_url(database.url)
    backend = url.get_backend_name()
    if backend not in _SYNC_DRIVERS:
        raise ValueError(f"no job store driver for {backend}")
    return url.set(drivername=_SYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def latest_slot(cron: CronTrigger, now: datetime) -> datetime | None:
    """The latest time `cron` fires at or before `now` (None if it never did within two years)."""
    span = timedelta(seconds=1)
    while span <= timedelta(days=800):
        found = cron.get_next_fire_time(None, now - span)
        if found is not None and found <= now:
            while (following := cron.get_next_fire_time(found, found + timedelta(microseconds=1))) is not None:
                if following > now:
                    break
                found = following
            slot: datetime = found.astimezone(UTC)
            return slot
        span *= 2
    return None


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One cron job: a hunt or a playbook, and what runs for a slot (it claims the slot in the store itself)."""

    kind: str
    """`hunt` or `playbook`; with the name it makes the job id, `kind:name`."""
    name: str
    cron: CronTrigger
    run: Callable[[datetime], Awaitable[None]]

    @property
    def job_id(self) -> str:
        """The job's id in the job store."""
        return f"{self.kind}:{self.name}"

    @property
    def args(self) -> list[str]:
        """The stored job's arguments to `fire` (a hunt's are its name alone, as jobs stored before playbooks)."""
        return [self.name] if self.kind == "hunt" else [self.name, self.kind]


def hunt_jobs(runner: HuntRunner) -> list[Scheduled]:
    """A job per enabled, scheduled hunt: each slot runs the hunt over `[slot - lookback, slot)`."""

    def job(name: str) -> Callable[[datetime], Awaitable[None]]:
        async def run(slot: datetime) -> None:
            await _run_hunt(runner, name, slot)

        return run

    return [
        Scheduled("hunt", hunt.name, trigger(hunt), job(hunt.name))
        for hunt in runner.hunts.values()
        if hunt.enabled and hunt.schedule is not None
    ]


async def _run_hunt(runner: HuntRunner, name: str, slot: datetime) -> None:
    hunt = runner.hunts[name]
    run = await runner.run(name, slot - hunt.lookback, slot, slot=slot)
    if run is None:
        log.info("hunt %s: slot %s already run by another worker", name, slot.isoformat())
    else:
        log.info(
            "hunt %s: slot %s %s, %d events read, %d findings",
            name,
            slot.isoformat(),
            run.status,
            run.events_scanned,
            len(run.findings),
        )


class CronScheduler:
    """Keeps one APScheduler job per scheduled hunt or playbook, and runs each slot at most once across workers
    (each job claims its slot in the store: a `hunt_runs` row for hunts, the run's id for playbooks)."""

    def __init__(self, jobs: Sequence[Scheduled], settings: HuntSettings, database: DatabaseSettings) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.settings = settings
        self.database = database
        self.scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        """Start the scheduler: bring the stored jobs in line with the schedules, then resume firing."""
        global _active
        if _active is not None:
            raise RuntimeError("a scheduler is already running in this process")
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.database.url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}
        store = SQLAlchemyJobStore(
            url=job_store_url(self.database),
            tablename=self.settings.job_table,
            tableschema=self.database.schema_name if not self.database.url.startswith("sqlite") else None,
            engine_options=options,
        )
        grace = None if self.settings.catch_up == "latest" else int(self.settings.misfire_grace_seconds) or 1
        scheduler = AsyncIOScheduler(
            jobstores={"default": store},
            executors={"default": AsyncIOExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
            timezone=UTC,
        )
        # Several `custodes serve` processes may start together on one database: create the job table and
        # reconcile the stored jobs one process at a time (PostgreSQL advisory lock of the schema), or they collide.
        start_lock = lock_key("schedules", self.database.schema_name)
        with store.engine.connect() as lock:
            serialise = lock.dialect.name == "postgresql"
            if serialise:
                lock.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": start_lock})
            try:
                store.jobs_t.create(lock, checkfirst=True)
                lock.commit()
                scheduler.start(paused=True)
                self.scheduler = scheduler
                _active = self
                self._reconcile(scheduler, grace)
            finally:
                if serialise:
                    lock.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": start_lock})
                    lock.commit()
        scheduler.resume()

    def _reconcile(self, scheduler: AsyncIOScheduler, grace: int | None) -> None:
        for job in scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIXES) and job.id not in self.jobs:
                scheduler.remove_job(job.id)
        for job_id, wanted in self.jobs.items():
            job = scheduler.get_job(job_id)
            if (
                job is not None
                and str(job.trigger) == str(wanted.cron)
                and job.func_ref == FUNC_REF
                and list(job.args) == wanted.args
            ):
                if job.misfire_grace_time != grace:
                    job.modify(misfire_grace_time=grace)
                continue  # keep the stored next run time: it remembers the slots missed while down
            scheduler.add_job(
                FUNC_REF,
                wanted.cron,
                args=wanted.args,
                id=job_id,
                name=wanted.name,
                replace_existing=True,
                misfire_grace_time=grace,
            )

    async def fire(self, name: str, kind: str = "hunt") -> None:
        """Run the job's current slot unless a worker recorded it already.

        The run is a task of its own, shielded: APScheduler cancels its job tasks when it shuts down, and a run cut
        short would leave its slot unrecorded; `stop` waits for these tasks instead.
        """
        job = self.jobs.get(f"{kind}:{name}")
        if job is None:
            log.warning("%s %s fired but is no longer scheduled here; ignored", kind, name)
            return
        slot = latest_slot(job.cron, utcnow())
        if slot is None:
            return
        run: asyncio.Future[None] = asyncio.ensure_future(job.run(slot))
        self._running.add(run)
        run.add_done_callback(self._running.discard)
        await asyncio.shield(run)

    async def stop(self, grace_seconds: float = 60.0) -> None:
        """Stop firing, and let runs in progress finish (within `grace_seconds`): the job store already moved past
        their slots, so a run cut short would leave its slot unrecorded."""
        global _active
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_seconds)
        if _active is self:
            _active = None
