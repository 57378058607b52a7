"""Avro container files written from encoded records: the replay's fast Avro path.

fastavro's writer takes Python dicts and spends 70-140 µs a record on the
ReplayedRecord (it tries its report union branch by branch). Most of a
replayed record is already Avro: an Avro record's encoding is its fields'
encodings concatenated in order, the coordinates are varints and
length-prefixed bytes, and when a value was written with the current schema
of its type, its body (after the 10-byte single-object prefix) IS that
schema's encoding of the report. So records are encoded here field by field,
the report's body copied, and the object container file (Avro specification,
"Object Container Files": header with ``avro.schema`` and ``avro.codec``, then
blocks of count, size, data and the 16-byte sync marker) written block by
block. fastavro and the reference ``avro`` package read these files back in
the tests.

A report body is copied only after the codec decoded it with no byte left
over, so a corrupt value never reaches the file as anything but ``bytes``.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, TypeVar

from fastavro import parse_schema, schemaless_writer
from isal import isal_zlib

from services.bus import (
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_TYPE,
    PREFIX_SIZE,
    Codec,
    Decoded,
    KafkaRecord,
)
from services.replay._container import container_schema, report_names
from services.replay._record import NOT_CHECKED, RAW_DETAIL, Replayed, value_fingerprint

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
BLOCK_BYTES = 256 * 1024
"""Uncompressed bytes per block: large enough to compress well, small enough for memory."""
BLOCKS_AHEAD = 2
"""Blocks waiting for the writing thread at most."""
DEFLATE_LEVEL = 1
"""ISA-L's level 1 (python-isal, standard raw deflate any inflater reads): on replayed
IncidentReports 0.162 of the bytes in 0.9 µs of CPU a record, where zlib's level 1 gave
0.170 in 6.0 µs and its default level 6 0.164 in 14 (measured on 256 KB blocks)."""
ZSTD_LEVEL = 3
_CACHED_TEXTS = 4096
_SMALL = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]
_LENGTHS: list[bytes] = []
"""The encodings of 0 … 1023 (lengths of names, header values, values): looked up, not computed."""
V = TypeVar("V")


def _remember(cache: dict[Any, V], key: object, value: V) -> V:
    """Store ``value`` in a lookup cache bounded at :data:`_CACHED_TEXTS` entries."""
    if len(cache) >= _CACHED_TEXTS:
        cache.clear()
    cache[key] = value
    return value


def _unsigned(z: int) -> bytes:
    """The varint of ``z`` (already zigzagged)."""
    out = bytearray()
    while z >= 0x80:  # noqa: PLR2004
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def long_bytes(n: int) -> bytes:
    """An Avro ``int``/``long``: zigzag, then a little-endian base-128 varint."""
    if -64 <= n < 64:  # noqa: PLR2004  # one byte
        return _SMALL[n + 64]
    return _unsigned((n << 1) ^ (n >> 63))


_LENGTHS.extend(long_bytes(n) for n in range(1024))


def blob_bytes(data: bytes) -> bytes:
    """An Avro ``bytes``: its length, then the bytes."""
    return long_bytes(len(data)) + data


def text_bytes(text: str) -> bytes:
    """An Avro ``string``: UTF-8 length-prefixed."""
    return blob_bytes(text.encode())


@functools.cache  # one codec per process: its union order, built once, not per record
def report_branches(codec: Codec) -> dict[str, int]:
    """Each report type's index in the container's ``report`` union (0 is null)."""
    return {name: index for index, name in enumerate(report_names(codec), start=1)}


def encode_report(codec: Codec, decoded: Decoded, value: bytes) -> bytes:
    """The container's ``report`` field for a decoded value: union index, then the body.

    The body is the value's own when its writer schema is the current one
    (the codec decoded it with no byte left over); else the report resolved
    to the current schema, encoded again.
    """
    name = decoded.report_type
    current = codec.registry.current[name]
    branch = long_bytes(report_branches(codec)[name])
    if decoded.writer_fingerprint == current.fingerprint:
        return branch + value[PREFIX_SIZE:]
    body = io.BytesIO()
    schemaless_writer(body, current.parsed, decoded.record)
    return branch + body.getvalue()


_LOW = 1 << 14
_LONG_END = 1 << 64
_VARINTS: list[bytes] = []
"""The varints of 0 … 2**14 - 1 (one or two bytes)."""
_LOW_PAIRS: list[bytes] = []
"""The first two bytes of the varint of any number of 2**14 or more, by its low 14 bits."""


_HIGHS: dict[int, bytes] = {}
"""The varints of zigzagged longs' bits above the lowest 14 (timestamps share them)."""


