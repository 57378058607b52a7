"""Outputs: Avro container files read by fastavro and by the reference avro package alike;
CSV and JSON lines read back to the same reports."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest
from replay_support import produce, sealed, sealed_with_older_schema

from services.bus import REPORT_MODELS, Exchange, Report, Settings
from services.replay import (
    AvroCodec,
    Format,
    Replayed,
    Selection,
    SelectionError,
    container_schema,
    csv_columns,
    open_writer,
    read_kafka,
    unflatten,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def replayed(settings: Settings, exchange: Exchange) -> list[Replayed]:
    """Reports of two versions and one undecodable record, replayed from the broker."""
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    reports = [sealed_with_older_schema(exchange), *sealed(exchange, "LT-VSAT", 5)]
    await produce(settings, topic, reports, raw=[(b"\xc3\x01broken", [])])
    assert settings.bootstrap is not None
    reader = read_kafka(settings, settings.bootstrap, exchange, Selection(topics=(topic,)))
    async with contextlib.aclosing(reader) as records:
        found = [record async for record in records]
    assert len(found) == 7
    return found


def model(report_type: str, data: dict[str, Any]) -> Report:
    return REPORT_MODELS[report_type].model_validate({**data, "type": report_type})


def plain(value: Any) -> Any:
    """Data as both Avro libraries may give it, in one spelling (they differ in logical types)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def write(kind: Format, path: Path, exchange: Exchange, records: list[Replayed], **kw: Any) -> None:
    writer = open_writer(kind, path, exchange.codec, **kw)
    for record in records:
        writer.write(record)
    writer.close()


@pytest.mark.parametrize("compression", [AvroCodec.DEFLATE, AvroCodec.ZSTANDARD])
def test_avro_file_reads_the_same_in_fastavro_and_the_reference_package(
    replayed: list[Replayed], exchange: Exchange, tmp_path: Path, compression: AvroCodec
) -> None:
    path = tmp_path / "history.avro"
    write(Format.AVRO, path, exchange, replayed, compression=compression)
    with path.open("rb") as stream:
        reader = fastavro.reader(stream)
        assert reader.codec == str(compression)
        assert reader.writer_schema is not None
        by_fastavro = list(reader)
    with path.open("rb") as stream:
        reference = avro.datafile.DataFileReader(stream, avro.io.DatumReader())
        assert reference.get_meta("avro.codec").decode() == str(compression)
        by_reference = list(reference)
        reference.close()
    assert len(by_fastavro) == len(by_reference) == len(replayed)
    assert [plain(r) for r in by_fastavro] == [plain(r) for r in by_reference]
    for record, original in zip(by_fastavro, replayed, strict=True):
        assert record["value"] == original.value
        assert [(h["name"], h["value"]) for h in record["headers"]] == list(original.headers)
        assert (record["topic"], record["offset"]) == (original.topic, original.offset)
        if original.report is None:
            assert record["report"] is None
            assert record["decode_error"]
        else:
            assert record["report_type"] == original.report_type
            assert model(original.report_type or "", record["report"]) == model(
                original.report_type or "", original.report
            )


def test_json_lines_read_back_to_the_same_reports(
    replayed: list[Replayed], exchange: Exchange, tmp_path: Path
) -> None:
    path = tmp_path / "history.jsonl"
    write(Format.JSONL, path, exchange, replayed)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(replayed)
    for line, original in zip(lines, replayed, strict=True):
        assert base64.b64decode(line["value_base64"]) == original.value
        assert line["offset"] == original.offset
        assert line["signature_status"] == original.signature_status
        if original.report is None:
            assert line["report"] is None
            assert line["decode_error"] == original.decode_error
        else:
            assert model(line["report_type"], line["report"]) == model(
                line["report_type"], original.report
            )


