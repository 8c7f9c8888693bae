"""Prometheus metrics of the service, one registry per application (so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.queue_depth = Gauge(
            "custodes_ingest_queue_depth", "Webhook records waiting for their commit", registry=self.registry
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

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