def fast_long(n: int) -> bytes:
    """:func:`long_bytes` from tables: the lowest 14 bits looked up, the rest cached."""
    z = (n << 1) ^ (n >> 63)
    if 0 <= z < _LOW:
        return _VARINTS[z]
    if not 0 <= z < _LONG_END:  # outside Avro's long: as long_bytes does
        return long_bytes(n)
    high = z >> 14
    rest = _HIGHS.get(high)
    if rest is None:
        rest = _remember(_HIGHS, high, _unsigned(high))
    return _LOW_PAIRS[z & 0x3FFF] + rest


_LOW_PAIRS.extend(bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(_LOW))
_VARINTS.extend(_unsigned(z) for z in range(_LOW))


class RecordEncoder:
    """Encodes a :class:`Replayed` as the container schema's ``ReplayedRecord``."""

    def __init__(self, codec: Codec) -> None:
        self._branches = report_branches(codec)
        self._current = {
            name: (schema.fingerprint_hex, schema.parsed)
            for name, schema in codec.registry.current.items()
        }
        self._texts: dict[str, bytes] = {}
        self._optionals: dict[str, bytes] = {}
        self._prefixes: dict[tuple[str, str, int, int], bytes] = {}

    def _text(self, text: str) -> bytes:
        # Topics, statuses, parties and header names repeat on every record.
        found = self._texts.get(text)
        if found is None:
            found = _remember(self._texts, text, text_bytes(text))
        return found

    def _report(self, record: Replayed) -> bytes:
        if record.report_avro is not None:
            return record.report_avro
        name = record.report_type
        if record.report is None or name is None or name not in self._branches:
            return b"\x00"
        branch = long_bytes(self._branches[name])
        current_hex, parsed = self._current[name]
        if record.schema_fingerprint == current_hex and record.value is not None:
            # Decoded (so exactly one datum, nothing left over) with the current schema.
            return branch + record.value[PREFIX_SIZE:]
        body = io.BytesIO()
        schemaless_writer(body, parsed, record.report)
        return branch + body.getvalue()

    def _optional(self, text: str | None) -> bytes:
        if text is None:
            return b"\x00"
        found = self._optionals.get(text)
        if found is None:
            found = _remember(self._optionals, text, b"\x02" + text_bytes(text))
        return found

    def _prefix(self, record: Replayed) -> bytes:
        place = (record.source, record.topic, record.partition, record.epoch)
        found = self._prefixes.get(place)
        if found is None:
            found = _remember(
                self._prefixes,
                place,
                b"".join(
                    (
                        self._text(record.source),
                        self._text(record.topic),
                        long_bytes(record.partition),
                        long_bytes(record.epoch),
                    )
                ),
            )
        return found

    def encode(self, record: Replayed) -> bytes:
        """The record's Avro encoding (fields in the container schema's order)."""
        # Inlined lookups rather than helper calls: this runs once per record.
        text, lengths = self._text, _LENGTHS
        parts = [
            self._prefix(record),
            fast_long(record.offset),
            fast_long(record.timestamp),
            _SMALL[record.timestamp_type + 64],  # 0 or 1: CreateTime, LogAppendTime
        ]
        key = record.key
        if key is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", _length(len(key)), key)
        headers, texts = record.headers, self._texts
        if headers:
            parts.append(_length(len(headers)))
            for name, raw in headers:
                size = len(raw)
                parts += (
                    texts.get(name) or text(name),
                    lengths[size] if size < 1024 else long_bytes(size),  # noqa: PLR2004
                    raw,
                )
        parts.append(b"\x00")  # the headers array's end
        value = record.value
        if value is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", _length(len(value)), value)
        optional, message_id, error = self._optional, record.message_id, record.decode_error
        parts += (
            optional(record.schema_fingerprint),
            optional(record.report_type),
            b"\x00" if message_id is None else b"\x02" + text_bytes(message_id),
            optional(record.originator),
            text(record.signature_status),
            text(record.signature_detail),
            b"\x00" if error is None else b"\x02" + text_bytes(error),
            self._report(record),
        )
        return b"".join(parts)


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 1024 else long_bytes(n)  # noqa: PLR2004


