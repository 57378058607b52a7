"""The audit consumer: every record of every OIX topic into the store, exactly once in effect.

The store is the source of truth for positions. Each batch goes into one
transaction that first checks the store's position of every partition it
touches (the hash of its last row) and then appends the records, chained to
it; a record is acknowledged to Kafka only after that commit, and only for lag
monitoring. On every assignment the consumer reloads the positions and seeks
there, so a crash at any instant loses nothing and stores nothing twice: what
was committed is skipped, what was not is read again.

One batch is written while the next is fetched and opened (decoded and
verified in worker processes), so Kafka, the CPUs and the database work at the
same time; a batch is due at a size or an age, so memory and latency stay
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from services.audit._batch import Batch
from services.audit._chain import chain, kafka_facts
from services.audit._errors import StoreConflictError, StoreUnavailableError
from services.audit._events import LogEvent
from services.audit._metrics import AuditMetrics, Health
from services.audit._opening import Admitted, RecordOpener
from services.audit._quarantine import Quarantine
from services.audit._record import AuditRecord, KafkaRecord, encode_headers
from services.audit._settings import AuditSettings
from services.audit._store import AuditStore, Partition
from services.audit._tracker import PartitionTracker
from services.bus import Exchange, Settings, bind_message, consumer, get_logger, unbind_message

log = get_logger(__name__)
T = TypeVar("T")

_IDLE_POLL_MS = 200
_OPENING_POLL_MS = 5
_MAX_OPENING = 2
_FIRST_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class _Opening:
    """Admitted records on their way through the worker processes.

    The log events noticed with them travel along: records and events join the
    batch in the order they were fetched.
    """

    records: list[Admitted]
    work: list[tuple[TopicPartition, PartitionTracker, int]]
    task: asyncio.Future[list[AuditRecord]]
    events: list[tuple[TopicPartition, PartitionTracker, LogEvent]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _facts(record: KafkaRecord) -> bytes:
    return kafka_facts(
        record.timestamp,
        record.timestamp_type,
        record.key,
        encode_headers(tuple(record.headers)),
        record.value,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: AuditConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)


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
        self.assigned = asyncio.Event()
        """Set once partitions were assigned and positioned from the store."""
        self._consumer: AIOKafkaConsumer | None = None
        self._opener = RecordOpener(settings, exchange.opener, audit.open_processes)
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        self._heads: dict[Partition, bytes] = {}
        self._stored_next: dict[Partition, int | None] = {}
        self._to_commit: dict[Partition, int] = {}
        self._batch = self._new_batch()
        self._opening: deque[_Opening] = deque()
        self._flushing: asyncio.Task[None] | None = None
        self._stopping = False
        # Quarantine: copies of the untrusted records each committed batch holds.
        self.quarantine = Quarantine(
            settings, bootstrap, exchange.naming, store, self.metrics, owned=self._owned
        )

    def _owned(self) -> set[Partition]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def _new_batch(self) -> Batch:
        return Batch(
            self.audit.batch_max_records, self.audit.batch_max_bytes, self.audit.batch_max_ms
        )

    @property
    def kafka(self) -> AIOKafkaConsumer:
        """The Kafka consumer (while running)."""
        assert self._consumer is not None, "the audit consumer is not running"
        return self._consumer

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain the current batch and return."""
        audit = self.audit
        try:
            await self._opener.start()
        except BaseException:
            self._opener.close()
            raise
        self._consumer = consumer(
            self.settings,
            self.bootstrap,
            group_id=self.group_id,
            fetch_max_wait_ms=audit.fetch_max_wait_ms,
            max_partition_fetch_bytes=audit.max_partition_fetch_bytes,
            fetch_max_bytes=audit.fetch_max_bytes,
            metadata_max_age_ms=audit.metadata_max_age_ms,
            session_timeout_ms=audit.session_timeout_ms,
            heartbeat_interval_ms=audit.heartbeat_interval_ms,
            rebalance_timeout_ms=audit.rebalance_timeout_ms,
            max_poll_interval_ms=audit.max_poll_interval_ms,
        )
        self._consumer.subscribe(
            pattern=self.exchange.naming.party_prefix_pattern, listener=_Listener(self)
        )
        try:
            await self._consumer.start()
        except BaseException:
            self._opener.close()
            raise
        self.health.consuming = True
        log.info(
            "audit consumer started",
            group=self.group_id,
            pattern=self.exchange.naming.party_prefix_pattern,
            store=self.store.display_url,
        )
        committer = asyncio.create_task(self._commit_loop(), name="oix-audit-commit")
        try:
            await self.quarantine.start()
            while not stop.is_set():
                await self._step()
            self._stopping = True
            await self._drain()
        finally:
            self._stopping = True
            self.health.consuming = False
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            for pending in self._opening:
                pending.task.cancel()
            self._opening.clear()
            if self._flushing is not None and not self._flushing.done():
                self._flushing.cancel()
                with contextlib.suppress(BaseException):
                    await self._flushing
            await self.quarantine.stop(self.audit.drain_timeout_s)
            await self._consumer.stop()
            self._opener.close()
            log.info("audit consumer stopped", stored=self.stored)

    async def _drain(self) -> None:
        """Write what is pending, within the drain timeout; whatever is left is read again later."""
        try:
            async with asyncio.timeout(self.audit.drain_timeout_s):
                while self._opening:
                    await self._take_opened(wait=True)
                await self._finish_flush()
                if not self._batch.empty:
                    self._start_flush()
                    await self._finish_flush()
        except TimeoutError:
            log.warning(
                "drain timed out; unstored records will be read again at the next start",
                pending=len(self._batch),
            )
        await self._commit_to_kafka()

    # -- the loop --------------------------------------------------------------------------

    async def _step(self) -> None:
        kafka = self.kafka
        if self._batch.due:
            await self._finish_flush()
            if self._batch.due:
                self._start_flush()
        remaining = self._batch.remaining_ms()
        timeout = _IDLE_POLL_MS if remaining is None else min(remaining, _IDLE_POLL_MS)
        if self._opening:
            timeout = min(timeout, _OPENING_POLL_MS)
        # Whole fetch responses only: a partial one would be dropped at the re-anchoring
        # seek and fetched again. fetch_max_bytes bounds what one response holds.
        fetched = await kafka.getmany(timeout_ms=timeout)
        now = _now_ms()
        if fetched:
            await self._admit(fetched, now)
        self._observe(now)
        await self._apply_seeks()
        await self._take_opened(wait=len(self._opening) > _MAX_OPENING)
        if self._flushing is not None and self._flushing.done():
            await self._finish_flush()

    async def _admit(self, fetched: dict[TopicPartition, list[Any]], now: int) -> None:
        work: list[tuple[TopicPartition, PartitionTracker, int]] = []
        admitted: list[Admitted] = []
        for tp, records in fetched.items():
            tracker = self._trackers.get(tp)
            if tracker is None:
                continue
            before = len(admitted)
            for record in records:
                if tracker.admit(record.offset, partial(_facts, record), now):
                    admitted.append((record, tracker.epoch))
                elif tracker.pending_seek is not None:
                    break
            tracker.end_slice()
            if len(admitted) > before:
                work.append((tp, tracker, len(admitted) - before))
        events = self._take_events(fetched)
        # Re-anchor now, so that the next fetches run while these records are opened.
        await self._apply_seeks()
        if admitted or events:
            task = asyncio.ensure_future(self._opener.open(admitted))
            self._opening.append(_Opening(admitted, work, task, events))

    async def _take_opened(self, *, wait: bool) -> None:
        """Move opened records into the batch, oldest first (so each partition stays in order)."""
        while self._opening:
            head = self._opening[0]
            if not head.task.done():
                if not wait:
                    return
                await asyncio.wait({head.task})
                wait = False
            self._opening.popleft()
            opened = head.task.result()
            start = 0
            for tp, tracker, count in head.work:
                chunk = opened[start : start + count]
                start += count
                # A rebalance while the records were opened replaced the tracker:
                # the new one positioned the partition from the store; drop these.
                if self._trackers.get(tp) is tracker:
                    self._batch.add(chunk)
                    self._log_flagged(chunk)
            for tp, tracker, event in head.events:
                if self._trackers.get(tp) is tracker:
                    self._batch.add_events([event])
                    self.metrics.log_events.labels(str(event.kind)).inc()

    def _observe(self, now: int) -> None:
        kafka = self.kafka
        assignment = kafka.assignment()
        for tp, tracker in self._trackers.items():
            if tp not in assignment:
                continue
            highwater = kafka.highwater(tp)
            tracker.observe_highwater(highwater, kafka.last_poll_timestamp(tp), now)
            if highwater is not None:
                stored = self._stored_next.get((tp.topic, tp.partition)) or 0
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - stored))
        events = self._take_events(list(self._trackers))
        if events:
            done: asyncio.Future[list[AuditRecord]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            self._opening.append(_Opening([], [], done, events))

    def _take_events(
        self, partitions: Iterable[TopicPartition]
    ) -> list[tuple[TopicPartition, PartitionTracker, LogEvent]]:
        found: list[tuple[TopicPartition, PartitionTracker, LogEvent]] = []
        for tp in partitions:
            tracker = self._trackers.get(tp)
            if tracker is not None:
                found.extend((tp, tracker, event) for event in tracker.take_events())
        return found

    async def _apply_seeks(self) -> None:
        """Move partitions where their trackers ask.

        The move itself and telling the tracker happen with no ``await`` in
        between: records fetched meanwhile are refused by the tracker (a seek
        is pending) and read again from the new position, never skipped.
        """
        kafka = self.kafka
        starts: dict[TopicPartition, int] = {}
        need_start = [
            tp
            for tp, tracker in self._trackers.items()
            if tracker.pending_seek is not None and tracker.pending_seek.offset is None
        ]
        if need_start:
            try:
                starts = await kafka.beginning_offsets(need_start)
            except KafkaError as exc:
                log.warning("cannot read log start offsets; retrying", error=repr(exc))
                return
        assignment = kafka.assignment()
        for tp, tracker in self._trackers.items():
            seek = tracker.pending_seek
            if seek is None or tp not in assignment:
                continue
            offset = seek.offset if seek.offset is not None else starts.get(tp)
            if offset is None:
                continue  # asked for while the start offsets were read; the next round does it
            kafka.seek(tp, offset)
            tracker.seeked(_now_ms())

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

    # -- writing ---------------------------------------------------------------------------

    def _start_flush(self) -> None:
        assert self._flushing is None
        batch, self._batch = self._batch, self._new_batch()
        expected = {p: self._heads[p] for p in batch.partitions()}
        self._flushing = asyncio.create_task(self._write(batch, expected), name="oix-audit-write")

    async def _finish_flush(self) -> None:
        task = self._flushing
        if task is None:
            return
        try:
            await task
        except StoreConflictError as exc:
            self.metrics.store_errors.labels("conflict").inc()
            log.warning("store position moved under this consumer; resynchronising", error=str(exc))
            await self._resync()
        finally:
            if self._flushing is task:
                self._flushing = None

    async def _write(self, batch: Batch, expected: dict[Partition, bytes]) -> None:
        backoff = _FIRST_BACKOFF_S
        while True:
            linked = chain(batch.records, expected, datetime.now(UTC))
            started = time.monotonic()
            try:
                await self.store.append(linked.records, batch.events, expected)
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff, len(batch))
                continue
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
        self._store_up()
        self._heads.update(heads)
        for event in events:
            self._stored_next[(event.topic, event.partition)] = None
        for record in records:
            where = (record.topic, record.kafka_partition)
            self._stored_next[where] = record.kafka_offset + 1
            self._to_commit[where] = record.kafka_offset + 1
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
        log.debug("batch stored", records=len(records), events=len(events), seconds=elapsed)
        self.quarantine.committed(records)
        if self.on_committed is not None:
            self.on_committed(records)

    # -- positions -------------------------------------------------------------------------

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget what is pending for ``revoked``: it was never acknowledged."""
        parts = {(tp.topic, tp.partition) for tp in revoked}
        dropped = self._batch.drop(parts)
        for tp in revoked:
            self._trackers.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp.topic, str(tp.partition))
        self.metrics.assigned_partitions.set(len(self._trackers))
        log.info("partitions revoked", partitions=len(revoked), dropped_pending=dropped)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Position ``assigned`` partitions where the store says, after the write in flight."""
        task = self._flushing
        if task is not None:
            # Its outcome only matters for where the store stands, read next.
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        await self._adopt(assigned)
        self.assigned.set()

    async def _resync(self) -> None:
        self._batch.drop()
        for pending in self._opening:
            pending.task.cancel()
        self._opening.clear()
        self._trackers.clear()
        await self._adopt(self.kafka.assignment())

    async def _adopt(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        partitions = sorted((tp.topic, tp.partition) for tp in assigned)
        heads = await self._retrying(lambda: self.store.heads(partitions))
        if heads is None:
            return
        for tp in assigned:
            head = heads[(tp.topic, tp.partition)]
            self._heads[(tp.topic, tp.partition)] = head.chain
            self._stored_next[(tp.topic, tp.partition)] = head.next_offset
            self._trackers[tp] = PartitionTracker(
                tp.topic, tp.partition, head, confirm_reset_ms=self.audit.reset_confirm_ms
            )
        self.metrics.assigned_partitions.set(len(self._trackers))
        await self._apply_seeks()
        log.info("partitions assigned and positioned from the store", partitions=len(assigned))

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        backoff = _FIRST_BACKOFF_S
        while not self._stopping:
            try:
                result = await operation()
            except StoreUnavailableError as exc:
                backoff = await self._store_down(exc, backoff, len(self._batch))
            else:
                self._store_up()
                return result
        return None

    # -- Kafka commits, for lag monitoring only ------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.audit.commit_interval_ms / 1000)
            await self._commit_to_kafka()

    async def _commit_to_kafka(self) -> None:
        assigned = self.kafka.assignment()
        offsets = {
            TopicPartition(*where): OffsetAndMetadata(offset, "")
            for where, offset in self._to_commit.items()
            if TopicPartition(*where) in assigned
        }
        self._to_commit.clear()
        if not offsets:
            return
        try:
            await self.kafka.commit(offsets)
        except KafkaError as exc:
            log.info("Kafka offset commit failed; it only feeds lag monitoring", error=repr(exc))
            for tp, meta in offsets.items():
                self._to_commit.setdefault((tp.topic, tp.partition), meta.offset)
