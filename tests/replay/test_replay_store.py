"""Replaying from the audit store (SQLite and PostgreSQL), filled by the real audit consumer."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from polling import eventually
from replay_support import BASE_MS, audit_running, produce, sealed

from services.audit import AuditStore, RecordScan, Retention
from services.bus import Exchange, Settings
from services.replay import ReadStats, Replayed, Selection, read_kafka, read_store

pytestmark = pytest.mark.timeout(120)


async def from_store(
    url: str, exchange: Exchange, selection: Selection, *, checks: bool = True
) -> list[Replayed]:
    scan = await RecordScan.open(url)
    try:
        reader = read_store(scan, exchange, selection, checks=checks, stats=ReadStats())
        async with contextlib.aclosing(reader) as records:
            return [record async for record in records]
    finally:
        await scan.close()


async def from_kafka(
    settings: Settings, exchange: Exchange, selection: Selection
) -> list[Replayed]:
    assert settings.bootstrap is not None
    reader = read_kafka(settings, settings.bootstrap, exchange, selection)
    async with contextlib.aclosing(reader) as records:
        return [record async for record in records]


async def stored(settings: Settings, exchange: Exchange, url: str, count: int) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", count))
    async with audit_running(settings, exchange, url) as consumer:
        await eventually(lambda: consumer.stored >= count, f"{count} records stored", timeout=60)


async def test_store_replays_what_kafka_replays_with_every_filter(
    settings: Settings, exchange: Exchange, store_url: str
) -> None:
    url = store_url
    await stored(settings, exchange, url, 12)
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    everything = Selection(topics=(topic,))
    kafka = await from_kafka(settings, exchange, everything)
    store = await from_store(url, exchange, everything)
    assert len(kafka) == len(store) == 12
    for left, right in zip(kafka, store, strict=True):
        assert (left.offset, left.key, left.headers, left.value, left.timestamp) == (
            right.offset,
            right.key,
            right.headers,
            right.value,
            right.timestamp,
        )
        assert left.report == right.report
        assert right.signature_status == "valid"
        assert right.stored is not None
        assert len(right.stored.row_hash) == 32
    chosen = store[7]
    event = str(chosen.header_field("event_id"))
    cases = {
        "offsets": (Selection(topics=(topic,), from_offset=3, to_offset=5), [3, 4, 5]),
        "time": (
            Selection(
                topics=(topic,),
                since=datetime.fromtimestamp((BASE_MS + 2000) / 1000, UTC),
                until=datetime.fromtimestamp((BASE_MS + 4000) / 1000, UTC),
            ),
            [2, 3],
        ),
        "message id": (Selection(message_id=chosen.message_id), [7]),
        "event id": (Selection(event_id=event), [7]),
        "report type": (Selection(topics=(topic,), report_type="IncidentReport"), list(range(12))),
        "other type": (Selection(report_type="SituationReport"), []),
        "originator": (Selection(originator="LT-VSAT", to_offset=1, topics=(topic,)), [0, 1]),
        "signature": (Selection(signature_status="invalid"), []),
        "mode": (Selection(mode="EXERCISE"), []),
    }
    for name, (selection, offsets) in cases.items():
        found = await from_store(url, exchange, selection)
        assert [r.offset for r in found] == offsets, name
        unchecked = await from_store(url, exchange, selection, checks=False)
        assert [r.offset for r in unchecked] == offsets, f"{name} without checks"


@pytest.mark.parametrize("checks", [True, False], ids=["checked", "unchecked"])
async def test_a_purged_record_replays_as_purged_never_as_missing_or_undecodable(
    settings: Settings, exchange: Exchange, store_url: str, checks: bool
) -> None:
    await stored(settings, exchange, store_url, 4)
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    before = await from_store(store_url, exchange, Selection(topics=(topic,)))
    store = await AuditStore.open(store_url)
    try:
        later = datetime.now(UTC) + timedelta(days=10 * 365)
        assert (await Retention(store, clock=lambda: later).purge(730, actor="test")).count == 4
    finally:
        await store.close()
    after = await from_store(store_url, exchange, Selection(topics=(topic,)), checks=checks)
    assert [r.offset for r in after] == [r.offset for r in before] == [0, 1, 2, 3]
    for kept, purged in zip(before, after, strict=True):
        assert (purged.value, purged.report) == (None, None)
        assert purged.decode_error is not None
        assert purged.decode_error.startswith("purged by retention at "), purged.decode_error
        assert purged.stored is not None
        assert purged.stored.value_digest is not None
        assert purged.stored.value_digest.hex() in purged.decode_error
        assert (purged.message_id, purged.originator, purged.report_type) == (
            kept.message_id,
            kept.originator,
            kept.report_type,
        )
        assert purged.signature_status == kept.signature_status == "valid"
