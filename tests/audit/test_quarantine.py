"""The quarantine topic: each untrusted record copied once, with where it came from and why."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from audit_support import (
    AuditRun,
    incident,
    produce,
    producer_for,
    running_consumer,
    sealed_incidents,
    wait_until,
)

from services.audit import (
    AuditMetrics,
    AuditSettings,
    AuditStore,
    RecordQuery,
    migrate,
    open_record,
)
from services.audit._chain import chain
from services.audit._quarantine import Quarantine, coordinates_key, quarantine_copy
from services.bus import H_KEY_ID, H_SIGNATURE, Exchange, Settings

Headers = list[tuple[str, bytes]]


def _poison(exchange: Exchange) -> dict[str, tuple[bytes | None, Headers, str]]:
    """Untrusted records of every kind, and the reason each must be quarantined for."""
    report, _ = incident(exchange)
    sealed = exchange.sealer("LT-VSAT").seal(report)

    def replaced(**changes: bytes) -> Headers:
        return [(k, changes.get(k.replace("-", "_"), v)) for k, v in sealed.headers]

    lv = exchange.signer("LV-VRS")
    lt = exchange.signer("LT-VSAT")
    unknown = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + sealed.value[10:]
    unsigned = [(k, v) for k, v in sealed.headers if k not in {H_SIGNATURE, H_KEY_ID}]
    return {
        "garbage": (b"\x00not avro", [], "unsigned"),
        "unsigned": (sealed.value, unsigned, "unsigned"),
        "forged": (
            sealed.value,
            replaced(oix_signature=lv.sign(sealed.value), oix_key_id=lv.key_id_bytes),
            "invalid",
        ),
        "unknown key": (sealed.value, replaced(oix_key_id=b"XX-0000-1"), "unknown_key"),
        "unknown schema": (unknown, replaced(oix_signature=lt.sign(unknown)), "unknown_schema"),
        "truncated": (
            sealed.value[:-4],
            replaced(oix_signature=lt.sign(sealed.value[:-4])),
            "undecodable",
        ),
        "contradicted": (sealed.value, replaced(oix_originator=b"LV-VRS"), "invalid"),
    }


async def _read_all(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, each partition read up to a fetch response's high watermark."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await reader.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.topics()
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        assert tps, f"{topic} does not exist"
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=100)).values():
                found.extend(records)
            ends = [reader.highwater(tp) for tp in tps]
            positions = [await reader.position(tp) for tp in tps]
            if all(h is not None and p >= h for p, h in zip(positions, ends, strict=True)):
                return found
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        await reader.stop()


async def _quarantine_rows(store: AuditStore, exchange: Exchange) -> int:
    return len(await store.query(RecordQuery(topic=exchange.naming.quarantine, limit=1000)))


async def test_each_untrusted_record_is_copied_once_with_where_from_and_why(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, topic = incident(exchange)
    poison = _poison(exchange)
    producer = await producer_for(settings)
    try:
        for value, headers, _ in poison.values():
            await producer.send_and_wait(topic, value, key=b"k", headers=headers, partition=1)
        await produce(producer, topic, sealed_incidents(exchange, 5), partition=1)
    finally:
        await producer.stop()

    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        store = run.consumer.store

        async def copies_stored() -> bool:
            return await _quarantine_rows(store, exchange) >= len(poison)

        await wait_until(copies_stored, "the quarantine copies to be stored")
        await run.finish()  # a copy of a copy would be sent before the stop returns
        originals = await store.scan(topic, 1, None, 100)
        stored_copies = await store.query(RecordQuery(topic=exchange.naming.quarantine))
        metrics = run.consumer.metrics.render().decode()

    copies = await _read_all(settings, exchange.naming.quarantine)
    assert len(copies) == len(poison), [c.key for c in copies]
    assert len(stored_copies) == len(poison)
    by_key = {c.key: c for c in copies}
    for (name, (value, headers, reason)), original in zip(poison.items(), originals, strict=False):
        copy = by_key[coordinates_key(topic, 1, 0, original.kafka_offset)]
        assert copy.value == value, name
        extra = dict(copy.headers[len(headers) :])
        assert list(copy.headers[: len(headers)]) == headers, name
        assert extra["oix-quarantine-topic"] == topic.encode()
        assert extra["oix-quarantine-partition"] == b"1"
        assert extra["oix-quarantine-offset"] == str(original.kafka_offset).encode()
        assert extra["oix-quarantine-epoch"] == b"0"
        assert extra["oix-quarantine-timestamp"] == str(original.kafka_timestamp).encode()
        assert extra["oix-quarantine-reason"] == reason.encode(), name
        assert extra["oix-quarantine-detail"], name
    assert all(r.trusted for r in originals[len(poison) :])
    assert "oix_audit_unknown_schema_records_total 1.0" in metrics
    for reason, count in Counter(r for _, _, r in poison.values()).items():
        assert f'oix_audit_quarantined_total{{reason="{reason}"}} {count}.0' in metrics


async def _left_by_a_crash(settings: Settings, exchange: Exchange, url: str) -> set[bytes]:
    """What a consumer killed mid-way leaves; returns the keys the quarantine must end with.

    Three untrusted records committed to the store, the copy of the first
    acknowledged by the broker but not stored yet, no copy of the other two.
    """
    _, topic = incident(exchange)
    poison = list(_poison(exchange).values())[:3]
    producer = await producer_for(settings)
    try:
        sent = [
            await producer.send_and_wait(topic, value, key=b"k", headers=headers, partition=2)
            for value, headers, _ in poison
        ]
        arrived = [r for r in await _read_all(settings, topic) if r.partition == 2]
        assert [r.offset for r in arrived] == [m.offset for m in sent]
        await migrate(url)
        store = await AuditStore.open(url)
        try:
            rows = [open_record(exchange.opener, r, 0) for r in arrived]
            expected = {(topic, 2): (await store.heads([(topic, 2)]))[(topic, 2)].chain}
            linked = chain(rows, expected, datetime.now(UTC))
            await store.append(linked.records, [], expected)
        finally:
            await store.close()
        first = quarantine_copy(linked.records[0])
        await producer.send_and_wait(
            exchange.naming.quarantine, first.value, key=first.key, headers=first.headers
        )
    finally:
        await producer.stop()
    return {coordinates_key(topic, 2, 0, m.offset) for m in sent}


async def test_catching_up_reads_the_copies_the_store_does_not_hold_yet(
    settings: Settings, exchange: Exchange, sqlite_url: str
) -> None:
    # No audit consumer runs: only the quarantine topic on the broker can tell that
    # the first record was copied already.
    keys = await _left_by_a_crash(settings, exchange, sqlite_url)
    topic = next(iter(keys)).decode().split("/")[0]
    store = await AuditStore.open(sqlite_url)
    assert settings.bootstrap is not None
    quarantine = Quarantine(
        settings,
        settings.bootstrap,
        exchange.naming,
        store,
        AuditMetrics(),
        owned=lambda: {(topic, 2)},
    )
    try:
        await quarantine.start()

        async def settled() -> bool:
            return quarantine.caught_up and quarantine.pending == 0

        await wait_until(settled, "the quarantine to catch up and copy")
    finally:
        await quarantine.stop(10)
        await store.close()
    copies = await _read_all(settings, exchange.naming.quarantine)
    assert sorted(c.key for c in copies) == sorted(keys)
    assert quarantine.copied == 2


async def test_after_a_crash_what_was_not_copied_is_and_nothing_is_copied_twice(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    keys = await _left_by_a_crash(settings, exchange, sqlite_url)
    stored = []
    for _ in range(2):  # the restart, and one more that must find nothing to do
        async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:

            async def settled(run: AuditRun = run) -> bool:
                quarantine = run.consumer.quarantine
                stored = await _quarantine_rows(run.consumer.store, exchange)
                return stored >= len(keys) and quarantine.pending == 0 and quarantine.caught_up

            await wait_until(settled, "the quarantine to catch up and copy")
        stored.append(run.consumer.stored)
        copies = await _read_all(settings, exchange.naming.quarantine)
        assert sorted(c.key for c in copies) == sorted(keys)
    assert stored == [len(keys), 0]  # the first run stores the three copies, and only them
