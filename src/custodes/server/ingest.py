"""Group commit for webhooks: requests wait until their records are committed, many requests per transaction.

A request's records go into a bounded queue; one writer task takes everything waiting (up to a batch size),
commits it in one transaction through the pipeline, and answers each waiting request with its own share of
the result. When the queue is full the request is refused at once (the server answers 429 with Retry-After)
instead of being accepted and lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from custodes.config import ServerSettings
from custodes.model import Event, Finding, Run
from custodes.pipeline import IngestReport, Pipeline
from custodes.server.metrics import Metrics
from custodes.server.tasks import BackgroundTasks

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The ingest queue cannot take more records right now."""


class Unstorable(Exception):
    """The store refused a request's records for what they hold (not for being unavailable)."""


def unstorable(exc: BaseException) -> bool:
    """Whether a failed commit was refused for its data (a value out of range, a constraint), which would fail
    again the same way, rather than for the store being unreachable."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(state, str) and state[:2] in {"22", "23"}:  # PostgreSQL: data exception, integrity violation
        return True
    if isinstance(exc, StatementError):
        return isinstance(exc.orig, ValueError | OverflowError | TypeError)
    return isinstance(exc, ValueError | OverflowError | TypeError)


@dataclass(slots=True)
class Accepted:
    """What one request's records became."""

    stored: int
    duplicates: int
    findings: list[str]


@dataclass(slots=True)
class _Job:
    events: list[Event]
    alerts: list[Finding]
    receiver: str | None = None
    done: asyncio.Future[Accepted] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class IngestQueue:
    """A bounded queue of webhook records drained by one writer in batches."""

    def __init__(self, pipeline: Pipeline, tasks: BackgroundTasks, settings: ServerSettings, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.tasks = tasks
        self.settings = settings
        self.metrics = metrics
        self._jobs: deque[_Job] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        """Records waiting to be committed."""
        return self._pending

    @property
    def running(self) -> bool:
        """Whether the writer task is alive."""
        return self._writer is not None and not self._writer.done()

    def start(self) -> None:
        """Start the writer task."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer

    async def submit(self, events: list[Event], alerts: list[Finding], *, receiver: str | None = None) -> Accepted:
        """Queue records and wait until they are committed; QueueFull when there is no room.

        The starts of playbooks with a webhook trigger on `receiver` are owed (the outbox) for each record in the
        records' transaction, and drained after the commit."""
        size = len(events)
        if self._closing or (self._pending and self._pending + size > self.settings.ingest_queue_records):
            raise QueueFull
        job = _Job(events, alerts, receiver)
        self._jobs.append(job)
        self._pending += size
        self.metrics.queue_depth.set(self._pending)
        self._wake.set()
        return await asyncio.shield(job.done)

    async def _write_forever(self) -> None:
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            try:
                await self._commit(batch)
            finally:
                records = sum(len(job.events) for job in batch)
                self._pending -= records
                self.metrics.queue_depth.set(self._pending)
                self.metrics.batch_records.observe(records)

    async def _commit(self, batch: list[_Job]) -> None:
        """Commit a batch in one transaction; when that fails, each request alone, so that one request's
        unstorable record fails only that request."""
        try:
            report = await self.pipeline.ingest(
                [e for job in batch for e in job.events],
                alerts=[a for job in batch for a in job.alerts],
                webhooks=[(job.receiver, job.events) for job in batch if job.receiver is not None],
                run_playbooks=False,
            )
        except Exception as exc:
            if len(batch) > 1:
                log.warning("a batch of %d webhook requests failed (%s); committing each alone", len(batch), exc)
                for job in batch:
                    await self._commit([job])
                return
            [job] = batch
            if unstorable(exc):
                log.warning("webhook request refused by the store: %s", exc)
                job.done.set_exception(Unstorable(_reason(exc)))
            else:
                log.exception("webhook request of %d records failed to commit", len(job.events))
                job.done.set_exception(exc)
            return
        for job in batch:
            if not job.done.done():
                job.done.set_result(_share(job, report))
        self._after(batch, report)

    def _after(self, batch: list[_Job], report: IngestReport) -> None:
        """Count the findings, then start what they and the records trigger."""
        for finding in report.new_findings:
            self.metrics.child(self.metrics.findings, finding.detector, finding.severity.label).inc()
        hooked = any(
            job.receiver is not None and job.events and self.pipeline.triggered_webhook(job.receiver) for job in batch
        )
        if report.new_findings or hooked:
            self.tasks.spawn(self._drain())

    async def _drain(self) -> None:
        self._count(await self.pipeline.drain())

    def _count(self, runs: list[Run]) -> None:
        for run in runs:
            self.metrics.child(self.metrics.runs, run.playbook, run.status.value).inc()
            for step in run.steps:
                if step.status.value == "failed":
                    self.metrics.child(self.metrics.action_errors, step.action).inc()

    def _take(self) -> list[_Job]:
        batch = [self._jobs.popleft()]
        size = len(batch[0].events)
        while self._jobs and size + len(self._jobs[0].events) <= self.settings.ingest_batch_records:
            job = self._jobs.popleft()
            batch.append(job)
            size += len(job.events)
        return batch


def _reason(exc: BaseException) -> str:
    """The store's complaint in one line, without the statement and its parameters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"the store refused a record: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}"


def _share(job: _Job, report: IngestReport) -> Accepted:
    ids = {event.id for event in job.events}
    stored = len(ids & report.stored_ids)
    findings = [f.id for f in report.new_findings if ids.intersection(f.event_ids)]
    return Accepted(stored=stored, duplicates=len(job.events) - stored, findings=findings)
