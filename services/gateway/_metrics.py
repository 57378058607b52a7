"""Prometheus metrics of one gateway: accepted, rejected by reason, latency to the broker's ack.

Each gateway has its own registry, so several gateways in one process (``oix
up``, the tests) never share or clash on counters.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The counters and histogram ``/metrics`` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "oix_gateway_reports_accepted",
            "Reports the broker acknowledged, by type (replays of a first answer not counted).",
            ["report_type"],
            registry=self.registry,
        )
        self.replayed = Counter(
            "oix_gateway_reports_replayed",
            "Retries answered with the first result, without writing again.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "oix_gateway_reports_rejected",
            "Reports or requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "oix_gateway_broker_ack_seconds",
            "Seconds from handing a report to the producer to the broker's acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "oix_gateway_reports_in_flight",
            "Reports sent to the broker and not acknowledged yet.",
            registry=self.registry,
        )
        self.acknowledgements = Counter(
            "oix_gateway_partner_acknowledgements",
            "Partners' Acknowledgement messages recorded for this agency's reports.",
            registry=self.registry,
        )

        self.findings = Counter(
            "oix_gateway_findings",
            "Findings about reports the broker lost after acknowledging them, by kind "
            "(coordinates_reused: another report acknowledged at the same coordinates).",
            ["kind"],
            registry=self.registry,
        )
        self.republished = Counter(
            "oix_gateway_reports_republished",
            "Retries published again because their first write is gone (lost, or of an "
            "earlier broker epoch).",
            registry=self.registry,
        )
        self.broker_verified = Gauge(
            "oix_gateway_broker_verified",
            "1 while the broker is verified and reports are accepted; 0 while they are "
            "answered 503.",
            registry=self.registry,
        )
        self.broker_epoch = Gauge(
            "oix_gateway_broker_epoch",
            "The broker epoch: how many times the gateway found the broker's log replaced.",
            registry=self.registry,
        )

    def broker_gate(self, verified: bool, epoch: int) -> None:
        """The broker gate opened or closed, in ``epoch``."""
        self.broker_verified.set(1 if verified else 0)
        self.broker_epoch.set(epoch)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
