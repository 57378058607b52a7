"""What the broker says about every OIX partition: log start, high watermark, committed offset.

The high watermark comes from a fetch response, not from ``end_offsets``: the
local broker answers ``end_offsets`` with the base offset of the last batch
plus one, which is short when a batch holds several records. Reading the
last batch of each partition gives the high watermark on every broker.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from aiokafka import TopicPartition

from services.bus import BrokerError, Settings, TopicNaming, consumer, start_consumer

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BrokerPartition:
    """One partition as the broker has it."""

    topic: str
    partition: int
    log_start: int
    high_watermark: int
    committed: int | None
    """The audit group's committed offset (lag monitoring), if any."""


async def read_broker_view(
    settings: Settings,
    bootstrap: str,
    naming: TopicNaming,
    group_id: str,
    timeout: float = 30.0,
) -> dict[Partition, BrokerPartition]:
    """Log start, high watermark and committed offset of every OIX partition.

    Raises:
        BrokerError: the broker cannot be reached, or did not answer for every partition
            within ``timeout``.
    """
    client = consumer(settings, bootstrap, group_id=group_id, fetch_max_wait_ms=100)
    await start_consumer(client, settings, bootstrap)
    try:
        pattern = re.compile(naming.party_prefix_pattern)
        topics = sorted(t for t in await client.topics() if pattern.match(t))
        partitions = [
            TopicPartition(topic, number)
            for topic in topics
            for number in sorted(client.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return {}
        client.assign(partitions)
        starts = await client.beginning_offsets(partitions)
        ends = await client.end_offsets(partitions)
        for tp in partitions:
            # The last batch (or the empty log's start) carries the true high watermark.
            client.seek(tp, max(starts[tp], ends[tp] - 1))
        deadline = time.monotonic() + timeout
        while any(client.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                missing = [
                    f"{tp.topic}[{tp.partition}]"
                    for tp in partitions
                    if client.highwater(tp) is None
                ]
                raise BrokerError(
                    f"no fetch response within {timeout:.0f} s for {', '.join(missing)}"
                )
            await client.getmany(timeout_ms=200)
        view = {}
        for tp in partitions:
            committed = await client.committed(tp)
            view[(tp.topic, tp.partition)] = BrokerPartition(
                tp.topic, tp.partition, starts[tp], client.highwater(tp), committed
            )
        return view
    finally:
        await client.stop()
