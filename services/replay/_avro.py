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
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from fastavro import parse_schema, schemaless_writer

from services.bus import PREFIX_SIZE, Codec, Decoded
from services.replay._container import container_schema, report_names
from services.replay._record import Replayed

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
BLOCK_BYTES = 256 * 1024
"""Uncompressed bytes per block: large enough to compress well, small enough for memory."""
BLOCKS_AHEAD = 2
"""Blocks waiting for the writing thread at most."""
DEFLATE_LEVEL = 1
"""zlib's fastest level: on replayed IncidentReports 163 bytes a record against 157 at the
default level 6, for 4.5 µs of CPU a record instead of 9-11 (measured)."""
ZSTD_LEVEL = 3
_CACHED_TEXTS = 4096
_SMALL = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]
_LENGTHS: list[bytes] = []
"""The encodings of 0 … 1023 (lengths of names, header values, values): looked up, not computed."""


def long_bytes(n: int) -> bytes:
    """An Avro ``int``/``long``: zigzag, then a little-endian base-128 varint."""
    if -64 <= n < 64:  # noqa: PLR2004  # one byte
        return _SMALL[n + 64]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:  # noqa: PLR2004
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


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


class RecordEncoder:
    """Encodes a :class:`Replayed` as the container schema's ``ReplayedRecord``."""

    def __init__(self, codec: Codec) -> None:
        self._branches = report_branches(codec)
        self._current = {
            name: (schema.fingerprint_hex, schema.parsed)
            for name, schema in codec.registry.current.items()
        }
        self._texts: dict[str, bytes] = {}

    def _text(self, text: str) -> bytes:
        # Topics, statuses, parties and header names repeat on every record.
        found = self._texts.get(text)
        if found is None:
            if len(self._texts) >= _CACHED_TEXTS:
                self._texts.clear()
            found = self._texts[text] = text_bytes(text)
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

    def encode(self, record: Replayed) -> bytes:
        """The record's Avro encoding (fields in the container schema's order)."""
        # Inlined lookups rather than helper calls: this runs once per record.
        text, small = self._text, _SMALL
        parts = [text(record.source), text(record.topic)]
        parts.extend(
            small[n + 64] if -64 <= n < 64 else long_bytes(n)  # noqa: PLR2004
            for n in (record.partition, record.epoch, record.offset, record.timestamp)
        )
        parts.append(small[record.timestamp_type + 64])  # 0 or 1: CreateTime, LogAppendTime
        key = record.key
        if key is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", _length(len(key)), key)
        headers, texts, lengths = record.headers, self._texts, _LENGTHS
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
        for optional in (record.schema_fingerprint, record.report_type):
            parts.append(b"\x00" if optional is None else b"\x02" + text(optional))
        message_id = record.message_id
        parts.append(b"\x00" if message_id is None else b"\x02" + text_bytes(message_id))
        originator = record.originator
        parts.append(b"\x00" if originator is None else b"\x02" + text(originator))
        parts.append(text(record.signature_status))
        parts.append(text(record.signature_detail))
        error = record.decode_error
        parts.append(b"\x00" if error is None else b"\x02" + text_bytes(error))
        parts.append(self._report(record))
        return b"".join(parts)


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 1024 else long_bytes(n)  # noqa: PLR2004


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
            packer = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
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
