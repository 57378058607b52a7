"""The quarantine topic: each untrusted record copied once, with where it came from and why."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from audit_support import (
    AuditRun,
    incident,
    produce,
    producer_for,
    running_consumer,
    sealed_incidents,
)
from polling import eventually

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
from services.bus import H_KEY_ID, H_SIGNATURE, Exchange, SealedReport, Settings

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

        await eventually(copies_stored, "the quarantine copies to be stored")
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

        await eventually(settled, "the quarantine to catch up and copy")
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

            await eventually(settled, "the quarantine to catch up and copy")
        stored.append(run.consumer.stored)
        copies = await _read_all(settings, exchange.naming.quarantine)
        assert sorted(c.key for c in copies) == sorted(keys)
    assert stored == [len(keys), 0]  # the first run stores the three copies, and only them


class _AuditProcess:
    """``oix audit run`` as a process of its own, to be killed with SIGKILL."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = (self.logs / "audit.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "oix"),
            "audit",
            "run",
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def kill(self) -> None:
        assert self.process is not None
        assert self.process.returncode is None, (self.logs / "audit.log").read_text()[-2000:]
        self.process.kill()
        await self.process.wait()

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


def _process_env(settings: Settings, url: str, data_dir: Path) -> dict[str, str]:
    assert settings.bootstrap is not None
    return {
        **os.environ,
        "OIX_BOOTSTRAP": settings.bootstrap,
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_DATA_DIR": str(data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_AUDIT_DATABASE_URL": url,
        "OIX_AUDIT_METRICS_PORT": "0",
        "OIX_AUDIT_OPEN_PROCESSES": "0",
        "OIX_AUDIT_SESSION_TIMEOUT_MS": "2000",
        "OIX_AUDIT_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_AUDIT_REBALANCE_TIMEOUT_MS": "2000",
        "OIX_AUDIT_METADATA_MAX_AGE_MS": "500",
        "OIX_AUDIT_BATCH_MAX_RECORDS": "50",
    }


async def _trickle(
    producer: AIOKafkaProducer, topic: str, sealed: list[SealedReport], untrusted: set[int]
) -> None:
    """About 100 records a second, every record in ``untrusted`` without its signature."""
    for start in range(0, len(sealed), 20):
        futures = []
        for i in range(start, min(start + 20, len(sealed))):
            headers = sealed[i].headers
            if i in untrusted:
                headers = [(k, v) for k, v in headers if k not in {H_SIGNATURE, H_KEY_ID}]
            futures.append(
                await producer.send(topic, sealed[i].value, key=sealed[i].key, headers=headers)
            )
        await asyncio.gather(*futures)
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_kill_9_while_untrusted_records_flow_copies_each_exactly_once(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("OIX_TEST_SEED", str(time.time_ns())))
    rng = random.Random(seed)
    replay = f"(replay with OIX_TEST_SEED={seed})"
    _, topic = incident(exchange)
    sealed = sealed_incidents(exchange, 2000, keys=32)
    untrusted = set(range(0, len(sealed), 10))
    await migrate(sqlite_url)
    audit = _AuditProcess(_process_env(settings, sqlite_url, tmp_path), tmp_path)
    store = await AuditStore.open(sqlite_url)
    producer = await producer_for(settings)
    feeding = asyncio.create_task(_trickle(producer, topic, sealed, untrusted))
    try:
        for _ in range(3):  # killed while records, copies and catching up are under way
            await audit.start()
            before = await store.count()
            deadline = time.monotonic() + 60
            while await store.count() <= before:
                assert time.monotonic() < deadline, f"no progress {replay}"
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await audit.kill()
        await feeding
        await audit.start()

        async def all_copied() -> bool:
            copies = await store.query(RecordQuery(topic=exchange.naming.quarantine, limit=5000))
            return len({c.record_key for c in copies}) >= len(untrusted)

        await eventually(all_copied, f"every untrusted record copied {replay}", timeout=120)
        assert await audit.terminate() == 0
        originals = await store.query(RecordQuery(topic=topic, limit=5000))
    finally:
        feeding.cancel()
        await producer.stop()
        if audit.process is not None and audit.process.returncode is None:
            audit.process.kill()
            await audit.process.wait()
        await store.close()
    keys = [c.key for c in await _read_all(settings, exchange.naming.quarantine)]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} copied twice {replay}"
    assert len(originals) == len(sealed), replay
    expected = {
        coordinates_key(r.topic, r.kafka_partition, r.epoch, r.kafka_offset)
        for r in originals
        if not r.trusted
    }
    assert len(expected) == len(untrusted), replay
    assert set(keys) == expected, replay


async def test_a_stray_cancellation_from_a_kafka_call_does_not_end_the_copier(
    settings: Settings, exchange: Exchange, sqlite_url: str
) -> None:
    """aiokafka can raise its fetch task's CancelledError when a connection breaks: the
    copier retries as for any Kafka error (it used to end silently, and its stop()
    raised the CancelledError into the consumer's shutdown)."""
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
    real_round = quarantine._round
    strays = 0

    async def round_cancelled_once() -> None:
        nonlocal strays
        if strays == 0:
            strays += 1
            raise asyncio.CancelledError  # as a Kafka client call raises it, not a cancel()
        await real_round()

    quarantine._round = round_cancelled_once  # type: ignore[method-assign]
    try:
        await quarantine.start()

        async def settled() -> bool:
            return quarantine.caught_up and quarantine.pending == 0

        await eventually(settled, "the quarantine to copy after the stray cancellation")
    finally:
        await quarantine.stop(10)  # must return, not raise
        await store.close()
    assert strays == 1
    assert quarantine.copied == 2
