"""The raw fast path (``--raw`` from Kafka): whole fetches encoded straight from the fetched
records give exactly the file a :class:`Replayed` per record gives, read back by fastavro
and by the reference avro package alike."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from pathlib import Path

import avro.datafile
import avro.io
import fastavro
import pytest
from replay_support import BASE_MS, produce, sealed, sealed_with_older_schema

from services.bus import Exchange, KafkaRecord, Settings, start_producer
from services.replay import (
    Format,
    ReadStats,
    Selection,
    SelectionError,
    open_writer,
    read_kafka,
    read_kafka_raw,
)
from services.replay._avro import RawRecordEncoder, RecordEncoder, fast_long, long_bytes
from services.replay._record import raw_replayed

pytestmark = pytest.mark.timeout(90)


async def odd_records(settings: Settings, topic: str) -> None:
    """Records no OIX writer makes: what a raw replay must copy all the same."""
    assert settings.bootstrap is not None
    message_id = str(uuid.uuid4()).encode()
    odd: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]] = [
        (None, b"\xc3\x01broken", [], BASE_MS + 100_000),  # no key, no headers
        (b"k" * 1500, None, [("oix-type", b"IncidentReport")], 1),  # long key, no value, t=1
        (  # repeated headers (the last counts), text that is not ASCII or not UTF-8 at all
            b"key",
            b"\xc3\x01" + bytes(range(40)),
            [
                ("oix-type", b"first"),
                ("oix-originator", "LT-VSAT ąčę".encode()),
                ("oix-message-id", message_id),
                ("oix-type", b"\xff\xfe not utf-8"),
                ("oix-message-id", "ид-1".encode()),
                ("big", b"x" * 3000),
            ],
            2**41 + 12345,
        ),
        (b"", b"", [("oix-originator", b"")], 0),  # empty everything
    ]
    producer = await start_producer(settings, settings.bootstrap)
    try:
        sent = [
            await producer.send(
                topic, value, key=key, headers=headers, partition=0, timestamp_ms=stamp
            )
            for key, value, headers, stamp in odd
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def raw_batches(
    settings: Settings, exchange: Exchange, selection: Selection, stats: ReadStats | None = None
) -> list[list[KafkaRecord]]:
    assert settings.bootstrap is not None
    reader = read_kafka_raw(settings, settings.bootstrap, exchange, selection, stats=stats)
    async with contextlib.aclosing(reader) as batches:
        return [batch async for batch in batches]


def read_both(path: Path) -> list[dict[str, object]]:
    """An Avro file's records by fastavro, checked equal to the reference package's."""
    with path.open("rb") as stream:
        by_fastavro = [r for r in fastavro.reader(stream) if isinstance(r, dict)]
    with path.open("rb") as stream:
        reference = avro.datafile.DataFileReader(stream, avro.io.DatumReader())
        by_reference = list(reference)
        reference.close()
    assert by_fastavro == by_reference
    return by_fastavro


async def test_raw_fetches_write_the_file_a_record_at_a_time_writes(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    reports = [sealed_with_older_schema(exchange), *sealed(exchange, "LT-VSAT", 40)]
    await produce(settings, topic, reports)
    await odd_records(settings, topic)
    assert settings.bootstrap is not None
    selection = Selection(topics=(topic,))
    stats = ReadStats()
    fetched = await raw_batches(settings, exchange, selection, stats)
    records = [r for batch in fetched for r in batch]
    assert [r.offset for r in records] == list(range(45))
    assert stats.read == stats.kept == 45

    # Byte for byte what the general encoder makes of each record's Replayed.
    general = RecordEncoder(exchange.codec)
    expected = [general.encode(raw_replayed("kafka", r)) for r in records]
    assert RawRecordEncoder().encode(records) == expected
    # A fresh encoder, one record at a time (nothing cached yet each time), agrees too.
    one_by_one = RawRecordEncoder()
    assert [one_by_one.encode([r])[0] for r in records] == expected

    # Whole files: write_raw against write() of read_kafka's raw records, read by both readers.
    reader = read_kafka(settings, settings.bootstrap, exchange, selection, raw=True)
    async with contextlib.aclosing(reader) as stream:
        replayed = [record async for record in stream]
    for kind in (Format.AVRO, Format.JSONL):
        fast, slow = tmp_path / f"fast.{kind}", tmp_path / f"slow.{kind}"
        writer = open_writer(kind, fast, exchange.codec)
        writer.write_raw(records[:7])
        writer.write_raw(records[7:])
        writer.close()
        writer = open_writer(kind, slow, exchange.codec)
        for one in replayed:
            writer.write(one)
        writer.close()
        if kind is Format.JSONL:
            assert fast.read_bytes() == slow.read_bytes()
            continue
        got = read_both(fast)
        assert got == read_both(slow)
        assert len(got) == 45
        assert [r["value"] for r in got] == [r.value for r in records]
        odd = got[43]
        assert odd["report_type"] == "\ufffd\ufffd not utf-8"  # as the header decodes
        assert odd["message_id"] == "ид-1"
        assert odd["originator"] == "LT-VSAT ąčę"


async def test_raw_selections_keep_what_the_record_path_keeps(
    settings: Settings, exchange: Exchange
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    reports = sealed(exchange, "LT-VSAT", 30)
    await produce(settings, topic, reports)
    await odd_records(settings, topic)
    assert settings.bootstrap is not None
    selections = [
        Selection(topics=(topic,), from_offset=3, to_offset=17),
        Selection(topics=(topic,), to_offset=0),
        Selection(topics=(topic,), message_id=str(reports[4].message_id)),
        Selection(topics=(topic,), originator="LT-VSAT", from_offset=25),
        Selection(topics=(topic,), report_type="IncidentReport", signature_status="not_checked"),
        Selection(topics=(topic,), signature_status="valid"),
    ]
    for selection in selections:
        stats = ReadStats()
        fetched = await raw_batches(settings, exchange, selection, stats)
        reader = read_kafka(settings, settings.bootstrap, exchange, selection, raw=True)
        async with contextlib.aclosing(reader) as stream:
            replayed = [record async for record in stream]
        offsets = [r.offset for batch in fetched for r in batch]
        assert offsets == [r.offset for r in replayed], selection
        assert stats.kept == len(offsets)
    assert offsets == []  # nothing raw is verified
    with pytest.raises(SelectionError, match="--raw"):
        await raw_batches(settings, exchange, Selection(topics=(topic,), mode="TEST"))


async def test_a_stopped_raw_read_ends_after_the_fetch_it_gave(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    """Ctrl-C during a raw export: nothing is fetched after the fetch being written, and
    what was written is a valid file from the first offset on."""
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 10) * 2000)  # 20 MB
    assert settings.bootstrap is not None
    # The premise: unstopped, the range comes in several fetches (at most 8 MB each).
    whole = await raw_batches(settings, exchange, Selection(topics=(topic,)))
    assert len(whole) > 1
    assert sum(len(batch) for batch in whole) == 20_000
    stop = asyncio.Event()
    out = tmp_path / "stopped.avro"
    writer = open_writer(Format.AVRO, out, exchange.codec)
    stats = ReadStats()
    reader = read_kafka_raw(
        settings, settings.bootstrap, exchange, Selection(topics=(topic,)), stats=stats, stop=stop
    )
    given = []
    try:
        async with contextlib.aclosing(reader) as batches:
            async for batch in batches:
                given.append(len(batch))
                writer.write_raw(batch)
                stop.set()  # as Ctrl-C does
    finally:
        writer.close()
    assert len(given) == 1
    assert given[0] < 20_000
    offsets = [r["offset"] for r in read_both(out)]
    assert offsets == list(range(given[0]))
    assert stats.kept == given[0]


def test_longs_encode_as_the_specification_says() -> None:
    """The encoders' table-driven longs against the plain zigzag varint."""
    edges = [0, 1, -1, 63, -64, 64, -65, 2**13 - 1, 2**13, -(2**13), -(2**13) - 1]
    edges += [2**k + d for k in (14, 20, 27, 34, 41, 48, 55, 62) for d in (-1, 0, 1)]
    edges += [2**63 - 1, -(2**63), 1_764_590_400_000]
    chance = random.Random(12)
    edges += [chance.randrange(-(2**63), 2**63) for _ in range(2000)]
    edges += [1_764_590_400_000 + chance.randrange(10**9) for _ in range(2000)]
    for n in edges:
        assert fast_long(n) == long_bytes(n), n
    assert long_bytes(1) == b"\x02"
    assert long_bytes(-1) == b"\x01"
    assert long_bytes(64) == b"\x80\x01"
    assert long_bytes(2**63 - 1) == b"\xfe" + b"\xff" * 8 + b"\x01"