def test_csv_reads_back_to_the_same_reports(
    replayed: list[Replayed], exchange: Exchange, tmp_path: Path
) -> None:
    path = tmp_path / "history.csv"
    write(Format.CSV, path, exchange, replayed)
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == csv_columns(exchange.codec)
    assert "report.header.originator" in rows[0]
    assert len(rows) == len(replayed)
    for row, original in zip(rows, replayed, strict=True):
        assert int(row["offset"]) == original.offset
        assert row["message_id"] == (original.message_id or "")
        if original.report is None:
            assert row["decode_error"] == original.decode_error
            continue
        schema = exchange.codec.registry.current[row["report_type"]].schema
        data = unflatten(row, schema, "eu.oix.exchange")
        assert model(row["report_type"], data) == model(row["report_type"], original.report)


def read_both(path: Path) -> list[dict[str, Any]]:
    """The records of an Avro file by fastavro, checked equal to the reference package's."""
    with path.open("rb") as stream:
        by_fastavro = [r for r in fastavro.reader(stream) if isinstance(r, dict)]
    with path.open("rb") as stream:
        reference = avro.datafile.DataFileReader(stream, avro.io.DatumReader())
        by_reference = list(reference)
        reference.close()
    assert [plain(r) for r in by_fastavro] == [plain(r) for r in by_reference]
    return by_fastavro


async def test_every_reading_mode_writes_the_same_readable_avro(
    replayed: list[Replayed], settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    """Worker processes (reports sent back encoded) give the records opening in-process
    gives; fastavro's own writer gives them too; a raw replay keeps every record's bytes,
    headers and coordinates and decodes nothing."""
    assert settings.bootstrap is not None
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    selection = Selection(topics=(topic,))
    expected = tmp_path / "in-process.avro"
    write(Format.AVRO, expected, exchange, replayed)
    records = read_both(expected)
    by_fastavro = tmp_path / "fastavro.avro"
    names = {name: f"eu.oix.exchange.{name}" for name in exchange.codec.registry.current}
    with by_fastavro.open("wb") as stream:
        fastavro.writer(
            stream,
            fastavro.parse_schema(container_schema(exchange.codec)),
            [
                {
                    **r,
                    "report": None
                    if r["report"] is None
                    else (names[r["report_type"]], r["report"]),
                }
                for r in records
            ],
        )
    assert read_both(by_fastavro) == records

    modes: dict[str, dict[str, Any]] = {
        "workers-checked": {"processes": 2, "workers_after": 0, "reports": False},
        "workers-decoded": {"processes": 2, "workers_after": 0, "reports": False, "checks": False},
        "raw": {"raw": True},
    }
    for name, how in modes.items():
        reader = read_kafka(settings, settings.bootstrap, exchange, selection, **how)
        async with contextlib.aclosing(reader) as stream:
            found = [record async for record in stream]
        if name.startswith("workers"):  # opened by the workers: reports come encoded
            assert all(r.report is None for r in found)
            assert [r.report_avro is not None for r in found] == [not r.undecodable for r in found]
        path = tmp_path / f"{name}.avro"
        write(Format.AVRO, path, exchange, found)
        got = read_both(path)
        assert len(got) == len(records) == 7
        for record, original in zip(got, records, strict=True):
            same = ("topic", "partition", "offset", "timestamp", "key", "headers", "value")
            assert {k: record[k] for k in same} == {k: original[k] for k in same}
        if name == "workers-checked":
            assert got == records
        elif name == "workers-decoded":
            assert [r["report"] for r in got] == [r["report"] for r in records]
            assert {r["signature_status"] for r in got} == {"not_checked"}
            assert [r["decode_error"] is None for r in got] == [
                r["decode_error"] is None for r in records
            ]
        else:
            assert all(r["report"] is None and r["decode_error"] is None for r in got)
            assert {r["signature_status"] for r in got} == {"not_checked"}
            assert [r["message_id"] for r in got[:6]] == [r["message_id"] for r in records[:6]]
            assert got[6]["message_id"] is None  # the broken value has no headers


async def test_raw_refuses_filters_on_decoded_content(
    settings: Settings, exchange: Exchange
) -> None:
    assert settings.bootstrap is not None
    selection = Selection(topics=("x",), mode="TEST")
    reader = read_kafka(settings, settings.bootstrap, exchange, selection, raw=True)
    with pytest.raises(SelectionError, match="--raw"):
        async with contextlib.aclosing(reader) as stream:
            [record async for record in stream]
