"""Comparing the broker's log with the audit store, record by record.

For every selected partition, the records read from Kafka are merged by
offset with the rows of the store's newest epoch of that partition (the log
the broker serves now). Every difference is reported with its coordinates:
a record only on one side, or a key, value, header list or timestamp that
differs. Both sides are streamed: memory stays bounded on any history.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from services.audit import RecordScan
from services.bus import Exchange, Settings, consumer, start_consumer
from services.replay._kafka import ReadStats, read_kafka
from services.replay._record import Replayed
from services.replay._select import Selection
from services.replay._stored import read_store


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the broker and the store disagree, at one record."""

    topic: str
    partition: int
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] offset {self.offset}: {self.what}"


def _differences(kafka: Replayed, stored: Replayed) -> list[str]:
    found = []
    for name in ("key", "value", "headers", "timestamp", "timestamp_type"):
        left, right = getattr(kafka, name), getattr(stored, name)
        if left != right:
            found.append(f"{name} differs (Kafka {_show(left)}, store {_show(right)})")
    return found


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes" if len(value) > 24 else value.hex() or "empty"  # noqa: PLR2004
    if isinstance(value, tuple):
        return f"{len(value)} headers"
    return repr(value)


async def _next(records: AsyncIterator[Replayed]) -> Replayed | None:
    return await anext(records, None)


async def compare_partition(
    kafka: AsyncIterator[Replayed], stored: AsyncIterator[Replayed]
) -> AsyncIterator[Difference]:
    """The differences between two offset-ordered streams of one partition."""
    left, right = await _next(kafka), await _next(stored)
    while left is not None or right is not None:
        if right is None or (left is not None and left.offset < right.offset):
            assert left is not None
            yield Difference(left.topic, left.partition, left.offset, "in Kafka, not in the store")
            left = await _next(kafka)
        elif left is None or right.offset < left.offset:
            yield Difference(
                right.topic, right.partition, right.offset, "in the store, not in Kafka"
            )
            right = await _next(stored)
        else:
            for what in _differences(left, right):
                yield Difference(left.topic, left.partition, left.offset, what)
            left, right = await _next(kafka), await _next(stored)


@dataclass
class Comparison:
    """How many records each side had and the partitions compared."""

    partitions: int = 0
    kafka: int = 0
    store: int = 0
    differences: int = 0


async def compare(
    settings: Settings,
    bootstrap: str,
    scan: RecordScan,
    exchange: Exchange,
    selection: Selection,
    *,
    report: Callable[[Difference], None],
) -> Comparison:
    """Compare every selected partition; ``report`` is called with each difference."""
    topics = selection.topics or tuple(exchange.router.all_topics())
    partitions = await scan.partitions(topics)
    summary = Comparison()
    known = set(partitions)
    known.update(await _broker_partitions(settings, bootstrap, topics))
    for topic, number in sorted(known):
        if selection.partition is not None and number != selection.partition:
            continue
        summary.partitions += 1
        one = dataclasses.replace(selection, topics=(topic,), partition=number)
        epoch = await scan.latest_epoch(topic, number)
        kafka_stats, store_stats = ReadStats(), ReadStats()
        async with (
            contextlib.aclosing(
                read_kafka(settings, bootstrap, exchange, one, checks=False, stats=kafka_stats)
            ) as kafka,
            contextlib.aclosing(
                read_store(scan, exchange, one, checks=False, stats=store_stats, epoch=epoch)
            ) as stored,
        ):
            async for difference in compare_partition(kafka, stored):
                summary.differences += 1
                report(difference)
        summary.kafka += kafka_stats.kept
        summary.store += store_stats.kept
    return summary


async def _broker_partitions(
    settings: Settings, bootstrap: str, topics: tuple[str, ...]
) -> set[tuple[str, int]]:
    kafka = consumer(settings, bootstrap, group_id=None)
    await start_consumer(kafka, settings, bootstrap)
    try:
        present = await kafka.topics()
        return {
            (topic, number)
            for topic in topics
            if topic in present
            for number in kafka.partitions_for_topic(topic) or set()
        }
    finally:
        await kafka.stop()
