"""Prometheus metrics of the service, one registry per application (so tests can run several apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

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
