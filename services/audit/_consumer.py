"""The audit consumer: every record of every OIX topic into the store, exactly once in effect.

The store is the source of truth for positions. Each batch goes into one
transaction that first checks the store's position of every partition it
touches (the hash of its last row) and then appends the records, chained to
it; a record is acknowledged to Kafka only after that commit, and only for
lag monitoring. On every assignment the consumer reloads the positions and
seeks there, so a crash at any instant loses nothing and stores nothing twice:
what was committed is skipped, what was not is read again.

Following the partitions, proving the continuity of their logs, opening
records in worker processes and batching them is the bus's
:class:`~services.bus.Follower`; this module is what the audit adds: where the
store stands (:meth:`AuditConsumer._positions`), how a batch is chained and
written (:meth:`AuditConsumer._write`), and what it reports (metrics, health).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import TopicPartition

from services.audit._chain import chain, kafka_facts
from services.audit._errors import StoreConflictError, StoreUnavailableError
from services.audit._events import EventKind, LogEvent
from services.audit._metrics import AuditMetrics, Health
from services.audit._opening import RecordOpener
from services.audit._quarantine import Quarantine
from services.audit._record import AuditRecord, encode_headers
from services.audit._settings import AuditSettings
from services.audit._store import AuditStore, Partition
from services.bus import (
    Batch,
    BatchLimits,
    Exchange,
    Follower,
    KafkaRecord,
    Position,
    Settings,
    Slice,
    bind_message,
    get_logger,
    unbind_message,
)

log = get_logger(__name__)
T = TypeVar("T")

_FIRST_BACKOFF_S = 0.1


def _facts(record: KafkaRecord) -> bytes:
    """The anchor digest: the same facts the store keeps of each row (see ``facts_of``)."""
    return kafka_facts(
        record.timestamp,
        record.timestamp_type,
        record.key,
        encode_headers(tuple(record.headers)),
        record.value,
    )


def _weight(record: AuditRecord) -> int:
    # What the batch holds in memory, near enough: the variable-size fields.
    return (
        len(record.value or b"")
        + len(record.record_key or b"")
        + len(record.headers)
        + len(record.decoded or "")
        + 256
    )


def _where(tp: TopicPartition) -> Partition:
    return (tp.topic, tp.partition)


class AuditConsumer:
    """Consumes every OIX topic into an :class:`~services.audit.AuditStore`.

    Call :meth:`run` with an event; setting it drains the current batch and
    returns.
    """

    def __init__(
        self,
        settings: Settings,
        audit: AuditSettings,
        exchange: Exchange,
        bootstrap: str,
        *,
        store: AuditStore,
        metrics: AuditMetrics | None = None,
        health: Health | None = None,
        on_committed: Callable[[Sequence[AuditRecord]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.exchange = exchange
        self.bootstrap = bootstrap
        self.store = store
        self.metrics = metrics or AuditMetrics()
        self.health = health or Health()
        self.on_committed = on_committed
        """Called with the records of each batch right after its commit (benchmarks, tests)."""
        self.group_id = audit.resolved_group(settings)
        self.stored = 0
        """Records this consumer committed to the store."""
        self._opener = RecordOpener(settings, exchange.opener, audit.open_processes)
        self._follower = Follower(
            settings,
            bootstrap,
            positions=self._positions,
            group_id=self.group_id,
            digest=_facts,
            confirm_reset_ms=audit.reset_confirm_ms,
            commit_interval_ms=audit.commit_interval_ms,
            name="oix-audit",
            fetch_max_wait_ms=audit.fetch_max_wait_ms,
            max_partition_fetch_bytes=audit.max_partition_fetch_bytes,
            fetch_max_bytes=audit.fetch_max_bytes,
            metadata_max_age_ms=audit.metadata_max_age_ms,
            session_timeout_ms=audit.session_timeout_ms,
            heartbeat_interval_ms=audit.heartbeat_interval_ms,
            rebalance_timeout_ms=audit.rebalance_timeout_ms,
            max_poll_interval_ms=audit.max_poll_interval_ms,
        )
        self._follower.subscribe(pattern=exchange.naming.party_prefix_pattern)
        self.assigned = self._follower.positioned
        """Set once partitions were assigned and positioned from the store."""
        self._heads: dict[Partition, bytes] = {}
        self._stored_next: dict[Partition, int | None] = {}
        self._stop = asyncio.Event()
        # Quarantine: copies of the untrusted records each committed batch holds.
        self.quarantine = Quarantine(
            settings, bootstrap, exchange.naming, store, self.metrics, owned=self._owned
        )

    def _owned(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._follower.assignment}

    @property
    def follower(self) -> Follower:
        """The partition follower (status, high watermarks)."""
        return self._follower

    @property
    def pending(self) -> int:
        """Records opened and waiting in the batch being filled."""
        return self._follower.pending

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain the current batch and return."""
        audit = self.audit
        self._stop = stop
        try:
            await self._opener.start()
            await self._follower.start()
        except BaseException:
            self._opener.close()
            raise
        self.health.consuming = True
        self.health.stuck_after_ms = audit.stuck_after_ms
        self.health.max_epochs_per_minute = audit.max_epochs_per_minute
        self.health.follower = self._follower
        log.info(
            "audit consumer started",
            group=self.group_id,
            pattern=self.exchange.naming.party_prefix_pattern,
            store=self.store.display_url,
        )
        try:
            await self.quarantine.start()
            await self._follower.consume(
                self._write,
                stop,
                open_records=self._opener.open,
                limits=BatchLimits(
                    audit.batch_max_records, audit.batch_max_bytes, audit.batch_max_ms
                ),
                weight=_weight,
                drain_timeout_s=audit.drain_timeout_s,
                on_fetched=self._fetched,
            )
        finally:
            self.health.consuming = False
            self.health.follower = None
            await self.quarantine.stop(self.audit.drain_timeout_s)
            await self._follower.stop()
            self._opener.close()
            log.info("audit consumer stopped", stored=self.stored)

    # -- where the store stands ------------------------------------------------------------

    async def _positions(
        self, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, Position]:
        """Each partition's position: its last stored row (what the follower asks on assignment)."""
        wanted = [_where(tp) for tp in partitions]
        heads = await self._retrying(lambda: self.store.heads(wanted))
        if heads is None:
            return {}  # stopping: leave them unread
        positions = {}
        for tp in partitions:
            head = heads[_where(tp)]
            self._heads[_where(tp)] = head.chain
            self._stored_next[_where(tp)] = head.next_offset
            positions[tp] = Position(head.epoch, head.next_offset, head.last_facts)
        return positions

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        backoff = _FIRST_BACKOFF_S
        while not self._stop.is_set():
            try:
                result = await operation()
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff, self.pending)
            else:
                self._store_up()
                return result
        return None

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, batch: Batch[AuditRecord]) -> None:
        """Chain the batch to the store's heads and append it, retrying while the store is down.

        Raises:
            StoreConflictError: the store moved past the heads (another writer); the
                follower repositions from the store.
        """
        expected = {_where(tp): self._heads[_where(tp)] for tp in batch.partitions()}
        backoff = _FIRST_BACKOFF_S
        while True:
            linked = chain(batch.items, expected, datetime.now(UTC))
            started = time.monotonic()
            try:
                await self.store.append(linked.records, batch.events, expected)
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff, len(batch))
                continue
            except StoreConflictError:
                self.metrics.store_errors.labels("conflict").inc()
                raise
            break
        elapsed = time.monotonic() - started
        self._stored(linked.records, batch.events, linked.heads, elapsed)

    async def _store_down(
        self, error: StoreUnavailableError, backoff: float, pending: int
    ) -> float:
        """Say the store is unavailable, wait ``backoff`` seconds; returns the next backoff."""
        self.metrics.store_errors.labels("unavailable").inc()
        self.metrics.store_up.set(0)
        self.health.store_available = False
        self.health.problem = str(error)
        log.warning(
            "audit store unavailable; holding the batch and retrying",
            error=str(error),
            records=pending,
            retry_in_s=backoff,
        )
        await asyncio.sleep(backoff)
        return min(backoff * 2, self.audit.retry_max_backoff_ms / 1000)

    def _store_up(self) -> None:
        """Say the store accepts work (again): health, the store_up gauge and the log agree."""
        if not self.health.store_available:
            log.info("audit store available again")
        self.health.store_available = True
        self.health.problem = ""
        self.metrics.store_up.set(1)

    def _stored(
        self,
        records: list[AuditRecord],
        events: list[LogEvent],
        heads: dict[Partition, bytes],
        elapsed: float,
    ) -> None:
        """A batch is committed: positions, metrics, logs, then ``on_committed``."""
        self._store_up()
        self._heads.update(heads)
        for event in events:
            if event.kind is EventKind.LOG_RESET:
                self._stored_next[(event.topic, event.partition)] = None
        for record in records:
            self._stored_next[(record.topic, record.kafka_partition)] = record.kafka_offset + 1
        self.stored += len(records)
        metrics = self.metrics
        metrics.batches.inc()
        metrics.batch_seconds.observe(elapsed)
        for status, count in Counter(r.signature_status for r in records).items():
            metrics.records_stored.labels(status).inc(count)
        if records:
            committed_ms = records[0].stored_at.timestamp() * 1000 + elapsed * 1000
            oldest = min(r.kafka_timestamp for r in records)
            metrics.record_delay_seconds.observe(max(0.0, (committed_ms - oldest) / 1000))
        self._log_flagged(records)
        log.debug("batch stored", records=len(records), events=len(events), seconds=elapsed)
        self.quarantine.committed(records)
        if self.on_committed is not None:
            self.on_committed(records)

    @staticmethod
    def _log_flagged(records: list[AuditRecord]) -> None:
        for record in records:
            if record.signature_status == "valid" and record.decode_error is None:
                continue
            bind_message(record.message_id, None)
            log.warning(
                "stored a record that cannot be trusted",
                topic=record.topic,
                partition=record.kafka_partition,
                offset=record.kafka_offset,
                signature_status=record.signature_status,
                problem=record.decode_error or record.signature_detail,
            )
            unbind_message()

    # -- what it reports -------------------------------------------------------------------

    def _fetched(self, slices: Sequence[Slice]) -> None:
        """After every fetch: count what was noticed, refresh lag and stuck gauges."""
        metrics = self.metrics
        for piece in slices:
            for event in piece.events:
                metrics.log_events.labels(str(event.kind)).inc()
                if event.kind is EventKind.LOG_RESET:
                    metrics.epochs_started.labels(event.topic, str(event.partition)).inc()
                    self.health.epoch_started(f"{event.topic}[{event.partition}]")
        for status in self._follower.status():
            tp = status.partition
            if status.highwater is not None:
                stored = self._stored_next.get(_where(tp)) or 0
                metrics.lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, status.highwater - stored)
                )
        metrics.observe(self._follower)
