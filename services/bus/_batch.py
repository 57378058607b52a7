"""A batch of consumed items waiting to be written: bounded in records, bytes and age.

The accumulator of the consume loop (as aiokafka's producer accumulates
records per partition for its sender): the loop adds what each fetch
brought, the caller's ``write`` takes a due batch while the next one fills.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka import TopicPartition

from services.bus._continuity import LogEvent, Position

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a batch is due: at ``max_records`` items, ``max_bytes`` bytes or ``max_ms`` of age.

    A batch may hold one fetch response beyond the first two (the loop adds
    whole fetches); fetch sizes bound that.
    """

    max_records: int
    max_bytes: int
    max_ms: int


class Batch(Generic[T]):
    """Items, log events and positions that go into one transaction of the caller's store.

    It is due when it holds ``max_records`` items or ``max_bytes`` bytes (as
    ``weight`` counts them), or when its first entry has waited ``max_ms``:
    memory and latency both stay bounded whatever the traffic.
    :attr:`positions` holds, for every partition the batch touches, the
    position after its last item or event: what the caller stores with them.
    """

    def __init__(self, limits: BatchLimits, weight: Callable[[T], int]) -> None:
        self.limits = limits
        self.weight = weight
        self.items: list[T] = []
        self.events: list[LogEvent] = []
        self.positions: dict[TopicPartition, Position] = {}
        self.size = 0
        self.opened_at: float | None = None
        self._partitions: list[TopicPartition] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def empty(self) -> bool:
        """Nothing to write."""
        return not self.items and not self.events and not self.positions

    def _open(self) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()

    def add(
        self,
        partition: TopicPartition,
        items: Sequence[T],
        events: Iterable[LogEvent] = (),
        position: Position | None = None,
    ) -> None:
        """Append what one fetch brought for ``partition`` (its items in offset order)."""
        noticed = list(events)
        if items:
            self.items.extend(items)
            self._partitions.extend([partition] * len(items))
            weight = self.weight
            self.size += sum(weight(item) for item in items)
        self.events.extend(noticed)
        if position is not None:
            self.positions[partition] = position
        if items or noticed or position is not None:
            self._open()

    @property
    def full(self) -> bool:
        """No more items fit."""
        return len(self.items) >= self.limits.max_records or self.size >= self.limits.max_bytes

    def remaining_ms(self) -> int | None:
        """Milliseconds until the batch is due by age; None while it is empty."""
        if self.opened_at is None:
            return None
        waited = (time.monotonic() - self.opened_at) * 1000
        return max(0, round(self.limits.max_ms - waited))

    @property
    def due(self) -> bool:
        """Full, or old enough to write."""
        remaining = self.remaining_ms()
        return self.full or (remaining is not None and remaining <= 0)

    def partitions(self) -> set[TopicPartition]:
        """Every partition the batch writes to (items, events or positions)."""
        touched = set(self._partitions)
        touched.update(TopicPartition(e.topic, e.partition) for e in self.events)
        touched.update(self.positions)
        return touched

    def drop(self, partitions: set[TopicPartition] | None = None) -> int:
        """Forget what is pending for ``partitions`` (all when None); returns how many items."""
        if partitions is None:
            dropped = len(self.items)
            self.items, self.events, self.positions, self._partitions = [], [], {}, []
            self.size, self.opened_at = 0, None
            return dropped
        pairs = zip(self._partitions, self.items, strict=True)
        kept = [(p, i) for p, i in pairs if p not in partitions]
        dropped = len(self.items) - len(kept)
        self._partitions = [p for p, _ in kept]
        self.items = [i for _, i in kept]
        self.events = [
            e for e in self.events if TopicPartition(e.topic, e.partition) not in partitions
        ]
        self.positions = {p: v for p, v in self.positions.items() if p not in partitions}
        self.size = sum(self.weight(i) for i in self.items)
        if self.empty:
            self.opened_at = None
        return dropped
