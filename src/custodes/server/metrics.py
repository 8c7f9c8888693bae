"""Prometheus metrics of the service, one registry per application (so tests can run several apps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from custodes.model import utcnow

if TYPE_CHECKING:
    from custodes.connectors.supervisor import ConnectorSupervisor
    from custodes.services import Services

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ConnectorCollector",
    "DirectoryCollector",
    "Metrics",
    "RunnerMetrics",
    "WorkerMetrics",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.http_requests = Counter(
            "custodes_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.http_duration = Histogram(
            "custodes_http_request_duration_seconds",
            "HTTP request duration by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingested = Counter(
            "custodes_ingest_records",
            "Webhook records by receiver and outcome (stored, duplicate)",
            ["receiver", "outcome"],
            registry=self.registry,
        )
        self.refused = Counter(
            "custodes_ingest_refused",
            "Webhook requests refused because the queue was full",
            ["receiver"],
            registry=self.registry,
        )
        self.out_of_window = Gauge(
            "custodes_events_out_of_window",
            "Events since start whose absurd time was replaced by their ingestion time, by source",
            ["source"],
            registry=self.registry,
        )
        self.late = Gauge(
            "custodes_events_late",
            "Events that arrived after their date closed (scoring, persisted) or their window (correlation, since "
            "start), by stage and source",
            ["stage", "source"],
            registry=self.registry,
        )
        self.held = Gauge(
            "custodes_events_held",
            "Events and findings held from scoring until the slowest live source passes them, by source",
            ["source"],
            registry=self.registry,
        )
        self.past_bound = Gauge(
            "custodes_events_released_past_bound",
            "Items released while a live source lagged past ingest.max_hold_hours, by that source (since start)",
            ["source"],
            registry=self.registry,
        )
        self.starts_held = Gauge(
            "custodes_playbook_starts_held",
            "Owed playbook starts held in the outbox by the playbook's max_runs_per_hour (since start), by playbook",
            ["playbook"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "custodes_ingest_queue_depth", "Webhook records waiting for their commit", registry=self.registry
        )
        self.batch_records = Histogram(
            "custodes_ingest_batch_records",
            "Webhook records committed per transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "custodes_detection_latency_seconds",
            "Time from a webhook's arrival to its committed findings",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.findings = Counter(
            "custodes_findings",
            "Findings raised, by detector and severity",
            ["detector", "severity"],
            registry=self.registry,
        )
        self.runs = Counter(
            "custodes_playbook_runs",
            "Playbook runs finished, by playbook and status",
            ["playbook", "status"],
            registry=self.registry,
        )
        self.action_errors = Counter(
            "custodes_action_errors", "Failed action steps, by action", ["action"], registry=self.registry
        )

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered (every label set here is bounded: routes, statuses, receivers,
        detectors, playbooks, actions); prometheus_client's lookup costs three times the count itself."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class WorkerMetrics:
    """A detection worker's partitions: deliveries committed and redelivered by partition, partitions it owns by
    the assignment, and how long a batch takes from its handling to its commit."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.committed = Counter(
            "custodes_partition_deliveries_committed",
            "Deliveries committed (then acknowledged), by partition",
            ["partition"],
            registry=registry,
        )
        self.redelivered = Counter(
            "custodes_partition_redeliveries",
            "Deliveries the broker had delivered before (a worker died or gave the partition up), by partition",
            ["partition"],
            registry=registry,
        )
        self.owned = Gauge(
            "custodes_partitions_owned", "Partitions the assignment gives this worker", registry=registry
        )
        self.commit_seconds = Histogram(
            "custodes_partition_commit_seconds",
            "Time to store, detect on and commit one batch of a partition",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class RunnerMetrics:
    """A playbook runner's work: owed starts claimed from the outbox, runs they started, stalled runs resumed or
    failed; and the starts held back (the service metrics' gauge, in the same registry)."""

    def __init__(self, registry: CollectorRegistry, held: Gauge) -> None:
        self.claimed = Counter(
            "custodes_outbox_claimed", "Outbox rows (owed playbook starts) this runner claimed", registry=registry
        )
        self.started = Counter(
            "custodes_outbox_runs_started", "Playbook runs started from the outbox", registry=registry
        )
        self.reaped = Counter(
            "custodes_runs_reaped", "Stalled playbook runs this runner resumed or failed", registry=registry
        )
        self.held = held


class DirectoryCollector(Collector):
    """The directory behaviour scoring holds, read when scraped: its people, when it was read, failed reads of a
    changed directory since start, and whether a change is unread (`ScoringService.follow_directory`)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """The directory metric families; none where nothing scores."""
        scoring = self.services.pipeline.scoring
        if scoring is None:
            return
        status = scoring.directory
        people = GaugeMetricFamily("custodes_directory_people", "People in the directory scoring holds")
        people.add_metric([], float(status.people))
        read = GaugeMetricFamily(
            "custodes_directory_read_timestamp_seconds", "When the directory scoring holds was read (Unix time)"
        )
        read.add_metric([], status.read_at)
        failed = CounterMetricFamily(
            "custodes_directory_failed_reads", "Reads of a changed directory that failed since start"
        )
        failed.add_metric([], float(status.failed_reads))
        unread = GaugeMetricFamily(
            "custodes_directory_change_unread", "1 while the directory changed but could not be read, else 0"
        )
        unread.add_metric([], 0.0 if status.error is None else 1.0)
        yield from (people, read, failed, unread)


class ConnectorCollector(Collector):
    """Per pull connector, read when scraped: lag behind its newest event, events/s of its last round, events
    stored, failed rounds since start, failures in a row and whether it runs."""

    def __init__(self, supervisor: ConnectorSupervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        """The connector metric families."""
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "lag": GaugeMetricFamily(
                "custodes_connector_lag_seconds", "Now minus the newest event stored", labels=["connector"]
            ),
            "rate": GaugeMetricFamily(
                "custodes_connector_events_per_second", "Events per second of the last round", labels=["connector"]
            ),
            "events": CounterMetricFamily("custodes_connector_events", "Events stored", labels=["connector"]),
            "errors": CounterMetricFamily(
                "custodes_connector_errors", "Failed rounds since the service started", labels=["connector"]
            ),
            "failing": GaugeMetricFamily(
                "custodes_connector_consecutive_failures", "Failed rounds in a row", labels=["connector"]
            ),
            "running": GaugeMetricFamily(
                "custodes_connector_running", "1 while the connector is started, else 0", labels=["connector"]
            ),
        }
        runtime = self.supervisor.runtime
        now = utcnow()
        for entry in self.supervisor:
            for item in entry.scheduled:
                name = item.connector.name
                families["running"].add_metric([name], 1.0 if entry.state == "running" else 0.0)
                families["errors"].add_metric([name], float(runtime.errors.get(name, 0)))
                status = runtime.statuses.get(name)
                if status is None:
                    continue
                lag = status.lag(now)
                if lag is not None:
                    families["lag"].add_metric([name], lag.total_seconds())
                families["rate"].add_metric([name], status.events_per_second)
                families["events"].add_metric([name], float(status.events_total))
                families["failing"].add_metric([name], float(status.consecutive_failures))
        yield from families.values()
