"""The subscriber: what the agreement releases to one agency, into its store.

It follows exactly the topics the agreement releases to the agency (its
partners' feeds and their bilateral channels to it) in one consumer group
per agency, so the agency's replicas share the partitions. The store is the
source of truth for positions: each batch is written with its positions in
one transaction, only if the stored positions are still the ones the batch
was read from. A crash at any moment loses nothing and stores nothing twice.

Every record is decoded and verified (in worker processes) and checked
again against the agreement: only a trusted report released to this agency
becomes a report; anything else is an alert, never shown as a report. A
broker log that went backwards (the memory-only local broker after a
restart), a gap or an offset served twice are alerts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from aiokafka import TopicPartition

from services.bus import (
    Admitted,
    Batch,
    BatchLimits,
    Exchange,
    Follower,
    LogEvent,
    LogEventKind,
    OpenerPool,
    Position,
    Settings,
    Slice,
    get_logger,
)
from services.liaison._errors import StoreConflictError, StoreUnavailableError
from services.liaison._handling import release_problem
from services.liaison._metrics import LiaisonMetrics
from services.liaison._received import Received, open_one
from services.liaison._settings import LiaisonSettings
from services.liaison._store import (
    AlertDraft,
    Deliveries,
    Delivery,
    Incoming,
    LiaisonStore,
    Partition,
    WriteBatch,
    Written,
)

log = get_logger(__name__)
T = TypeVar("T")
_FIRST_BACKOFF_S = 0.1
GAUGES_EVERY_S = 1.0
"""How often the lag and stuck gauges are refreshed (Prometheus scrapes far less often)."""


class Item(NamedTuple):
    """One opened record with its coordinates."""

    received: Received
    topic: str
    partition: int
    offset: int
    epoch: int


def _weight(item: Item) -> int:
    facts = item.received.facts
    return 512 + (len(facts.content) if facts is not None else 0)


def _where(tp: TopicPartition) -> Partition:
    return (tp.topic, tp.partition)


class LiaisonConsumer:
    """Consumes what is released to ``agency`` into a :class:`LiaisonStore`."""

    def __init__(
        self,
        settings: Settings,
        liaison: LiaisonSettings,
        exchange: Exchange,
        agency: str,
        bootstrap: str,
        *,
        store: LiaisonStore,
        metrics: LiaisonMetrics | None = None,
        deliveries: Deliveries | None = None,
        on_committed: Callable[[Written], None] | None = None,
    ) -> None:
        self.settings = settings
        self.liaison = liaison
        self.exchange = exchange
        self.agency = agency
        self.store = store
        self.metrics = metrics or LiaisonMetrics()
        self.deliveries: Deliveries = deliveries or _no_webhooks
        self.on_committed = on_committed
        self.topics = exchange.router.readable_by(agency)
        self.group_id = liaison.resolved_group(settings, agency)
        self.default_retention = exchange.agreement.defaults.retention_days
        self.consuming = False
        self.stored = 0
        self._known: dict[Partition, Position | None] = {}
        self._pool: OpenerPool[Received] = OpenerPool(
            settings, open_one, liaison.open_processes, exchange.opener
        )
        self._follower = Follower(
            settings,
            bootstrap,
            positions=self._positions,
            group_id=self.group_id,
            confirm_reset_ms=liaison.reset_confirm_ms,
            commit_interval_ms=liaison.commit_interval_ms,
            name=f"oix-liaison-{agency}",
            fetch_max_wait_ms=liaison.fetch_max_wait_ms,
            max_partition_fetch_bytes=liaison.max_partition_fetch_bytes,
            metadata_max_age_ms=liaison.metadata_max_age_ms,
            session_timeout_ms=liaison.session_timeout_ms,
            heartbeat_interval_ms=liaison.heartbeat_interval_ms,
            rebalance_timeout_ms=liaison.rebalance_timeout_ms,
        )
        self._follower.subscribe(topics=self.topics)
        self.positioned = self._follower.positioned
        """Set once partitions were assigned and positioned from the store."""
        self._stop = asyncio.Event()
        self._watched: set[TopicPartition] = set()
        self._gauges_at = -GAUGES_EVERY_S

    @property
    def follower(self) -> Follower:
        """The partition follower (status, high watermarks)."""
        return self._follower

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain the current batch and return."""
        liaison = self.liaison
        self._stop = stop
        try:
            await self._pool.start()
            await self._follower.start()
        except BaseException:
            self._pool.close()
            raise
        self.consuming = True
        log.info(
            "liaison consumer started",
            agency=self.agency,
            group=self.group_id,
            topics=len(self.topics),
        )
        try:
            await self._follower.consume(
                self._write,
                stop,
                open_records=self._open,
                limits=BatchLimits(
                    liaison.batch_max_records, liaison.batch_max_bytes, liaison.batch_max_ms
                ),
                weight=_weight,
                drain_timeout_s=liaison.drain_timeout_s,
                on_fetched=self._fetched,
            )
        finally:
            self.consuming = False
            await self._follower.stop()
            self._pool.close()
            log.info("liaison consumer stopped", agency=self.agency, stored=self.stored)

    # -- positions -------------------------------------------------------------------------

    async def _positions(
        self, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, Position]:
        wanted = [_where(tp) for tp in partitions]
        stored = await self._retrying(lambda: self.store.positions(self.agency, wanted))
        if stored is None:
            return {}
        self._known.update(stored)
        return {tp: stored[_where(tp)] or Position.start() for tp in partitions}

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        backoff = _FIRST_BACKOFF_S
        while not self._stop.is_set():
            try:
                return await operation()
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff)
        return None

    async def _store_down(self, error: StoreUnavailableError, backoff: float) -> float:
        self.metrics.store_errors.labels("unavailable").inc()
        log.warning("liaison store unavailable; retrying", error=str(error), retry_in_s=backoff)
        await asyncio.sleep(backoff)
        return min(backoff * 2, self.liaison.retry_max_backoff_ms / 1000)

    # -- opening and classifying -----------------------------------------------------------

    async def _open(self, admitted: list[Admitted]) -> list[Item]:
        opened = await self._pool.open([(r.value, tuple(r.headers)) for r, _ in admitted])
        return [
            Item(received, record.topic, record.partition, record.offset, epoch)
            for (record, epoch), received in zip(admitted, opened, strict=True)
        ]

    def _classify(self, item: Item) -> Incoming | AlertDraft:
        received = item.received
        facts = received.facts
        where = f"{item.topic}/{item.partition}/{item.epoch}/{item.offset}"
        if facts is None:
            return AlertDraft(
                alert_id=f"untrusted/{where}",
                kind="untrusted",
                detail=f"{received.signature_status}: {received.problem}",
                topic=item.topic,
                partition=item.partition,
                epoch=item.epoch,
                offset=item.offset,
                message_id=received.claimed_message_id,
                originator=received.claimed_originator,
                report_type=received.claimed_type,
                signature_status=received.signature_status,
            )
        problem = release_problem(
            self.exchange.agreement,
            agency=self.agency,
            topic=self.exchange.naming.parse(item.topic),
            originator=facts.originator,
            report_type=facts.report_type,
            releasable_to=facts.releasable_to,
        )
        if problem:
            return AlertDraft(
                alert_id=f"not_released/{where}",
                kind="not_released",
                detail=problem,
                topic=item.topic,
                partition=item.partition,
                epoch=item.epoch,
                offset=item.offset,
                message_id=facts.message_id,
                originator=facts.originator,
                report_type=facts.report_type,
                signature_status=received.signature_status,
            )
        if facts.retention_days is None:
            facts = facts._replace(retention_days=self.default_retention)
        return Incoming(
            facts,
            item.topic,
            item.partition,
            item.offset,
            item.epoch,
            received.signature_status,
            received.key_id,
            received.value_sha256,
        )

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, batch: Batch[Item]) -> None:
        """Store a batch with its positions, retrying while the store is down.

        Raises:
            StoreConflictError: another replica stored these partitions' records first.
        """
        work = WriteBatch()
        for item in batch.items:
            found = self._classify(item)
            if isinstance(found, Incoming):
                work.reports.append(found)
            else:
                work.alerts.append(found)
        work.alerts.extend(_alert_of(event) for event in batch.events)
        work.positions = {_where(tp): p for tp, p in batch.positions.items()}
        work.expected = {where: self._known.get(where) for where in work.positions}
        backoff = _FIRST_BACKOFF_S
        while True:
            started = time.monotonic()
            try:
                written = await self.store.write(self.agency, work, self.deliveries)
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff)
                continue
            except StoreConflictError:
                self.metrics.store_errors.labels("conflict").inc()
                raise
            break
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self._known.update(work.positions)
        self._committed(work, written)

    def _committed(self, work: WriteBatch, written: Written) -> None:
        metrics = self.metrics
        self.stored += len(written.stored)
        metrics.messages.labels("stored").inc(len(written.stored))
        if written.duplicates:
            metrics.messages.labels("duplicate").inc(written.duplicates)
        metrics.webhooks_queued.inc(written.deliveries)
        for kind, count in Counter(
            a.kind for a in work.alerts if a.kind in {"untrusted", "not_released"}
        ).items():
            metrics.messages.labels(kind).inc(count)
        for alert in written.alerts:
            if alert.kind == "not_released":
                metrics.policy_violations.inc()
                log.error(
                    "policy violation: a record not released to this agency reached it; not shown",
                    agency=self.agency,
                    topic=alert.topic,
                    partition=alert.partition,
                    offset=alert.offset,
                    message_id=alert.message_id,
                    originator=alert.originator,
                    problem=alert.detail,
                )
            elif alert.kind == "untrusted":
                log.warning(
                    "untrusted record: shown as an alert, never as a report",
                    topic=alert.topic,
                    partition=alert.partition,
                    offset=alert.offset,
                    problem=alert.detail,
                )
            elif alert.kind == str(LogEventKind.LOG_RESET):
                log.error("broker log went backwards (broker reset?)", detail=alert.detail)
        if self.on_committed is not None:
            self.on_committed(written)

    def _fetched(self, slices: Sequence[Slice]) -> None:
        metrics = self.metrics
        for piece in slices:
            for event in piece.events:
                metrics.log_events.labels(str(event.kind)).inc()
        # The loop fetches hundreds of times a second under steady traffic; walking every
        # followed partition each time cost an eighth of the event loop at 500 reports/s.
        now = time.monotonic()
        if now - self._gauges_at < GAUGES_EVERY_S:
            return
        self._gauges_at = now
        followed = set()
        for status in self._follower.status():
            tp = status.partition
            followed.add(tp)
            labels = (tp.topic, str(tp.partition))
            if status.lag is not None:
                metrics.lag.labels(*labels).set(status.lag)
            metrics.stuck_seconds.labels(*labels).set(status.stuck_ms / 1000)
        for tp in self._watched - followed:
            for gauge in (metrics.lag, metrics.stuck_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        self._watched = followed


def _no_webhooks(_facts: object, _status: str) -> list[Delivery]:
    return []


def _alert_of(event: LogEvent) -> AlertDraft:
    first = event.first_offset
    return AlertDraft(
        alert_id=event.event_id,
        kind=str(event.kind),
        detail=event.describe(),
        topic=event.topic,
        partition=event.partition,
        epoch=event.epoch,
        offset=first if first is not None else event.last_offset,
    )
