"""Helpers of the audit tests: signed reports in bulk, producing them, running a consumer."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from polling import eventually

from services.audit import (
    AuditConsumer,
    AuditSettings,
    AuditStore,
    RecordOpener,
    Verifier,
    VerifyReport,
    migrate,
    read_broker_view,
)
from services.bus import (
    Exchange,
    IncidentReport,
    SealedReport,
    Settings,
    freshen,
    load_examples,
    start_producer,
)


def incident(exchange: Exchange) -> tuple[IncidentReport, str]:
    """A fresh example incident report of LT-VSAT and the feed topic it goes to."""
    reports = freshen([e.report for e in load_examples()])
    report = next(
        r for r in reports if isinstance(r, IncidentReport) and r.header.originator == "LT-VSAT"
    )
    header = report.header
    topic = exchange.router.topics_for(report.report_type, header.originator, header.releasable_to)
    return report, topic[0]


def sealed_incidents(exchange: Exchange, count: int, keys: int = 16) -> list[SealedReport]:
    """``count`` signed incident reports with distinct message ids, spread over ``keys`` keys."""
    report, _ = incident(exchange)
    sealer = exchange.sealer(report.header.originator)
    sealed = []
    for i in range(count):
        header = report.header.model_copy(update={"message_id": uuid.uuid4()})
        copy = report.model_copy(update={"header": header})
        sealed.append(sealer.seal(copy, key=f"subject-{i % keys}"))
    return sealed


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    sealed: Sequence[SealedReport],
    *,
    partition: int | None = None,
) -> None:
    """Produce ``sealed`` and wait for every acknowledgement."""
    futures = [
        await producer.send(topic, s.value, key=s.key, headers=s.headers, partition=partition)
        for s in sealed
    ]
    await asyncio.gather(*futures)


async def publish(
    settings: Settings,
    topic: str,
    sealed: Sequence[SealedReport],
    *,
    partition: int | None = None,
) -> None:
    """:func:`produce` on a producer of its own, stopped afterwards."""
    producer = await producer_for(settings)
    try:
        await produce(producer, topic, sealed, partition=partition)
    finally:
        await producer.stop()


async def wait_for_count(store: AuditStore, count: int, timeout: float = 60.0) -> None:
    """Wait until the store holds ``count`` records (never more, see the callers' asserts)."""

    async def reached() -> bool:
        return await store.count() >= count

    await eventually(reached, f"{count} records in the store", timeout=timeout)


async def wait_stored(consumer: AuditConsumer, count: int, timeout: float = 60.0) -> None:
    """Wait until ``consumer`` has committed ``count`` records to its store."""

    async def reached() -> bool:
        return consumer.stored >= count

    await eventually(reached, f"the consumer to store {count} records", timeout=timeout)


@dataclass
class AuditRun:
    """An audit consumer running in this process."""

    consumer: AuditConsumer
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def finish(self) -> None:
        """Stop it (draining) and wait; its failure fails the test."""
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@contextlib.asynccontextmanager
async def running_consumer(
    settings: Settings,
    audit: AuditSettings,
    exchange: Exchange,
    url: str,
    *,
    wait_assigned: bool = True,
) -> AsyncIterator[AuditRun]:
    """Run an audit consumer on ``url`` (migrated first) until the block ends."""
    await migrate(url)
    store = await AuditStore.open(url)
    assert settings.bootstrap is not None
    consumer = AuditConsumer(settings, audit, exchange, settings.bootstrap, store=store)
    stop = asyncio.Event()
    run = AuditRun(consumer, stop, asyncio.create_task(consumer.run(stop)))
    try:
        if wait_assigned:
            waiter = asyncio.create_task(consumer.assigned.wait())
            done, _ = await asyncio.wait(
                {waiter, run.task}, timeout=30, return_when="FIRST_COMPLETED"
            )
            if run.task in done:
                waiter.cancel()
                await run.task  # raises what stopped it
            assert waiter in done, "the audit consumer was not assigned partitions within 30 s"
        yield run
    finally:
        if not run.task.done():
            await run.finish()
        await store.close()


async def verify_store(
    consumer: AuditConsumer, settings: Settings, exchange: Exchange, *, signatures: bool = False
) -> VerifyReport:
    """Verify ``consumer``'s store against the broker and its group; ``signatures`` re-verifies."""
    assert settings.bootstrap is not None
    broker = await read_broker_view(
        settings, settings.bootstrap, exchange.naming, consumer.group_id
    )
    opener = RecordOpener(settings, exchange.opener, 0) if signatures else None
    try:
        return await Verifier(consumer.store, opener).run(broker)
    finally:
        if opener is not None:
            opener.close()


async def producer_for(settings: Settings) -> AIOKafkaProducer:
    """A started producer on the test's broker."""
    assert settings.bootstrap is not None
    return await start_producer(settings, settings.bootstrap)
