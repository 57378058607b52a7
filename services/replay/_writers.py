"""Where replayed records go: a terminal table, JSON lines, CSV or an Avro container file.

Every writer takes one record at a time (a history of any size streams
through in bounded memory) and leaves a complete, valid file when closed,
also after Ctrl-C (the replay stops after the current record and closes).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from services.bus import Codec, KafkaRecord
from services.replay._avro import RawRecordEncoder, RecordEncoder, replay_container
from services.replay._container import REPORTS_NAMESPACE, report_names
from services.replay._errors import ReplayError
from services.replay._flat import columns, flatten
from services.replay._record import Replayed, header_items, json_default, raw_replayed


class Format(StrEnum):
    """An output format of ``oix replay export``."""

    TABLE = "table"
    JSONL = "jsonl"
    CSV = "csv"
    AVRO = "avro"


class AvroCodec(StrEnum):
    """Compression of the blocks of an Avro container file (both in the Avro specification)."""

    DEFLATE = "deflate"
    ZSTANDARD = "zstandard"
    NULL = "null"


class Writer(Protocol):
    """Takes replayed records one at a time."""

    def write(self, record: Replayed) -> None:
        """Write one record."""

    def write_raw(self, records: Sequence[KafkaRecord]) -> None:
        """Write records read raw from Kafka (:func:`~services.replay.read_kafka_raw`).

        What :meth:`write` of each one's ``raw_replayed`` would write.
        """

    def close(self) -> None:
        """Finish the output: everything written is complete and valid."""


class _EachRaw:
    """``write_raw`` as ``write`` of each record (the formats that show more than the bytes)."""

    def write(self, record: Replayed) -> None:
        raise NotImplementedError

    def write_raw(self, records: Sequence[KafkaRecord]) -> None:
        for record in records:
            self.write(raw_replayed("kafka", record))


def _time(record: Replayed) -> str:
    return record.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_text(key: bytes | None) -> str:
    if key is None:
        return ""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return str(json_default(key))


def as_json(record: Replayed) -> dict[str, Any]:
    """One record as a JSON object (the JSON lines format, documented in docs/replay.md)."""
    return {
        "source": record.source,
        "topic": record.topic,
        "partition": record.partition,
        "epoch": record.epoch,
        "offset": record.offset,
        "timestamp": _time(record),
        "timestamp_ms": record.timestamp,
        "timestamp_type": record.timestamp_type,
        "key": _key_text(record.key),
        "headers": header_items(record.headers),
        "value_base64": None if record.value is None else json_default(record.value),
        "schema_fingerprint": record.schema_fingerprint,
        "report_type": record.report_type,
        "message_id": record.message_id,
        "originator": record.originator,
        "signature_status": record.signature_status,
        "signature_detail": record.signature_detail,
        "decode_error": record.decode_error,
        "report": record.report,
    }


class JsonLinesWriter(_EachRaw):
    """One JSON object per line (UTF-8)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, record: Replayed) -> None:
        """Write one line."""
        self._stream.write(
            orjson.dumps(as_json(record), default=json_default, option=orjson.OPT_APPEND_NEWLINE)
        )

    def close(self) -> None:
        """Flush."""
        self._stream.flush()


COORDINATE_COLUMNS = (
    "source",
    "topic",
    "partition",
    "epoch",
    "offset",
    "timestamp",
    "timestamp_ms",
    "key",
    "schema_fingerprint",
    "report_type",
    "message_id",
    "originator",
    "signature_status",
    "signature_detail",
    "decode_error",
    "headers",
)
"""The CSV's first columns; the report's flattened fields (``report.…``) follow."""


def csv_columns(codec: Codec) -> list[str]:
    """Every CSV column: the coordinates, then every report type's fields (each name once)."""
    found = dict.fromkeys(COORDINATE_COLUMNS)
    for name in report_names(codec):
        found.update(dict.fromkeys(columns(codec.registry.current[name].schema, REPORTS_NAMESPACE)))
    return list(found)


class CsvWriter(_EachRaw):
    """One row per record; nested report fields flattened (see ``_flat``)."""

    def __init__(self, stream: IO[bytes], codec: Codec) -> None:
        self._stream = stream
        self._text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
        self._codec = codec
        self._csv = csv.DictWriter(self._text, csv_columns(codec), restval="")
        self._csv.writeheader()

    def write(self, record: Replayed) -> None:
        """Write one row."""
        row = {
            "source": record.source,
            "topic": record.topic,
            "partition": str(record.partition),
            "epoch": str(record.epoch),
            "offset": str(record.offset),
            "timestamp": _time(record),
            "timestamp_ms": str(record.timestamp),
            "key": _key_text(record.key),
            "schema_fingerprint": record.schema_fingerprint or "",
            "report_type": record.report_type or "",
            "message_id": record.message_id or "",
            "originator": record.originator or "",
            "signature_status": record.signature_status,
            "signature_detail": record.signature_detail,
            "decode_error": record.decode_error or "",
            "headers": orjson.dumps(header_items(record.headers)).decode(),
        }
        if record.report is not None and record.report_type is not None:
            schema = self._codec.registry.current[record.report_type].schema
            row.update(flatten(record.report, schema, REPORTS_NAMESPACE))
        self._csv.writerow(row)

    def close(self) -> None:
        """Flush."""
        self._text.flush()
        self._text.detach()


