"""Re-driving a range to another topic, for a partner system that recovers from a loss.

Each record is produced again with its original key, value and headers
untouched (so its signature still verifies), plus provenance headers saying
where and when it came from and who re-drove it. A live OIX topic
(``<prefix>.<PARTY>.…``) is refused unless forced: its readers would take
the copies for new messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from services.bus import BrokerError, Exchange, Settings, start_producer
from services.replay._errors import ReplayError
from services.replay._record import Replayed

H_SOURCE_TOPIC = "oix-replay-source-topic"
H_SOURCE_PARTITION = "oix-replay-source-partition"
H_SOURCE_OFFSET = "oix-replay-source-offset"
H_REPLAYED_AT = "oix-replay-time"
H_OPERATOR = "oix-replay-operator"
PROVENANCE = (H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_REPLAYED_AT, H_OPERATOR)
"""The headers a re-driven record carries after its original ones (UTF-8 text)."""

_IN_FLIGHT = 1000
"""Sends awaited together: bounds memory while keeping the producer's batches full."""


def refuse_live_topic(exchange: Exchange, topic: str, *, force: bool) -> None:
    """Refuse to re-drive into a live OIX topic unless ``force``.

    Raises:
        ReplayError: naming the topic, what it is and why that is refused.
    """
    info = exchange.naming.parse(topic)
    if info is None or force:
        return
    raise ReplayError(
        f"--to-topic {topic}: is a live OIX {info.kind} topic under the prefix "
        f"{exchange.naming.prefix!r}; every reader of it would take the copies for new "
        "messages (acknowledge them, alert on them). Re-drive to a topic of the recovering "
        "system's own, or pass --force if that is really meant",
    )


async def redrive(
    settings: Settings,
    bootstrap: str,
    records: AsyncIterator[Replayed],
    topic: str,
    operator: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every record of ``records`` to ``topic``; returns how many were acknowledged.

    Raises:
        BrokerError: the broker refused a record (what was acknowledged before stays).
    """
    producer = await start_producer(settings, bootstrap)
    sent = 0
    replayed_at = datetime.now(UTC).isoformat().encode()
    pending: list[asyncio.Future[object]] = []
    try:
        async for record in records:
            headers = [
                *record.headers,
                (H_SOURCE_TOPIC, record.topic.encode()),
                (H_SOURCE_PARTITION, str(record.partition).encode()),
                (H_SOURCE_OFFSET, str(record.offset).encode()),
                (H_REPLAYED_AT, replayed_at),
                (H_OPERATOR, operator.encode()),
            ]
            pending.append(
                await producer.send(topic, record.value, key=record.key, headers=headers)
            )
            if len(pending) >= _IN_FLIGHT:
                sent += await _settle(pending, progress)
        sent += await _settle(pending, progress)
    except KafkaError as exc:
        raise BrokerError(f"--to-topic {topic}: the broker refused a record: {exc!r}") from exc
    finally:
        await producer.stop()
    return sent


async def _settle(
    pending: list[asyncio.Future[object]], progress: Callable[[int], None] | None
) -> int:
    await asyncio.gather(*pending)
    done = len(pending)
    pending.clear()
    if progress is not None:
        progress(done)
    return done
