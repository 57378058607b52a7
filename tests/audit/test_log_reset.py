"""A broker log that goes backwards (a memory broker restarted) is noticed and said, not hidden."""

from __future__ import annotations

from audit_support import (
    incident,
    publish,
    running_consumer,
    sealed_incidents,
    verify_store,
)
from polling import eventually

from services.audit import AuditSettings, EventKind, FindingKind
from services.bus import EmbeddedBroker, Exchange, Settings, free_port


async def test_a_restarted_broker_starts_a_new_epoch_instead_of_splicing_logs(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    port = free_port()
    own = settings.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    _, topic = incident(exchange)
    batches = [sealed_incidents(exchange, n) for n in (30, 50, 10)]
    broker = EmbeddedBroker(port=port)
    await broker.start()
    try:
        async with running_consumer(own, audit_settings, exchange, sqlite_url) as run:
            store = run.consumer.store
            for epoch, sealed in enumerate(batches):
                if epoch:
                    # A restart of the memory broker: every topic, record and offset is gone.
                    await broker.stop()
                    broker = EmbeddedBroker(port=port)
                    await broker.start()
                await publish(own, topic, sealed, partition=0)

                async def stored(epoch: int = epoch, count: int = len(sealed)) -> bool:
                    rows = await store.scan(topic, 0, (epoch, -1), 1000)
                    return len([r for r in rows if r.epoch == epoch]) == count

                await eventually(stored, f"epoch {epoch} to be stored", timeout=90)
            report = await verify_store(run.consumer, own, exchange, signatures=True)
            rows = await store.scan(topic, 0, None, 1000)
            events = await store.log_events()
    finally:
        await broker.stop()
    # Epoch 1 began because the record at the stored offset was another one (the new log
    # was longer); epoch 2 because the new log ended below the stored offset.
    assert [(e.kind, e.epoch, e.last_offset) for e in events] == [
        (EventKind.LOG_RESET, 1, 29),
        (EventKind.LOG_RESET, 2, 49),
    ]
    assert "is not the one stored" in events[0].detail
    assert "below the stored offset" in events[1].detail
    for epoch, sealed in enumerate(batches):
        mine = [r for r in rows if r.epoch == epoch]
        assert [r.kafka_offset for r in mine] == list(range(len(sealed)))
        assert [r.message_id for r in mine] == [s.message_id for s in sealed]
    assert {f.kind for f in report.findings} == {FindingKind.LOG_RESET}
    assert report.rows == 90
