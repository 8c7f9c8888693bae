"""The flow every event takes, whatever brought it: store -> detect -> findings -> playbooks.

Events, the findings they raise, the connector checkpoint and the playbook starts those findings (or, for a
webhook receiver's records, the records themselves) owe (the outbox) are committed in one transaction;
playbooks run only after that commit, so nothing is acted on that is not durably stored, and a start owed is
never lost: `drain` starts what the outbox holds (after each commit, and at start-up for what a crash left), and
the runs table's one run per (playbook, finding) or (playbook, record) makes a second start of the same row a
no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from custodes.cases import feedback
from custodes.cases.filing import file_findings
from custodes.config import CaseSettings
from custodes.connectors.base import Batch, Connector
from custodes.detections.findings import findings_for
from custodes.detections.sigma.correlation import Correlator
from custodes.detections.sigma.routing import EventMatcher
from custodes.hold import EventTimeHold
from custodes.model import Event, Finding, Run, utcnow
from custodes.playbooks.loader import LoadedPlaybook
from custodes.playbooks.runner import EngineError, Runner
from custodes.playbooks.startcap import StartCap
from custodes.store import Store, Transaction
from custodes.store.text import cleaned
from custodes.timewindow import TimeWindow, out_of_window

if TYPE_CHECKING:
    from custodes.detections.scoring.service import ScoringService

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestReport:
    """What one ingest did."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    warnings: int = 0
    new_findings: list[Finding] = field(default_factory=list)
    merged_findings: int = 0
    runs: list[Run] = field(default_factory=list)
    stored_ids: set[str] = field(default_factory=set)
    """The ids one ingest stored (a receiver tells each request which of its records were new); `add` leaves them
    out of a total, which for a replay or a backfill would otherwise hold every id it stored."""
    suppressed: int = 0
    """Findings analyst feedback suppressed."""
    cases: list[str] = field(default_factory=list)
    """Cases the new findings opened or joined."""

    def add(self, other: IngestReport) -> None:
        """Accumulate another report into this one (its counts and findings; not its `stored_ids`)."""
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.warnings += other.warnings
        self.new_findings += other.new_findings
        self.merged_findings += other.merged_findings
        self.runs += other.runs
        self.suppressed += other.suppressed
        self.cases += [case for case in other.cases if case not in self.cases]