class AvroWriter:
    """An Avro object container file, the writer schema embedded (``_container``).

    Records are encoded field by field and the report's body copied where it
    already is the current schema's encoding (``_avro``): several times faster
    than fastavro's writer, and read back by fastavro and the reference
    ``avro`` package alike.
    """

    def __init__(self, stream: IO[bytes], codec: Codec, compression: AvroCodec) -> None:
        self._stream = stream
        self._encoder = RecordEncoder(codec)
        self._raw = RawRecordEncoder()
        self._file = replay_container(stream, codec, str(compression))

    def write(self, record: Replayed) -> None:
        """Append one record (blocks are written as they fill)."""
        self._file.append(self._encoder.encode(record))

    def write_raw(self, records: Sequence[KafkaRecord]) -> None:
        """Append records read raw, encoded straight from the fetched records."""
        self._file.extend(self._raw.encode(records))

    def close(self) -> None:
        """Write the last block."""
        self._file.close()
        self._stream.flush()


TABLE_COLUMNS = (
    ("time", 24),
    ("topic", 28),
    ("p", 3),
    ("offset", 8),
    ("type", 22),
    ("originator", 10),
    ("message id", 36),
    ("signature", 17),
)


class TableWriter(_EachRaw):
    """Aligned columns for a terminal, printed as records come (no buffering of the whole)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._line(tuple(name for name, _ in TABLE_COLUMNS))

    def _line(self, cells: tuple[str, ...]) -> None:
        parts = [
            cell[:width].ljust(width) for cell, (_, width) in zip(cells, TABLE_COLUMNS, strict=True)
        ]
        self._stream.write("  ".join(parts).rstrip() + "\n")

    def write(self, record: Replayed) -> None:
        """Print one row; an undecodable record says why on the next line."""
        self._line(
            (
                _time(record),
                record.topic,
                str(record.partition),
                str(record.offset),
                record.report_type or "?",
                record.originator or "?",
                record.message_id or "?",
                record.signature_status,
            )
        )
        if record.decode_error:
            self._stream.write(f"    undecodable: {record.decode_error}\n")

    def close(self) -> None:
        """Flush."""
        self._stream.flush()


class _Closing:
    """A writer that also closes the file it opened."""

    def __init__(self, writer: Writer, stream: IO[Any] | None) -> None:
        self._writer = writer
        self._file = stream

    def write(self, record: Replayed) -> None:
        self._writer.write(record)

    def write_raw(self, records: Sequence[KafkaRecord]) -> None:
        self._writer.write_raw(records)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            if self._file is not None:
                self._file.close()


def open_writer(
    kind: Format,
    path: Path | None,
    codec: Codec,
    compression: AvroCodec = AvroCodec.DEFLATE,
) -> Writer:
    """A writer of ``kind`` to ``path`` (stdout when None; Avro needs a file).

    Raises:
        ReplayError: Avro without a file, or a file that cannot be created.
    """
    if kind is Format.TABLE:
        if path is None:
            return TableWriter(sys.stdout)
        text = path.open("w", encoding="utf-8")
        return _Closing(TableWriter(text), text)
    if kind is Format.AVRO and path is None:
        raise ReplayError("--out: an Avro container file needs a file to write to")
    try:
        stream: IO[bytes] = sys.stdout.buffer if path is None else path.open("wb")
    except OSError as exc:
        raise ReplayError(f"--out: cannot create {path}: {exc.strerror}") from exc
    own = None if path is None else stream
    if kind is Format.JSONL:
        return _Closing(JsonLinesWriter(stream), own)
    if kind is Format.CSV:
        return _Closing(CsvWriter(stream, codec), own)
    if compression is AvroCodec.ZSTANDARD and not _has_zstd():
        raise ReplayError("--compression zstandard: needs the backports.zstd package (pip)")
    return _Closing(AvroWriter(stream, codec, compression), own)


def _has_zstd() -> bool:
    """Whether fastavro can write zstandard blocks (the standard library's from Python 3.14)."""
    for name in ("compression.zstd", "backports.zstd"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            return True
    return False
