"""Prometheus metrics of a liaison service, in a registry of its own (several share a process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiaisonMetrics:
    """The service's metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.messages = Counter(
            "oix_liaison_messages",
            "Records read, by what became of them: stored, duplicate, untrusted, not_released.",
            ["status"],
            registry=registry,
        )
        self.policy_violations = Counter(
            "oix_liaison_policy_violations",
            "Records that reached this agency although not released to it (never shown).",
            registry=registry,
        )
        self.log_events = Counter(
            "oix_liaison_log_events",
            "Discontinuities noticed in broker logs (log_reset, offset_gap, offset_repeated).",
            ["kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "oix_liaison_partition_lag",
            "Records on the broker not yet stored, per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.stuck_seconds = Gauge(
            "oix_liaison_partition_stuck_seconds",
            "How long a partition has not advanced while the broker holds more.",
            ["topic", "partition"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "oix_liaison_batch_seconds",
            "Time to store one batch (one transaction).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "oix_liaison_store_errors",
            "Failed store operations, by kind (unavailable, conflict).",
            ["kind"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "oix_liaison_webhook_deliveries",
            "Webhook delivery attempts, by endpoint and outcome (delivered, failed, dead).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.webhooks_queued = Counter(
            "oix_liaison_webhooks_queued",
            "Webhook deliveries queued with the reports they carry.",
            registry=registry,
        )
        self.published = Counter(
            "oix_liaison_published",
            "Acknowledgements and answers sent through the agency's gateway, by outcome.",
            ["report_type", "outcome"],
            registry=registry,
        )
        self.stream_clients = Gauge(
            "oix_liaison_stream_clients",
            "Open live streams (server-sent events).",
            registry=registry,
        )
        self.past_retention = Gauge(
            "oix_liaison_reports_past_retention",
            "Stored reports past their retention, waiting to be purged.",
            registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
