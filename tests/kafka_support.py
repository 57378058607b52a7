"""Helpers for tests that read what really landed on the broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topics(
    bootstrap: str,
    topics: Iterable[str],
    expected: int,
    timeout: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read every partition of ``topics`` from the start until ``expected`` records arrived.

    Returns what arrived by ``timeout`` (the caller asserts on it), so a
    missing record fails the test with the records that did arrive.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        metadata_max_age_ms=500,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        await assign_from_start(consumer, topics, deadline)
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for batch_records in batch.values():
                records.extend(batch_records)
    finally:
        await consumer.stop()
    return records


async def assign_from_start(
    consumer: AIOKafkaConsumer, topics: Iterable[str], deadline: float
) -> None:
    """Assign every partition of ``topics`` at offset 0, once the metadata names them all.

    Topics are created by the first write to them, so a reader may start
    before the broker's metadata knows every one.
    """
    names = set(topics)
    partitions: list[TopicPartition] = []
    while time.monotonic() < deadline:
        partitions = [
            TopicPartition(t, p)
            for t in sorted(names)
            for p in sorted(consumer.partitions_for_topic(t) or [])
        ]
        if {tp.topic for tp in partitions} == names:
            break
        await consumer.topics()  # refreshes metadata
        await asyncio.sleep(0.1)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
