"""A batch of records waiting to be written: bounded in records, bytes and age."""

from __future__ import annotations

import time
from collections.abc import Iterable

from services.audit._events import LogEvent
from services.audit._record import AuditRecord

Partition = tuple[str, int]


def _weight(record: AuditRecord) -> int:
    # What the batch holds in memory, near enough: the variable-size fields.
    return (
        len(record.value or b"")
        + len(record.record_key or b"")
        + len(record.headers)
        + len(record.decoded or "")
        + 256
    )


class Batch:
    """Records and log events that go into one transaction.

    It is due when it holds ``max_records`` records or ``max_bytes`` bytes, or
    when its first entry has waited ``max_ms``: memory and latency both stay
    bounded whatever the traffic.
    """

    def __init__(self, max_records: int, max_bytes: int, max_ms: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_ms = max_ms
        self.records: list[AuditRecord] = []
        self.events: list[LogEvent] = []
        self.size = 0
        self.opened_at: float | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def empty(self) -> bool:
        """Nothing to write."""
        return not self.records and not self.events

    def _open(self) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()

    def add(self, records: Iterable[AuditRecord]) -> None:
        """Append records (of any partitions, each partition's in offset order)."""
        for record in records:
            self.records.append(record)
            self.size += _weight(record)
        if self.records:
            self._open()

    def add_events(self, events: Iterable[LogEvent]) -> None:
        """Append log events."""
        before = len(self.events)
        self.events.extend(events)
        if len(self.events) > before:
            self._open()

    @property
    def full(self) -> bool:
        """No more records fit."""
        return len(self.records) >= self.max_records or self.size >= self.max_bytes

    def remaining_ms(self) -> int | None:
        """Milliseconds until the batch is due by age; None while it is empty."""
        if self.opened_at is None:
            return None
        waited = (time.monotonic() - self.opened_at) * 1000
        return max(0, round(self.max_ms - waited))

    @property
    def due(self) -> bool:
        """Full, or old enough to write."""
        remaining = self.remaining_ms()
        return self.full or (remaining is not None and remaining <= 0)

    def partitions(self) -> set[Partition]:
        """Every partition the batch writes to (records or events)."""
        touched = {(r.topic, r.kafka_partition) for r in self.records}
        touched.update((e.topic, e.partition) for e in self.events)
        return touched

    def drop(self, partitions: set[Partition] | None = None) -> int:
        """Forget what is pending for ``partitions`` (all when None); returns how many records."""
        if partitions is None:
            dropped = len(self.records)
            self.records, self.events, self.size, self.opened_at = [], [], 0, None
            return dropped
        kept = [r for r in self.records if (r.topic, r.kafka_partition) not in partitions]
        dropped = len(self.records) - len(kept)
        self.records = kept
        self.events = [e for e in self.events if (e.topic, e.partition) not in partitions]
        self.size = sum(_weight(r) for r in kept)
        if self.empty:
            self.opened_at = None
        return dropped
