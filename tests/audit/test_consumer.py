"""The audit consumer on the real broker and real stores: what it stores; it never blocks."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import orjson
import pytest
from audit_support import (
    incident,
    produce,
    producer_for,
    publish,
    running_consumer,
    sealed_incidents,
    verify_store,
    wait_for_count,
)
from polling import eventually

from services.audit import (
    AuditSettings,
    AuditStore,
    RecordQuery,
    Running,
    migrate,
    read_broker_view,
    run_audit,
)
from services.bus import (
    H_KEY_ID,
    H_ORIGINATOR,
    H_SIGNATURE,
    REPORT_MODELS,
    Cancellation,
    Exchange,
    Settings,
    freshen,
    load_examples,
)


async def test_stores_every_record_with_its_coordinates_and_what_opening_found(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    reports = freshen([e.report for e in load_examples()])
    producer = await producer_for(settings)
    sent: dict[str, list[tuple[str, int, int]]] = {}
    routes: dict[str, list[str]] = {}
    try:
        for report in reports:
            header = report.header
            if isinstance(report, Cancellation):
                topics = routes[str(report.cancelled_message_id)]
            else:
                topics = exchange.router.topics_for(
                    report.report_type, header.originator, header.releasable_to
                )
            routes[str(header.message_id)] = topics
            sealed = exchange.sealer(header.originator).seal(report)
            for topic in topics:
                meta = await producer.send_and_wait(
                    topic, sealed.value, key=sealed.key, headers=sealed.headers
                )
                sent.setdefault(sealed.message_id, []).append((topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    total = sum(len(v) for v in sent.values())

    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        await wait_for_count(run.consumer.store, total)
        stored = await run.consumer.store.query(RecordQuery(limit=1000))
    assert len(stored) == total
    assert {r.report_type for r in stored} == set(REPORT_MODELS)
    by_id = {str(r.header.message_id): r for r in reports}
    for row in stored:
        assert (row.topic, row.kafka_partition, row.kafka_offset) in sent[row.message_id]
        assert row.signature_status == "valid", row.signature_detail
        assert row.decode_error is None
        original = by_id[row.message_id]
        assert row.originator == original.header.originator
        assert row.report_type == original.report_type
        decoded = orjson.loads(row.decoded or "")
        assert decoded["header"]["message_id"] == row.message_id
        assert row.schema_fingerprint == dict(row.header_pairs())["oix-schema"].decode()
        assert row.record_key == original.subject.encode()
        assert row.epoch == 0


async def test_poison_and_forged_records_are_stored_flagged_and_the_partition_flows(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    report, topic = incident(exchange)
    sealed = exchange.sealer("LT-VSAT").seal(report)
    headers = dict(sealed.headers)
    without_signature = [(k, v) for k, v in sealed.headers if k not in {H_SIGNATURE, H_KEY_ID}]

    def replaced(**changes: bytes) -> list[tuple[str, bytes]]:
        return [(k, changes.get(k.replace("-", "_"), v)) for k, v in sealed.headers]

    lv = exchange.signer("LV-VRS")
    tampered = sealed.value.replace(b"Neman", b"Nemen", 1)
    assert tampered != sealed.value
    unknown_schema = b"\xc3\x01" + b"\x01" * 8 + sealed.value[10:]
    poison: dict[str, tuple[bytes | None, list[tuple[str, bytes]]]] = {
        "garbage": (b"\x00not avro at all", []),
        "truncated": (sealed.value[:-7], list(sealed.headers)),
        "unknown schema": (
            unknown_schema,
            replaced(oix_signature=exchange.signer("LT-VSAT").sign(unknown_schema)),
        ),
        "unsigned": (sealed.value, without_signature),
        "forged": (
            sealed.value,
            replaced(oix_signature=lv.sign(sealed.value), oix_key_id=lv.key_id_bytes),
        ),
        "tampered": (tampered, list(sealed.headers)),
        "unknown key": (sealed.value, replaced(oix_key_id=b"XX-0000-1")),
        "contradicted": (sealed.value, replaced(oix_originator=b"LV-VRS")),
        "tombstone": (None, []),
    }
    expected = {
        "garbage": ("unsigned", False),
        "truncated": ("invalid", False),
        "unknown schema": ("unverified_origin", False),
        "unsigned": ("unsigned", True),
        "forged": ("invalid", True),
        "tampered": ("invalid", True),
        "unknown key": ("unknown_key", True),
        "contradicted": ("invalid", True),
        "tombstone": ("unsigned", False),
    }
    assert headers[H_ORIGINATOR] == b"LT-VSAT"
    valid_after = sealed_incidents(exchange, 5)
    producer = await producer_for(settings)
    try:
        for value, record_headers in poison.values():
            await producer.send_and_wait(
                topic, value, key=b"poison", headers=record_headers, partition=0
            )
        await produce(producer, topic, valid_after, partition=0)
    finally:
        await producer.stop()

    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        total = len(poison) + len(valid_after)
        await wait_for_count(run.consumer.store, total)
        rows = await run.consumer.store.scan(topic, 0, None, 100)
    assert [r.kafka_offset for r in rows] == list(range(total))
    for (name, (value, _)), row in zip(poison.items(), rows, strict=False):
        status, decodable = expected[name]
        assert row.value == value, name
        assert (row.signature_status, row.decoded is not None) == (status, decodable), name
        assert (row.decode_error is None) == decodable, name
        if status != "valid":
            assert row.signature_detail, name
    assert rows[2].schema_fingerprint == "01" * 8
    assert rows[7].originator == "LT-VSAT"  # the signed content's, not the header's claim
    assert [r.signature_status for r in rows[len(poison) :]] == ["valid"] * 5


async def test_a_topic_created_later_is_picked_up_without_a_restart(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, first = incident(exchange)
    later = exchange.naming.feed("PL-SG", "situation")
    producer = await producer_for(settings)
    try:
        await produce(producer, first, sealed_incidents(exchange, 3))
        async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
            await wait_for_count(run.consumer.store, 3)
            await produce(producer, later, sealed_incidents(exchange, 4))
            await wait_for_count(run.consumer.store, 7)
            topics = Counter(r.topic for r in await run.consumer.store.query(RecordQuery()))
    finally:
        await producer.stop()
    assert topics == {first: 3, later: 4}


async def test_stop_drains_the_pending_batch_and_then_acknowledges_it(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    # Batches that only a stop can close: whatever is pending must be written by the drain.
    slow = audit_settings.model_copy(update={"batch_max_ms": 600_000})
    _, topic = incident(exchange)
    await publish(settings, topic, sealed_incidents(exchange, 50))
    async with running_consumer(settings, slow, exchange, sqlite_url) as run:

        async def all_pending() -> bool:
            return run.consumer.pending == 50

        await eventually(all_pending, "50 records pending in the batch")
        assert await run.consumer.store.count() == 0
        await run.finish()
        assert await run.consumer.store.count() == 50
    assert settings.bootstrap is not None
    view = await read_broker_view(
        settings, settings.bootstrap, exchange.naming, slow.resolved_group(settings)
    )
    assert {p.committed for p in view.values() if p.high_watermark} == {
        p.high_watermark for p in view.values() if p.high_watermark
    }


async def test_a_restart_resumes_from_the_store_and_stores_nothing_twice(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, topic = incident(exchange)
    producer = await producer_for(settings)
    try:
        await produce(producer, topic, sealed_incidents(exchange, 40))
        async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
            await wait_for_count(run.consumer.store, 40)
        await produce(producer, topic, sealed_incidents(exchange, 25))
        async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
            await wait_for_count(run.consumer.store, 65)
            report = await verify_store(run.consumer, settings, exchange, signatures=True)
            assert await run.consumer.store.count() == 65
    finally:
        await producer.stop()
    assert report.ok, report.findings
    assert report.rows == 65
    assert report.lag == 0


async def test_two_consumers_in_one_group_store_each_record_once(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, pg_url: str
) -> None:
    _, topic = incident(exchange)
    sealed = sealed_incidents(exchange, 3000, keys=64)
    producer = await producer_for(settings)
    # Small batches so that both consumers write many transactions while the group rebalances.
    small = audit_settings.model_copy(update={"batch_max_records": 50})
    try:
        await produce(producer, topic, sealed[:500])
        async with running_consumer(settings, small, exchange, pg_url) as first:
            await eventually(
                lambda: _count_at_least(first.consumer.store, 1), "the first consumer to store"
            )
            feeding = asyncio.create_task(_trickle(producer, topic, sealed[500:2000]))
            async with running_consumer(settings, small, exchange, pg_url) as second:
                await eventually(
                    lambda: _both_store(first.consumer.stored, second.consumer),
                    "both consumers to store records",
                )
                await feeding
                await first.finish()  # the survivor takes every partition over
                await produce(producer, topic, sealed[2000:])
                await wait_for_count(second.consumer.store, len(sealed))
                report = await verify_store(second.consumer, settings, exchange)
                rows = await second.consumer.store.query(RecordQuery(limit=10_000))
    finally:
        await producer.stop()
    assert report.ok, report.findings
    assert sorted(r.message_id or "" for r in rows) == sorted(s.message_id for s in sealed)
    assert first.consumer.stored > 0
    assert second.consumer.stored > 0
    assert first.consumer.stored + second.consumer.stored >= len(sealed)


async def _count_at_least(store: AuditStore, count: int) -> bool:
    return await store.count() >= count


async def _both_store(first_stored: int, second: object) -> bool:
    return first_stored > 0 and getattr(second, "stored", 0) > 0


async def _trickle(producer: object, topic: str, sealed: list[object]) -> None:
    for start in range(0, len(sealed), 50):
        await produce(producer, topic, sealed[start : start + 50])  # type: ignore[arg-type]
        await asyncio.sleep(0.02)


async def test_the_service_serves_metrics_and_health(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, topic = incident(exchange)
    await publish(settings, topic, sealed_incidents(exchange, 20))
    await migrate(sqlite_url)
    audit = audit_settings.model_copy(update={"database_url": sqlite_url})
    started: list[Running] = []
    stop = asyncio.Event()
    assert settings.bootstrap is not None
    task = asyncio.create_task(
        run_audit(
            settings, audit, settings.bootstrap, stop, exchange=exchange, on_ready=started.append
        )
    )
    try:
        await eventually(lambda: started, "the service to start")
        metrics_url = started[0].metrics_url
        assert metrics_url is not None
        async with httpx.AsyncClient() as client:

            async def stored_all() -> bool:
                text = (await client.get(metrics_url)).text
                return 'oix_audit_records_stored_total{signature_status="valid"} 20.0' in text

            await eventually(stored_all, "the metrics to count 20 stored records")
            metrics = (await client.get(metrics_url)).text
            health = await client.get(metrics_url.replace("/metrics", "/healthz"))
            missing = await client.get(metrics_url.replace("/metrics", "/nothing"))
    finally:
        stop.set()
        stored = await asyncio.wait_for(task, 30)
    assert stored == 20
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert missing.status_code == 404
    assert (
        f'oix_audit_partition_lag{{partition="0",topic="{topic}"}}' in metrics.replace("1.0", "0.0")
        or "oix_audit_partition_lag{" in metrics
    )
    for name in ("oix_audit_batch_seconds_bucket", "oix_audit_record_delay_seconds_count"):
        assert name in metrics


@pytest.fixture(autouse=True)
def _no_leftover_tasks() -> None:
    """The consumer tests must not leave tasks behind (checked by pytest-asyncio's loop)."""
