"""A realistic stream of example reports, signed by their agencies, on the bus.

Each round publishes every example of ``deploy/examples`` with fresh ids and
present-day times, signed with the example key of its originator and routed
as the agreement says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from services.bus import (
    Exchange,
    Report,
    Settings,
    freshen,
    load_examples,
    start_producer,
    wait_set,
)
from services.gateway.sdk import Publisher


@dataclass(frozen=True, slots=True)
class Published:
    """Where one report went."""

    report: Report
    topics: list[str]
    partition: int
    offset: int


async def run_demo(
    settings: Settings,
    exchange: Exchange,
    bootstrap: str,
    *,
    rounds: int | None,
    interval: float,
    stop: asyncio.Event | None = None,
    on_published: Callable[[Published], None] | None = None,
) -> int:
    """Publish ``rounds`` rounds of the examples (forever when None); returns the count."""
    examples = [e.report for e in load_examples()]
    producer = await start_producer(settings, bootstrap)
    # One SDK publisher per originator, sharing one producer: the gateway's own
    # pipeline (validation, routing of cancellations, signing, acks=all).
    publishers: dict[str, Publisher] = {}
    count = 0
    done = 0
    try:
        for party in sorted({r.header.originator for r in examples}):
            publishers[party] = Publisher(
                party, settings, exchange=exchange, bootstrap=bootstrap, producer=producer
            )
            await publishers[party].start()
        while rounds is None or done < rounds:
            for report in freshen(examples):
                accepted = await publishers[report.header.originator].publish(report)
                published = Published(
                    report,
                    [d.topic for d in accepted.deliveries],
                    accepted.partition,
                    accepted.offset,
                )
                count += 1
                if on_published is not None:
                    on_published(published)
                if stop is not None and interval > 0:
                    await wait_set(stop, interval)
                elif interval > 0:
                    await asyncio.sleep(interval)
                if stop is not None and stop.is_set():
                    return count
            done += 1
    finally:
        for publisher in publishers.values():
            await publisher.close()
        await producer.stop()
    return count
