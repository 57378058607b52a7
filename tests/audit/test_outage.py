"""A database outage: the consumer holds its batch, waits and resumes; nothing lost or doubled."""

from __future__ import annotations

from audit_support import (
    incident,
    produce,
    producer_for,
    running_consumer,
    sealed_incidents,
    verify_store,
)
from pg_instance import PostgresInstance
from polling import eventually

from services.audit import AuditSettings
from services.bus import Exchange, Settings

TOTAL = 6000


async def test_the_consumer_waits_out_a_database_outage_and_resumes(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings
) -> None:
    sealed = sealed_incidents(exchange, TOTAL, keys=32)
    _, topic = incident(exchange)
    producer = await producer_for(settings)
    try:
        async with (
            PostgresInstance() as server,
            running_consumer(settings, audit_settings, exchange, server.url) as run,
        ):
            consumer = run.consumer
            await produce(producer, topic, sealed[:2000])

            async def stored_some() -> bool:
                return consumer.stored >= 1000

            await eventually(stored_some, "the first records to be stored")
            await server.stop()  # a crash of the database server
            await produce(producer, topic, sealed[2000:4000])

            async def noticed() -> bool:
                return not consumer.health.store_available

            await eventually(noticed, "the consumer to notice the outage")
            store_up_during = consumer.metrics.store_up._value.get()
            await produce(producer, topic, sealed[4000:])
            await server.start()

            async def all_stored() -> bool:
                return consumer.stored >= TOTAL

            await eventually(all_stored, f"{TOTAL} records stored after the outage")
            assert consumer.health.store_available
            store_up_after = consumer.metrics.store_up._value.get()
            report = await verify_store(consumer, settings, exchange)
            count = await consumer.store.count()
            ids = {
                r.message_id
                for p in range(4)
                for r in await consumer.store.scan(topic, p, None, TOTAL)
            }
            errors = consumer.metrics.store_errors.labels("unavailable")._value.get()
    finally:
        await producer.stop()
    assert report.ok, report.findings
    assert report.lag == 0
    assert count == TOTAL
    assert ids == {s.message_id for s in sealed}
    assert errors > 0
    assert (store_up_during, store_up_after) == (0, 1)
