"""Replaying from the real broker: offset, time and party ranges, old schema versions, no group."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from replay_support import BASE_MS, produce, sealed, sealed_with_older_schema

from services.bus import Exchange, Settings, consumer
from services.replay import PartyRole, ReadStats, Replayed, Selection, party_topics, read_kafka

pytestmark = pytest.mark.timeout(90)


async def replay(
    settings: Settings, exchange: Exchange, selection: Selection, stats: ReadStats | None = None
) -> list[Replayed]:
    assert settings.bootstrap is not None
    reader = read_kafka(settings, settings.bootstrap, exchange, selection, stats=stats)
    async with contextlib.aclosing(reader) as records:
        return [record async for record in records]


def feed(exchange: Exchange, party: str) -> str:
    return exchange.naming.feed(party, "incidents")


async def test_offset_range_replays_exactly_what_was_produced(
    settings: Settings, exchange: Exchange
) -> None:
    topic = feed(exchange, "LT-VSAT")
    reports = sealed(exchange, "LT-VSAT", 20)
    await produce(settings, topic, reports)
    found = await replay(
        settings, exchange, Selection(topics=(topic,), from_offset=5, to_offset=12)
    )
    assert [r.offset for r in found] == list(range(5, 13))
    assert [r.message_id for r in found] == [s.message_id for s in reports[5:13]]
    assert [r.value for r in found] == [s.value for s in reports[5:13]]
    assert [r.headers for r in found] == [tuple(s.headers) for s in reports[5:13]]
    assert {r.signature_status for r in found} == {"valid"}
    assert all(r.report is not None and r.report_type == "IncidentReport" for r in found)


async def test_time_range_filters_on_record_timestamps(
    settings: Settings, exchange: Exchange, broker_kind: str
) -> None:
    topic = feed(exchange, "LT-VSAT")
    reports = sealed(exchange, "LT-VSAT", 30)
    await produce(settings, topic, reports)
    since = datetime.fromtimestamp((BASE_MS + 10_000) / 1000, UTC)
    until = datetime.fromtimestamp((BASE_MS + 20_000) / 1000, UTC)
    stats = ReadStats()
    found = await replay(
        settings, exchange, Selection(topics=(topic,), since=since, until=until), stats
    )
    assert [r.offset for r in found] == list(range(10, 20))
    assert [r.timestamp for r in found] == [BASE_MS + i * 1000 for i in range(10, 20)]
    # The broker's time index was checked: trusted when right, read around when wrong.
    expected = {"tansu": "records"}.get(broker_kind, "broker")
    assert stats.time_lookup == expected


async def test_party_is_resolved_through_the_agreement(
    settings: Settings, exchange: Exchange
) -> None:
    lt, ee = feed(exchange, "LT-VSAT"), feed(exchange, "EE-PPA")
    assert lt in party_topics(exchange, "LT-VSAT", PartyRole.ORIGINATOR)
    assert lt not in party_topics(exchange, "EE-PPA", PartyRole.ORIGINATOR)
    await produce(settings, lt, sealed(exchange, "LT-VSAT", 3))
    await produce(settings, ee, sealed(exchange, "EE-PPA", 4))
    topics = tuple(party_topics(exchange, "EE-PPA", PartyRole.ORIGINATOR))
    found = await replay(settings, exchange, Selection(topics=topics))
    assert len(found) == 4
    assert {r.originator for r in found} == {"EE-PPA"}
    assert {r.topic for r in found} == {ee}
    readers = tuple(party_topics(exchange, "EE-PPA", PartyRole.READER))
    read = await replay(settings, exchange, Selection(topics=readers))
    assert {r.originator for r in read} == {"LT-VSAT"}
    assert len(read) == 3


async def test_older_schema_version_replays_resolved_to_the_current(
    settings: Settings, exchange: Exchange
) -> None:
    topic = feed(exchange, "LT-VSAT")
    old = sealed_with_older_schema(exchange)
    await produce(settings, topic, [old, *sealed(exchange, "LT-VSAT", 1)])
    found = await replay(settings, exchange, Selection(topics=(topic,)))
    assert len(found) == 2
    first = found[0]
    current = exchange.codec.registry.current["IncidentReport"].fingerprint_hex
    assert first.schema_fingerprint != current
    assert first.signature_status == "valid", first.signature_detail
    assert first.report is not None
    assert first.report["detected_by"] is None
    assert first.message_id == old.message_id
    assert found[1].schema_fingerprint == current


async def test_undecodable_records_are_listed_with_their_reason(
    settings: Settings, exchange: Exchange
) -> None:
    topic = feed(exchange, "LT-VSAT")
    await produce(
        settings,
        topic,
        sealed(exchange, "LT-VSAT", 2),
        raw=[(b"not avro at all", [("oix-originator", b"LT-VSAT")])],
    )
    stats = ReadStats()
    found = await replay(settings, exchange, Selection(topics=(topic,)), stats)
    assert len(found) == 3
    bad = found[2]
    assert bad.report is None
    assert bad.decode_error is not None
    assert "c301" in bad.decode_error
    assert bad.signature_status == "unsigned"
    assert stats.undecodable == 1


async def test_filters_on_content(settings: Settings, exchange: Exchange) -> None:
    topic = feed(exchange, "LT-VSAT")
    reports = sealed(exchange, "LT-VSAT", 6)
    await produce(settings, topic, reports)
    wanted = reports[3].message_id
    found = await replay(settings, exchange, Selection(topics=(topic,), message_id=wanted))
    assert [r.offset for r in found] == [3]
    event = str(found[0].header_field("event_id"))
    assert [
        r.offset
        for r in await replay(settings, exchange, Selection(topics=(topic,), event_id=event))
    ] == [3]
    assert await replay(settings, exchange, Selection(topics=(topic,), mode="EXERCISE")) == []
    assert len(await replay(settings, exchange, Selection(topics=(topic,), mode="ACTUAL"))) == 6


async def test_never_joins_a_group_nor_commits(settings: Settings, exchange: Exchange) -> None:
    topic = feed(exchange, "LT-VSAT")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 5))
    assert settings.bootstrap is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        before = set(await admin.list_consumer_groups())
        found = await replay(settings, exchange, Selection(topics=(topic,)))
        assert len(found) == 5
        after = set(await admin.list_consumer_groups())
        # The control: a reader that does join a group and commit shows up in the same listing.
        control = f"control-{uuid.uuid4().hex[:8]}"
        joined = consumer(settings, settings.bootstrap, topic, group_id=control)
        await joined.start()
        try:
            await joined.getmany(timeout_ms=3000)
            await joined.commit({TopicPartition(topic, 0): 5})
        finally:
            await joined.stop()
        listed = {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert after == before, f"groups appeared: {after - before}"
    assert control in listed, "the broker does not list groups: this test could not fail"


async def test_a_range_known_long_is_opened_by_workers_from_its_first_record(
    settings: Settings, exchange: Exchange
) -> None:
    # The broker's offsets tell the range's size before reading: at least workers_after
    # records start the workers at once (every record comes back encoded by a worker);
    # a shorter range is opened here, no worker started.
    assert settings.bootstrap is not None
    topic = feed(exchange, "LT-VSAT")
    # One batch a record: the local broker's end offset is then exact, as Kafka's always is.
    for i, report in enumerate(sealed(exchange, "LT-VSAT", 12)):
        await produce(settings, topic, [report], first_ms=BASE_MS + i * 1000)
    for to_offset, opened_by_workers in ((11, True), (8, False)):
        stats = ReadStats()
        selection = Selection(topics=(topic,), from_offset=2, to_offset=to_offset)
        reader = read_kafka(
            settings,
            settings.bootstrap,
            exchange,
            selection,
            processes=1,
            workers_after=10,
            reports=False,
            stats=stats,
        )
        async with contextlib.aclosing(reader) as records:
            found = [record async for record in records]
        assert stats.span == to_offset - 1
        assert [r.offset for r in found] == list(range(2, to_offset + 1))
        assert [r.report_avro is not None for r in found] == [opened_by_workers] * len(found)
        assert [r.report is None for r in found] == [opened_by_workers] * len(found)