_ROLES = {H_TYPE: 1, H_MESSAGE_ID: 2, H_ORIGINATOR: 3}
"""Where the headers that become fields go in a record's picked headers (0: nowhere)."""


class RawRecordEncoder:
    """Encodes records read raw from Kafka (``--raw``) straight from the fetched records.

    The bytes are exactly :meth:`RecordEncoder.encode` of
    :func:`~services.replay._record.raw_replayed` (``tests/replay`` compare
    the two) without building a :class:`Replayed` per record: what repeats
    (a partition's coordinates, the constant status fields, header names,
    types, originators, schema fingerprints, a timestamp's high bits) is
    encoded once and looked up. A whole fetch is encoded in one loop: per
    record this is the main cost of a raw replay beside reading itself.
    """

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, int], bytes] = {}
        self._names: dict[str, tuple[bytes, int]] = {}
        """A header name's encoding, and where its value goes (``_ROLES``)."""
        self._optional: dict[bytes, bytes] = {}
        """Header values (type, originator) as the optional text fields they become."""
        self._fingerprints: dict[bytes, bytes] = {}
        """A value's single-object prefix as its ``schema_fingerprint`` field."""
        self._tail = b"".join(
            (text_bytes(NOT_CHECKED), text_bytes(RAW_DETAIL), b"\x00", b"\x00")
        )  # signature status and detail, no decode error, no report

    def _prefix(self, topic: str, partition: int) -> bytes:
        found = self._prefixes.get((topic, partition))
        if found is None:
            found = b"".join(
                (text_bytes("kafka"), text_bytes(topic), long_bytes(partition), long_bytes(0))
            )
            self._prefixes[topic, partition] = found
        return found

    def _name(self, name: str) -> tuple[bytes, int]:
        return _remember(self._names, name, (text_bytes(name), _ROLES.get(name, 0)))

    def _cached_text(self, raw: bytes) -> bytes:
        found = self._optional.get(raw)
        if found is None:
            found = _remember(self._optional, raw, _header_text(raw))
        return found

    def _fingerprint(self, value: bytes | None) -> bytes:
        start = b"" if value is None else value[:PREFIX_SIZE]
        found = self._fingerprints.get(start)
        if found is None:
            hexed = value_fingerprint(start)  # reads no further than the prefix
            found = _remember(
                self._fingerprints,
                start,
                b"\x00" if hexed is None else b"\x02" + text_bytes(hexed),
            )
        return found

    def encode(self, records: Sequence[KafkaRecord]) -> list[bytes]:
        """Each record's Avro encoding as a raw replay of it from Kafka."""
        # One loop with everything in locals: this runs once per record.
        lengths, varints, pairs, small = _LENGTHS, _VARINTS, _LOW_PAIRS, _SMALL
        highs, names, optional, fingerprints = (
            _HIGHS,
            self._names,
            self._optional,
            self._fingerprints,
        )
        long, text, tail = fast_long, self._cached_text, self._tail
        out: list[bytes] = []
        for record in records:
            offset, timestamp = record.offset, record.timestamp
            z = (offset << 1) ^ (offset >> 63)
            zt = (timestamp << 1) ^ (timestamp >> 63)
            high = highs.get(zt >> 14)
            parts = [
                self._prefix(record.topic, record.partition),
                varints[z] if 0 <= z < _LOW else long(offset),
                pairs[zt & 0x3FFF] + high
                if high is not None and _LOW <= zt < _LONG_END
                else long(timestamp),
                small[record.timestamp_type + 64],
            ]
            key = record.key
            if key is None:
                parts.append(b"\x00")
            else:
                parts += (b"\x02", _length(len(key)), key)
            headers = record.headers
            picked: list[bytes | None] = [None, None, None, None]
            if headers:
                parts.append(_length(len(headers)))
                for name, raw in headers:
                    size = len(raw)
                    encoded, role = names.get(name) or self._name(name)
                    picked[role] = raw  # the last of a repeated header counts, as in a dict
                    parts += (encoded, lengths[size] if size < 1024 else long_bytes(size), raw)  # noqa: PLR2004
            parts.append(b"\x00")  # the headers array's end
            value = record.value
            if value is None:
                parts += (b"\x00", self._fingerprint(None))
            else:
                size = len(value)
                parts += (
                    b"\x02",
                    lengths[size] if size < 1024 else long_bytes(size),  # noqa: PLR2004
                    value,
                    fingerprints.get(value[:PREFIX_SIZE]) or self._fingerprint(value),
                )
            _, report_type, message_id, originator = picked
            parts += (
                b"\x00" if report_type is None else optional.get(report_type) or text(report_type),
                b"\x00" if message_id is None else _header_text(message_id),
                b"\x00" if originator is None else optional.get(originator) or text(originator),
                tail,
            )
            out.append(b"".join(parts))
        return out