class Pipeline:
    """Wires the store, the detection engine, the playbooks and their runner."""

    def __init__(
        self,
        store: Store,
        engine: EventMatcher,
        playbooks: Sequence[LoadedPlaybook],
        runner: Runner,
        *,
        dedup_window: timedelta = timedelta(hours=1),
        correlator: Correlator | None = None,
        scoring: ScoringService | None = None,
        window: TimeWindow | None = None,
        claim_lease: timedelta = timedelta(seconds=10),
        hold: EventTimeHold | None = None,
        cases: CaseSettings | None = None,
    ) -> None:
        self.store = store
        self.hold = hold or EventTimeHold()
        """Live sources' watermarks and the scoring input held until the slowest passes it (custodes.hold)."""
        self.cases = cases or CaseSettings()
        """Whether and how new findings open or join their person's case."""
        self.window = window or TimeWindow()
        self.out_of_window: Counter[str] = Counter()
        """Events whose absurd stated time was replaced by their ingestion time since start, by source."""
        self.scoring = scoring
        self.engine = engine
        self.correlator = correlator or Correlator()
        self.playbooks = list(playbooks)
        self.runner = runner
        self.dedup_window = dedup_window
        self.disabled_playbooks: set[str] = set()
        """Playbooks switched off through the API (by name): not started by any trigger."""
        self.disabled_rules: set[str] = set()
        """Rules switched off through the API (by id): their matches raise no findings."""
        self.claim_lease = claim_lease
        """How long a drain holds the outbox rows it claimed before another may start them: short, since a row a
        dead process claimed waits that long, and a second start of a row is a no-op anyway (one run per row)."""
        self.claimed_starts = 0
        """Outbox rows this pipeline's drains claimed since it was made."""
        self.start_cap = StartCap(store, runner.engine.max_runs_per_hour, runner.actor)
        """Each playbook's cap on the runs its triggers start an hour (starts past it wait in the outbox)."""

    async def ingest(
        self,
        events: Sequence[Event],
        *,
        connector: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        alerts: Sequence[Finding] = (),
        webhooks: Sequence[tuple[str, Sequence[Event]]] = (),
        run_playbooks: bool = True,
        score: bool = True,
    ) -> IngestReport:
        """Store new events (and a checkpoint), detect on them, record findings, then run triggered playbooks.

        `alerts` are findings other systems raised, each referencing one of `events`; one is recorded only
        when its event is new, so a re-delivered alert is acknowledged without a second finding. `webhooks`
        are (receiver, records) a webhook receiver accepted: the starts of the playbooks their receiver
        triggers are owed in the same transaction. Without `score`, behaviour scoring is left to a later
        `settle` (a replay scores once, in event-time order).
        """
        if self.window.clamp(events, alerts, utcnow()):
            self.out_of_window.update(event.source for event in events if out_of_window(event))
        if self.store.dialect == "postgresql":
            events = [cleaned(event) for event in events]
            alerts = [cleaned(alert) for alert in alerts]
        report = IngestReport(received=len(events), warnings=sum(1 for e in events if e.warnings))
        try:
            await self._store(report, events, connector, checkpoint, alerts, webhooks, score=score)
        except BaseException:
            if self.scoring is not None:
                self.scoring.invalidate()
            raise
        if run_playbooks:
            report.runs = await self.drain()
        return report

    async def _store(
        self,
        report: IngestReport,
        events: Sequence[Event],
        connector: str | None,
        checkpoint: dict[str, Any] | None,
        alerts: Sequence[Finding],
        webhooks: Sequence[tuple[str, Sequence[Event]]],
        *,
        score: bool,
    ) -> None:
        async with self.correlator.guarded(always=self.scoring is not None), self.store.transaction() as tx:
            new_ids = await tx.insert_events(events)
            for receiver, records in webhooks:
                await self.owe_webhook(tx, receiver, records)
            if connector is not None and checkpoint is not None:
                await tx.save_checkpoint(connector, checkpoint)
            fresh = [event for event in {e.id: e for e in events}.values() if event.id in new_ids]
            report.stored = len(fresh)
            report.stored_ids = new_ids
            report.duplicates = report.received - report.stored
            await tx.touch_entities(_seen(fresh))
            await self.correlator.ensure_loaded(tx)
            matches = [(event, self.engine.match(event)) for event in fresh]
            candidates = [f for event, rules in matches for f in findings_for(event, self.correlator.reportable(rules))]
            candidates += [
                f for event, rules in matches if not out_of_window(event) for f in self.correlator.feed(event, rules)
            ]
            candidates += self.correlator.flush()
            await self.correlator.save(tx)
            if self.disabled_rules:
                candidates = [f for f in candidates if f.rule_id not in self.disabled_rules]
            candidates += [alert for alert in alerts if alert.event_ids and alert.event_ids[0] in new_ids]
            report.new_findings, report.merged_findings, report.suppressed = await self.record(tx, candidates)
            if self.scoring is not None and score:
                raised = await self._score(tx, connector, fresh, report.new_findings)
                scored, _, suppressed = await self.record(tx, raised)
                report.new_findings += scored
                report.suppressed += suppressed
            report.cases = await self.follow_up(tx, report.new_findings)

    async def record(self, tx: Transaction, candidates: Sequence[Finding]) -> tuple[list[Finding], int, int]:
        """Record candidate findings as analyst feedback leaves them: (the new ones, how many merged into stored
        ones, how many feedback suppressed)."""
        kept, suppressed = await feedback.apply(tx, candidates)
        new: list[Finding] = []
        merged = 0
        for candidate in kept:
            finding, created = await tx.record_finding(candidate, self.dedup_window)
            if created:
                new.append(finding)
            else:
                merged += 1
        return new, merged, suppressed

    async def follow_up(self, tx: Transaction, found: Sequence[Finding]) -> list[str]:
        """What new findings owe in their own transaction: their person's case (the ids opened or joined) and their
        playbook starts."""
        cases = await file_findings(tx, self.cases, found)
        await self.owe(tx, found)
        return cases

    async def _score(
        self, tx: Transaction, connector: str | None, fresh: Sequence[Event], found: Sequence[Finding]
    ) -> list[Finding]:
        """Feed scoring, through the live-source hold while one is under way; the scoring findings raised."""
        assert self.scoring is not None
        from custodes.detections.scoring.service import save_hold

        if not self.hold.active and not self.hold.heap and self.hold.cursor is None:
            return await self.scoring.ingest(tx, fresh, found)
        plan = self.hold.plan(connector, fresh, found, newest=self.scoring.engine.watermark)
        raised = await self.scoring.feed(tx, plan.released)
        holding = self.hold.active or bool(plan.heap)
        await save_hold(tx, holding, plan.cursor if holding else None)
        if not holding:
            plan.cursor = None
        tx.committed.append(lambda: self.hold.apply(plan))
        return raised

    async def release_held(self, *, run_playbooks: bool = True) -> None:
        """Score what the live sources no longer hold (one of them stopped)."""
        if self.hold.heap:
            await self.ingest([], run_playbooks=run_playbooks)

    async def restore_held(self) -> None:
        """Hold again what the previous process held when it stopped (stored, not yet scored)."""
        from custodes.detections.scoring.engine import DETECTOR
        from custodes.detections.scoring.service import held_since

        if self.scoring is None:
            return
        async with self.store.transaction() as tx:
            holding, cursor = await held_since(tx)
            if not holding:
                return
            after = None if cursor is None else (cursor, "\U0010ffff")
            held = await tx.events_in_time_order(after, limit=10**9)
            found = await tx.findings_by_time(exclude_detector=DETECTOR, after=cursor)
        self.hold.restore(held, found, cursor)

    async def owe(self, tx: Transaction, found: Sequence[Finding]) -> None:
        """Write the playbook starts new findings trigger to the outbox, in the findings' transaction."""
        await tx.enqueue_starts((loaded.playbook.name, f.id) for f in found for loaded in self.triggered(f))

    async def owe_webhook(self, tx: Transaction, receiver: str, records: Sequence[Event]) -> None:
        """Write the playbook starts records a webhook receiver accepted trigger to the outbox, one per
        (playbook, record), in the records' transaction."""
        starts = ((loaded.playbook.name, e.id) for loaded in self.triggered_webhook(receiver) for e in records)
        await tx.enqueue_starts(starts, receiver=receiver)

    def playbook(self, name: str) -> LoadedPlaybook | None:
        """The loaded playbook of that name."""
        return next((item for item in self.playbooks if item.playbook.name == name), None)

    def triggered(self, finding: Finding) -> list[LoadedPlaybook]:
        """The enabled playbooks whose finding trigger matches (before any minimum entity risk)."""
        return [
            loaded
            for loaded in self.playbooks
            if loaded.playbook.enabled
            and loaded.playbook.name not in self.disabled_playbooks
            and (trigger := loaded.playbook.trigger.findings) is not None
            and trigger.matches(finding)
        ]

    def event_time(self) -> dict[str, Any]:
        """Event-time health: out-of-window and late events by source, and scoring's clock."""
        engine = None if self.scoring is None else self.scoring.engine
        closed = None if engine is None or engine.closed_through is None else engine.closed_through
        return {
            "out_of_window": dict(sorted(self.out_of_window.items())),
            "late": {
                "scoring": {} if engine is None else dict(sorted(engine.late_by_source.items())),
                "correlation": dict(sorted(self.correlator.late_by_source.items())),
            },
            "watermark": None if engine is None or engine.watermark is None else engine.watermark.isoformat(),
            "closed_through": None if closed is None else date.fromordinal(closed).isoformat(),
            "hold": {
                "max_hours": self.hold.max_hold.total_seconds() / 3600,
                "watermarks": {
                    name: None if mark is None else mark.isoformat()
                    for name, mark in sorted(self.hold.watermarks.items())
                },
                "held": self.hold.held(),
                "stalled": self.hold.stalled(),
                "released_past_bound": dict(sorted(self.hold.past_bound.items())),
            },
        }

    async def respond(self, found: Sequence[Finding]) -> list[Run]:
        """Start every enabled playbook whose trigger matches, for each finding (already committed)."""
        runs: list[Run] = []
        for finding in found:
            for loaded in self.triggered(finding):
                run = await self._start(loaded, finding)
                if run is not None:
                    runs.append(run)
        return runs

    async def drain(self, limit: int = 100) -> list[Run]:
        """Start the playbook runs the outbox holds, oldest first, until it holds none this call can claim.

        Each row is claimed for `claim_lease` first (any number of drains, in any number of processes, share
        the outbox). A start that fails (the store unreachable) stays in the outbox, claimable again once its
        lease ends; one whose playbook is gone or switched off, whose finding or record is gone, whose entity
        is below the trigger's minimum risk, or whose record the trigger's inputs cannot bind is dropped; one whose
        playbook started as many runs in the last hour as it may (`max_runs_per_hour`) waits there until it may."""
        runs: list[Run] = []
        while True:
            async with self.store.transaction() as tx:
                owed = await tx.claim_starts(limit, self.claim_lease)
            self.claimed_starts += len(owed)
            if not owed:
                return runs
            held: set[str] = set()  # playbooks whose owed starts left in this batch are held back
            for index, (playbook, subject, receiver) in enumerate(owed):
                if playbook in held:
                    continue
                try:
                    loaded = self.playbook(playbook)
                    until = None if loaded is None else await self.start_cap.full_until(loaded.playbook)
                    if until is not None:
                        rest = [later for name, later, _ in owed[index:] if name == playbook]
                        await self.start_cap.hold(playbook, rest, until)
                        held.add(playbook)
                        continue
                    run = await self._start_owed(playbook, subject, receiver)
                except Exception:
                    what = "finding" if receiver is None else f"webhook {receiver} record"
                    log.exception("starting playbook %s for %s %s failed; it stays owed", playbook, what, subject)
                    continue
                if run is not None:
                    runs.append(run)

    async def _start_owed(self, playbook: str, subject: str, receiver: str | None) -> Run | None:
        run = await (
            self._start_finding(playbook, subject)
            if receiver is None
            else self._start_record(playbook, subject, receiver)
        )

        async def clear(tx: Transaction) -> None:
            await tx.clear_start(playbook, subject)

        await self.store.group.run(clear)
        return run

    async def _start_finding(self, playbook: str, finding_id: str) -> Run | None:
        async with self.store.transaction() as tx:
            finding = await tx.get_finding(finding_id)
        loaded = self.playbook(playbook)
        if finding is None or loaded is None or loaded not in self.triggered(finding):
            return None
        return await self._start(loaded, finding)

    async def _start_record(self, playbook: str, event_id: str, receiver: str) -> Run | None:
        """Start a webhook-triggered playbook for a stored record; the run's id, derived from the playbook and
        the record, makes a second start of the same record a no-op."""
        async with self.store.transaction() as tx:
            records = await tx.get_events([event_id])
        loaded = next((item for item in self.triggered_webhook(receiver) if item.playbook.name == playbook), None)
        if not records or loaded is None:
            return None
        try:
            return await self.runner.start_webhook(loaded, receiver, records[0])
        except EngineError as exc:
            log.warning("%s", exc)
            return None

    async def _start(self, loaded: LoadedPlaybook, finding: Finding) -> Run | None:
        """Start one playbook for one finding, unless its entity is below the trigger's minimum risk."""
        trigger = loaded.playbook.trigger.findings
        minimum = None if trigger is None else trigger.min_entity_risk
        if minimum is not None and await self.entity_risk(finding) < minimum:
            return None
        return await self.runner.start(loaded, finding)

    async def entity_risk(self, finding: Finding) -> float:
        """The behaviour-scoring risk of the finding's entity: that of its latest scored day (0 when the entity
        has no score, scoring is off, or the finding has no entity)."""
        if self.scoring is None or finding.entity is None:
            return 0.0
        from custodes.detections.scoring.engine import DETECTOR
        from custodes.detections.scoring.service import entity_scores

        key = (
            finding.entity if finding.detector == DETECTOR else self.scoring.engine.resolver.resolve(finding.entity)[0]
        )
        async with self.store.transaction() as tx:
            scores = await entity_scores(tx, key, limit=1)
        return scores[0].risk if scores else 0.0

    def triggered_webhook(self, receiver: str) -> list[LoadedPlaybook]:
        """The enabled playbooks with a webhook trigger on this receiver."""
        return [
            loaded
            for loaded in self.playbooks
            if loaded.playbook.enabled
            and loaded.playbook.name not in self.disabled_playbooks
            and (webhook := loaded.playbook.trigger.webhook) is not None
            and webhook.receiver == receiver
        ]

    async def replay(self, connector: Connector, *, close: bool = False) -> IngestReport:
        """Drain a connector from its saved checkpoint, committing each batch with its checkpoint, then re-score
        in event-time order (`settle`); `close` also closes the last open date (`custodes replay`)."""
        async with self.store.transaction() as tx:
            checkpoint = await tx.get_checkpoint(connector.name)
        total = IngestReport()
        batch: Batch
        async for batch in connector.batches(checkpoint):
            report = await self.ingest(batch.events, connector=connector.name, checkpoint=batch.checkpoint, score=False)
            total.add(report)
            for warning in batch.warnings:  # a file skipped, a record too long: said as a live round says it
                log.warning("%s: %s", connector.name, warning)
            await asyncio.sleep(0)
        total.add(await self.settle(rescore=total.stored > 0, close=close))
        return total

    async def settle(self, *, rescore: bool = True, close: bool = False, run_playbooks: bool = True) -> IngestReport:
        """After a replay or backfill: re-score every day from the stored events in event-time order (so the
        result equals an in-order run whatever order they came in), optionally close the last open date (so
        its scores are final and shown), record the scoring findings raised and start their playbooks."""
        report = IngestReport()
        if self.scoring is None:
            return report
        async with self.correlator.guarded(always=True):
            if rescore:
                await self.scoring.rescore(self.store)
                self.hold.clear(self.scoring.engine.watermark if self.hold.active else None)
            async with self.store.transaction() as tx:
                found = self.scoring.engine.take_findings()
                if rescore and (self.hold.active or self.hold.cursor is not None):
                    from custodes.detections.scoring.service import save_hold

                    await save_hold(tx, self.hold.active, self.hold.cursor)
                if close:
                    found += await self.scoring.flush(tx)
                else:
                    await self.scoring.save(tx)
                for candidate in found:
                    finding, created = await tx.record_finding(candidate, self.dedup_window)
                    if created:
                        report.new_findings.append(finding)
                report.cases = await file_findings(tx, self.cases, report.new_findings)
            await self.owe(tx, report.new_findings)
        if run_playbooks:
            report.runs = await self.drain()
        return report


def _seen(events: Sequence[Event]) -> dict[str, tuple[datetime, datetime]]:
    seen: dict[str, tuple[datetime, datetime]] = {}
    for event in events:
        if event.actor:
            first, last = seen.get(event.actor, (event.time, event.time))
            seen[event.actor] = (min(first, event.time), max(last, event.time))
    return seen
