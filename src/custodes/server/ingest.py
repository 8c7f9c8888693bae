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

from custodes.config import ServerSettings
from custodes.model import Event, Finding, Run
from custodes.pipeline import IngestReport, Pipeline
from custodes.server.metrics import Metrics
from custodes.server.tasks import BackgroundTasks

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The ingest queue cannot take more records right now."""


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

        After the commit, playbooks with a webhook trigger on `receiver` start for each record."""
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
                report = await self.pipeline.ingest(
                    [e for job in batch for e in job.events],
                    alerts=[a for job in batch for a in job.alerts],
                    run_playbooks=False,
                )
            except Exception as exc:
                log.exception("webhook batch of %d requests failed to commit", len(batch))
                for job in batch:
                    if not job.done.done():
                        job.done.set_exception(exc)
                continue
            finally:
                records = sum(len(job.events) for job in batch)
                self._pending -= records
                self.metrics.queue_depth.set(self._pending)
                self.metrics.batch_records.observe(records)
            for job in batch:
                if not job.done.done():
                    job.done.set_result(_share(job, report))
            for finding in report.new_findings:
                self.metrics.child(self.metrics.findings, finding.detector, finding.severity.label).inc()
            if report.new_findings:
                self.tasks.spawn(self._drain())
            for job in batch:
                if job.receiver is not None and job.events and self.pipeline.triggered_by(job.receiver):
                    self.tasks.spawn(self._respond_webhook(job.receiver, job.events))

    async def _drain(self) -> None:
        self._count(await self.pipeline.drain())

    async def _respond_webhook(self, receiver: str, events: list[Event]) -> None:
        self._count(await self.pipeline.respond_webhook(receiver, events))

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


def _share(job: _Job, report: IngestReport) -> Accepted:
    ids = {event.id for event in job.events}
    stored = len(ids & report.stored_ids)
    findings = [f.id for f in report.new_findings if ids.intersection(f.event_ids)]
    return Accepted(stored=stored, duplicates=len(job.events) - stored, findings=findings)