def _header_text(raw: bytes) -> bytes:
    """A header's value as a present optional text: what ``header_text`` reads, UTF-8 again."""
    if raw.isascii():
        return b"\x02" + _length(len(raw)) + raw
    return b"\x02" + text_bytes(raw.decode(errors="replace"))


def _zstd() -> Callable[[bytes], bytes]:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        return lambda data: bytes(module.compress(data, level=ZSTD_LEVEL))
    raise ImportError("zstandard needs Python 3.14 or the backports.zstd package")


def compressor(codec: str) -> Callable[[bytes], bytes]:
    """The block compression the Avro specification names ``codec``."""
    if codec == "null":
        return bytes
    if codec == "deflate":

        def deflate(data: bytes) -> bytes:
            # Raw deflate (RFC 1951), no zlib header: as the specification says.
            packer = isal_zlib.compressobj(DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)
            return packer.compress(data) + packer.flush()

        return deflate
    if codec == "zstandard":
        return _zstd()
    raise ValueError(f"unknown Avro codec {codec!r}")


class ContainerWriter:
    """An Avro object container file of encoded datums, written block by block.

    Blocks are compressed and written by one thread of their own (zlib and
    zstd release the GIL), so compression runs beside the encoding on another
    core; at most :data:`BLOCKS_AHEAD` blocks wait, bounding memory.
    """

    def __init__(self, stream: IO[bytes], schema: dict[str, Any], codec: str) -> None:
        parse_schema(schema)  # refuse a schema no reader could use, before writing
        self._stream = stream
        self._compress = compressor(codec)
        self._sync = os.urandom(SYNC_SIZE)
        self._pending: list[bytes] = []
        self._size = 0
        self._writing: deque[Future[None]] = deque()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="oix-replay-avro")
        meta = {
            "avro.schema": json.dumps(schema, separators=(",", ":")).encode(),
            "avro.codec": codec.encode(),
        }
        header = [MAGIC, long_bytes(len(meta))]
        for key, raw in meta.items():
            header += [text_bytes(key), blob_bytes(raw)]
        header += [b"\x00", self._sync]
        stream.write(b"".join(header))

    def append(self, datum: bytes) -> None:
        """Add one encoded datum; a full block is handed to the writing thread."""
        self._pending.append(datum)
        self._size += len(datum)
        if self._size >= BLOCK_BYTES:
            self._hand_over()

    def extend(self, data: list[bytes]) -> None:
        """Add encoded datums; blocks are cut where :meth:`append` one at a time cuts them."""
        size = self._size
        for datum in data:
            self._pending.append(datum)
            size += len(datum)
            if size >= BLOCK_BYTES:
                self._size = size
                self._hand_over()
                size = 0
        self._size = size

    def _hand_over(self) -> None:
        if not self._pending:
            return
        count, data = len(self._pending), b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        while len(self._writing) >= BLOCKS_AHEAD:
            self._writing.popleft().result()  # raises what writing raised (a full disk)
        self._writing.append(self._thread.submit(self._write_block, count, data))

    def _write_block(self, count: int, data: bytes) -> None:
        packed = self._compress(data)
        self._stream.write(
            b"".join((long_bytes(count), long_bytes(len(packed)), packed, self._sync))
        )

    def flush(self) -> None:
        """Write every datum held, as whole blocks, and wait until they are written."""
        self._hand_over()
        while self._writing:
            self._writing.popleft().result()

    def close(self) -> None:
        """Flush, and stop the writing thread."""
        try:
            self.flush()
        finally:
            self._thread.shutdown(wait=True)


def replay_container(stream: IO[bytes], codec: Codec, compression: str) -> ContainerWriter:
    """A container file of ReplayedRecords for ``codec``'s current report schemas."""
    return ContainerWriter(stream, container_schema(codec), compression)
