"""The quarantine: one topic where an operator sees every record the bus could not trust.

The audit consumer reads every topic, so it is the one that copies each record
it cannot trust (undecodable, unsigned, forged, signed with an unknown key,
written with a schema version not released) to ``<prefix>.quarantine``: the
original value and headers untouched, then headers naming where it came from
and why, keyed by those coordinates. A record read from the quarantine topic
itself is stored like any other and never copied again.

Exactly once in effect, without an idempotent producer (the local broker has
none) and without a table of its own: the audit consumer stores the
quarantine topic too, so a stored quarantine record whose key names a
record's coordinates *is* the proof that the record was copied. A copy is
sent only after the batch holding its record is committed to the store. When
this consumer comes to own a partition (start, rebalance), it first reads the
part of the quarantine topic the store has not caught up with yet, up to the
high watermark of a fetch response (``end_offsets`` is wrong on the local
broker), adds the keys the store holds, and then copies the partition's
untrusted records that neither names. Sends, this catching up and the
bookkeeping run in one task, so a copy in flight is never taken for a missing
one; a partition this consumer no longer owns is left to its new owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.audit._errors import StoreUnavailableError
from services.audit._metrics import AuditMetrics
from services.audit._record import AuditRecord, coordinates_key, reason_of
from services.audit._store import AuditStore, Partition
from services.bus import (
    H_QUARANTINE_DETAIL,
    H_QUARANTINE_EPOCH,
    H_QUARANTINE_OFFSET,
    H_QUARANTINE_PARTITION,
    H_QUARANTINE_REASON,
    H_QUARANTINE_TIMESTAMP,
    H_QUARANTINE_TOPIC,
    Settings,
    TopicNaming,
    client_options,
    get_logger,
    start_producer,
    wait_set,
)

log = get_logger(__name__)

_POLL_S = 0.5
_FIRST_BACKOFF_S = 0.2
_MAX_BACKOFF_S = 5.0
_TAIL_TIMEOUT_S = 30.0


def _detail(record: AuditRecord) -> str:
    parts = [p for p in (record.signature_detail, record.decode_error) if p]
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class QuarantineCopy:
    """What goes to the quarantine topic for one untrusted record."""

    source: Partition
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str


def quarantine_copy(record: AuditRecord) -> QuarantineCopy:
    """The copy of ``record``: value and headers as they arrived, then where from and why."""
    reason = reason_of(record)
    headers = [
        *record.header_pairs(),
        (H_QUARANTINE_TOPIC, record.topic.encode()),
        (H_QUARANTINE_PARTITION, str(record.kafka_partition).encode()),
        (H_QUARANTINE_OFFSET, str(record.kafka_offset).encode()),
        (H_QUARANTINE_EPOCH, str(record.epoch).encode()),
        (H_QUARANTINE_TIMESTAMP, str(record.kafka_timestamp).encode()),
        (H_QUARANTINE_REASON, reason.encode()),
        (H_QUARANTINE_DETAIL, _detail(record).encode()),
    ]
    return QuarantineCopy(
        (record.topic, record.kafka_partition),
        coordinates_key(record.topic, record.kafka_partition, record.epoch, record.kafka_offset),
        record.value,
        headers,
        reason,
    )


class Quarantine:
    """Copies the untrusted records the audit consumer committed to the quarantine topic.

    The consumer calls :meth:`committed` with each committed batch (cheap: it
    only queues), and :meth:`start` / :meth:`stop` around its run; ``owned``
    says which partitions it owns at the moment.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        naming: TopicNaming,
        store: AuditStore,
        metrics: AuditMetrics,
        *,
        owned: Callable[[], Iterable[Partition]],
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = naming.quarantine
        self.store = store
        self.metrics = metrics
        self.owned = owned
        self.copied = 0
        """Copies this consumer wrote to the quarantine topic."""
        self._pending: dict[bytes, QuarantineCopy] = {}
        self._caught_up: set[Partition] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        """Every partition owned now was checked against the quarantine topic since it came."""
        owned = {p for p in self.owned() if p[0] != self.topic}
        return bool(owned) and owned <= self._caught_up

    @property
    def pending(self) -> int:
        """Untrusted records committed to the store whose copy is not acknowledged yet."""
        return len(self._pending)

    async def start(self) -> None:
        """Start the producer and the task that copies."""
        self._producer = await start_producer(self.settings, self.bootstrap)
        self._task = asyncio.create_task(self._run(), name="oix-audit-quarantine")

    async def stop(self, timeout: float) -> None:
        """Copy what is pending within ``timeout`` seconds; the rest is copied at the next start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # wait(), not wait_for(): the copier's own end (even a CancelledError out of
            # a Kafka client) is logged here, never raised into the consumer's shutdown.
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task})
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.error("the quarantine copier failed", error=repr(self._task.exception()))
            self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._pending:
            log.warning(
                "stopping with records not copied to the quarantine; the next start copies them",
                pending=len(self._pending),
            )

    def committed(self, records: Sequence[AuditRecord]) -> None:
        """Queue a copy of every untrusted record of a batch just committed to the store."""
        queued = unknown = 0
        for record in records:
            if record.trusted or record.topic == self.topic:
                continue  # a quarantine record is stored like any record, never copied again
            if record.unknown_schema:
                unknown += 1
            copy = quarantine_copy(record)
            self._pending.setdefault(copy.key, copy)
            queued += 1
        if unknown:
            self.metrics.unknown_schema.inc(unknown)
        if queued:
            self.metrics.quarantine_pending.set(len(self._pending))
            self._wake.set()

    # -- the copying task ------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF_S
        while True:
            await wait_set(self._wake, _POLL_S)
            self._wake.clear()
            try:
                await self._round()
            except (KafkaError, StoreUnavailableError, OSError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                    raise
                # Not a cancellation of this task: aiokafka can raise its fetch task's
                # CancelledError when a broker connection breaks. Retried like the rest,
                # or the copier would end silently and copy nothing again.
                log.warning(
                    "cannot copy to the quarantine now; retrying",
                    error=repr(exc),
                    pending=len(self._pending),
                    retry_in_s=backoff,
                )
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            backoff = _FIRST_BACKOFF_S
            if self._stopping:
                return

    async def _round(self) -> None:
        owned = {p for p in self.owned() if p[0] != self.topic}
        self._caught_up &= owned
        for key in [k for k, c in self._pending.items() if c.source not in owned]:
            del self._pending[key]  # no longer ours: the new owner catches up and copies
        new = owned - self._caught_up
        if new:
            await self._catch_up(new)
            self._caught_up |= new
        await self._send()
        self.metrics.quarantine_pending.set(len(self._pending))

    async def _catch_up(self, partitions: set[Partition]) -> None:
        """Queue the untrusted records of ``partitions`` that no quarantine record names."""
        copied = await self._tail_keys() | await self.store.keys(self.topic)
        found = 0
        for record in await self.store.untrusted(partitions):
            if record.topic == self.topic:
                continue
            copy = quarantine_copy(record)
            if copy.key not in copied and copy.key not in self._pending:
                self._pending[copy.key] = copy
                found += 1
        if found:
            # Only a run that stopped between a commit and the copies leaves these.
            log.warning(
                "untrusted records stored earlier were never copied to the quarantine; copying",
                records=found,
                partitions=len(partitions),
            )

    async def _tail_keys(self) -> set[bytes]:
        """Keys of the quarantine records on the broker that the store does not hold yet.

        Reads each quarantine partition from the store's position to the high
        watermark a fetch response gives.
        """
        reader = AIOKafkaConsumer(
            **client_options(self.settings, self.bootstrap),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        try:
            # start() inside: a reader that failed to start still holds connections to close.
            await reader.start()
            await reader.topics()  # fresh metadata
            numbers = reader.partitions_for_topic(self.topic)
            if not numbers:
                return set()  # nothing was ever copied
            tps = [TopicPartition(self.topic, n) for n in sorted(numbers)]
            heads = await self.store.heads([(tp.topic, tp.partition) for tp in tps])
            reader.assign(tps)
            for tp in tps:
                start = heads[(tp.topic, tp.partition)].next_offset
                if start is None:
                    await reader.seek_to_beginning(tp)
                else:
                    reader.seek(tp, start)
            return await _read_to_highwater(reader, tps)
        finally:
            await reader.stop()

    async def _send(self) -> None:
        batch = list(self._pending.values())
        if not batch:
            return
        producer = self._producer
        assert producer is not None, "the quarantine is not started"
        futures = [
            await producer.send(self.topic, c.value, key=c.key, headers=c.headers) for c in batch
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failure: BaseException | None = None
        for copy, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                continue
            self._pending.pop(copy.key, None)
            self.copied += 1
            self.metrics.quarantined.labels(copy.reason).inc()
        if failure is not None:
            raise failure


def _cancelled_from_outside() -> bool:
    """Whether the running task was asked to stop (rather than handed a library's cancel)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _read_to_highwater(reader: AIOKafkaConsumer, tps: list[TopicPartition]) -> set[bytes]:
    keys: set[bytes] = set()
    deadline = time.monotonic() + _TAIL_TIMEOUT_S
    while True:
        fetched = await reader.getmany(*tps, timeout_ms=100)
        for records in fetched.values():
            keys.update(r.key for r in records if r.key is not None)
        behind = False
        for tp in tps:
            highwater = reader.highwater(tp)
            if highwater is None or await reader.position(tp) < highwater:
                behind = True
        if not behind:
            return keys
        if time.monotonic() > deadline:
            raise KafkaError(
                f"could not read {tps[0].topic} up to its high watermark in {_TAIL_TIMEOUT_S:.0f} s"
            )
