"""The pipeline of a receiver: events go to the bus instead of the store. A batch is accepted once every event is
confirmed by its partition queue; a connector's checkpoint is committed after that (a crash between the two
publishes the batch again, deduplicated by event id). Detection, correlation and scoring happen in the workers,
playbook starts in the runners."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from custodes.bus.publisher import Publisher
from custodes.bus.wire import Envelope
from custodes.model import Event, Finding, Run, utcnow
from custodes.pipeline import IngestReport, Pipeline
from custodes.timewindow import out_of_window


class PublishingPipeline(Pipeline):
    """A `Pipeline` whose `ingest` publishes to the partitions."""

    def __init__(self, base: Pipeline, publisher: Publisher) -> None:
        super().__init__(
            base.store,
            base.engine,
            base.playbooks,
            base.runner,
            dedup_window=base.dedup_window,
            correlator=base.correlator,
            scoring=base.scoring,
            window=base.window,
            claim_lease=base.claim_lease,
        )
        self.disabled_rules, self.disabled_playbooks = base.disabled_rules, base.disabled_playbooks
        self.publisher = publisher

    def entity_key(self, event: Event) -> str:
        """What routes the event to its partition: the person its actor resolves to (all of a person's events,
        from every source, meet in one partition), else the event's own id."""
        if event.actor is None:
            return event.id
        if self.scoring is None:
            return event.actor
        return self.scoring.engine.resolver.resolve(event.actor)[0]

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
        """Publish the events (each with its alert and receiver) and wait for the broker's confirms; then commit
        the connector's checkpoint. The report counts every event confirmed as stored."""
        if self.window.clamp(events, alerts, utcnow()):
            self.out_of_window.update(event.source for event in events if out_of_window(event))
        alert_of = {alert.event_ids[0]: alert for alert in alerts if alert.event_ids}
        receiver_of = {event.id: receiver for receiver, records in webhooks for event in records}
        unique = list({event.id: event for event in events}.values())
        if self.scoring is not None:
            await self.scoring.follow_directory()  # route by who is who in the directory as it stands
        await self.publisher.publish(
            [
                (self.entity_key(event), Envelope(event, alert_of.get(event.id), receiver_of.get(event.id)))
                for event in unique
            ]
        )
        if connector is not None and checkpoint is not None:
            async with self.store.transaction() as tx:
                await tx.save_checkpoint(connector, checkpoint)
        ids = {event.id for event in unique}
        return IngestReport(
            received=len(events),
            stored=len(ids),
            duplicates=len(events) - len(ids),
            warnings=sum(1 for event in events if event.warnings),
            stored_ids=ids,
        )

    async def drain(self, limit: int = 100) -> list[Run]:
        """Nothing: a receiver owes no starts (the workers owe them, the runners start them)."""
        return []
