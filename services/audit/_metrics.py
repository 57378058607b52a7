"""Prometheus metrics of the audit consumer, and its ``/metrics`` and ``/healthz`` endpoint.

Each consumer has its own registry, so several can run in one process (tests,
``oix up``). The HTTP endpoint is a few lines of asyncio: it serves two paths
and needs no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from services.bus import ConfigError, PartitionStatus, get_logger

log = get_logger(__name__)


class Following(Protocol):
    """What health and metrics ask of a partition follower (:class:`~services.bus.Follower`)."""

    def status(self) -> list[PartitionStatus]: ...
    def idle_ms(self) -> int: ...


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AuditMetrics:
    """The consumer's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.records_stored = Counter(
            "oix_audit_records_stored",
            "Records durably stored, by signature status.",
            ["signature_status"],
            registry=self.registry,
        )
        self.batches = Counter(
            "oix_audit_batches", "Batches committed to the store.", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "oix_audit_batch_seconds",
            "Time to write and commit one batch (one transaction).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.record_delay_seconds = Histogram(
            "oix_audit_record_delay_seconds",
            "From the Kafka timestamp of a batch's oldest record to the batch's commit.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "oix_audit_partition_lag",
            "Records on the broker not yet stored (high watermark minus stored position).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.log_events = Counter(
            "oix_audit_log_events",
            "Discontinuities noticed in broker logs (log_reset, offset_gap, offset_repeated).",
            ["kind"],
            registry=self.registry,
        )
        self.epochs_started = Counter(
            "oix_audit_epochs_started",
            "Epochs begun because a partition's log went backwards (rate() per minute: loops).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.stuck_seconds = Gauge(
            "oix_audit_partition_stuck_seconds",
            "How long a partition has not advanced while the broker's high watermark is past it.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "oix_audit_store_errors",
            "Failed store operations, by kind (unavailable, conflict).",
            ["kind"],
            registry=self.registry,
        )
        self.store_up = Gauge(
            "oix_audit_store_up",
            "1 while the store accepts writes, 0 while it is unavailable.",
            registry=self.registry,
        )
        self.unknown_schema = Counter(
            "oix_audit_unknown_schema_records",
            "Records stored raw (quarantine copies aside): their writer schema fingerprint "
            "names no released schema.",
            registry=self.registry,
        )
        self.quarantined = Counter(
            "oix_audit_quarantined",
            "Untrusted records copied to the quarantine topic, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.quarantine_pending = Gauge(
            "oix_audit_quarantine_pending",
            "Untrusted records stored but not yet copied to the quarantine topic.",
            registry=self.registry,
        )
        self.assigned_partitions = Gauge(
            "oix_audit_assigned_partitions",
            "Partitions assigned to this consumer.",
            registry=self.registry,
        )
        self.fetch_idle_seconds = Gauge(
            "oix_audit_fetch_idle_seconds",
            "How long since the consume loop last fetched (a hung loop shows here).",
            registry=self.registry,
        )
        self._followed: set[tuple[str, str]] = set()

    def observe(self, follower: Following) -> None:
        """Stuck times and the loop's idleness, from the follower as it is now.

        Called after every fetch and at every scrape, so that a loop that stopped
        fetching does not leave the gauges as they were when it stopped.
        """
        followed = set()
        for status in follower.status():
            labels = (status.partition.topic, str(status.partition.partition))
            followed.add(labels)
            self.stuck_seconds.labels(*labels).set(status.stuck_ms / 1000)
        for labels in self._followed - followed:
            for gauge in (self.lag, self.stuck_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._followed = followed
        self.assigned_partitions.set(len(followed))
        self.fetch_idle_seconds.set(follower.idle_ms() / 1000)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass
class Health:
    """What ``/healthz`` reports: healthy while consuming, the store accepts writes, none stuck.

    A partition is stuck when it has not advanced for ``stuck_after_ms`` while
    the broker's high watermark was past it; the consume loop is stuck when it
    has not fetched for as long. ``follower`` is asked at each request, so a
    loop that hangs shows too. Epochs begun per partition in the last minute
    are shown; more than ``max_epochs_per_minute`` on one is a loop (a broker
    restart begins one or two), and unhealthy.
    """

    consuming: bool = False
    store_available: bool = True
    problem: str = ""
    stuck_after_ms: int = 60_000
    follower: Following | None = None
    max_epochs_per_minute: int = 3
    """More epochs begun on one partition within a minute is a loop, not a broker restart."""
    clock: Callable[[], float] = time.monotonic
    _epochs: dict[str, deque[float]] = field(default_factory=dict, init=False, repr=False)

    def epoch_started(self, where: str) -> None:
        """A new epoch began on ``where`` (``topic[partition]``): its log went backwards."""
        self._epochs.setdefault(where, deque()).append(self.clock())

    def epochs_last_minute(self) -> dict[str, int]:
        """Epochs begun in the last minute, per partition that began any."""
        since = self.clock() - 60.0
        found = {}
        for where, times in list(self._epochs.items()):
            while times and times[0] <= since:
                times.popleft()
            if times:
                found[where] = len(times)
            else:
                del self._epochs[where]
        return found

    def stuck(self) -> list[str]:
        """What has not advanced for ``stuck_after_ms``: each ``topic[partition]``, or the loop."""
        follower = self.follower
        if follower is None:
            return []
        stuck = [
            f"{s.partition.topic}[{s.partition.partition}]"
            for s in follower.status()
            if s.stuck_ms >= self.stuck_after_ms
        ]
        if follower.idle_ms() >= self.stuck_after_ms:
            stuck.append("the consume loop (no fetch)")
        return stuck

    @property
    def ok(self) -> bool:
        """Healthy."""
        return self.report()[0]

    def body(self) -> bytes:
        """The JSON body of ``/healthz``."""
        return self.report()[1]

    def report(self) -> tuple[bool, bytes]:
        """Whether healthy, and the JSON body of ``/healthz`` saying so, from one look."""
        stuck = self.stuck()
        epochs = self.epochs_last_minute()
        looping = sorted(w for w, n in epochs.items() if n > self.max_epochs_per_minute)
        ok = self.consuming and self.store_available and not stuck and not looping
        problem = self.problem
        if stuck and not problem:
            problem = (
                f"not advancing for {self.stuck_after_ms} ms while the broker holds more: "
                + ", ".join(stuck)
            )
        if looping and not problem:
            problem = (
                f"more than {self.max_epochs_per_minute} epochs begun in the last minute on "
                + ", ".join(f"{w} ({epochs[w]})" for w in looping)
                + ": the broker keeps serving a log that looks replaced"
            )
        body = orjson.dumps(
            {
                "status": "ok" if ok else "unavailable",
                "problem": problem or None,
                "stuck_partitions": stuck,
                "epochs_last_minute": epochs,
            },
        )
        return ok, body


class MetricsServer:
    """Serves ``GET /metrics`` and ``GET /healthz`` on ``host:port`` (port 0 picks one)."""

    def __init__(self, metrics: AuditMetrics, health: Health, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """Base URL of the endpoint."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen; :attr:`port` is the bound port afterwards."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"OIX_AUDIT_METRICS_PORT: cannot listen on {self.host}:{self.port}: {reason}; "
                "set OIX_AUDIT_METRICS_PORT to a free port, or 0 for any free port"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics endpoint up", url=self.url)

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                if self.health.follower is not None:
                    self.metrics.observe(self.health.follower)
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, self.metrics.render()
            elif path == "/healthz":
                ok, body = self.health.report()
                status = "200 OK" if ok else "503 Service Unavailable"
                kind = "application/json"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"/metrics or /healthz\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
