"""The tamper-evident hash chain of each partition: pure functions, no I/O.

Each stored row's hash is ``SHA-256(previous row's hash || canonical encoding
of the row)``; the first row of a partition follows :data:`GENESIS`. The
chain runs through every epoch of a partition, so a row altered, inserted or
deleted anywhere breaks every later link. ``docs/audit.md`` specifies the
encoding so that an auditor can recompute it with other tools.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.audit._record import EPOCH_START, AuditRecord

GENESIS = bytes(32)
"""The hash a partition's first row follows."""

CHAIN_TAG = b"oix-audit-chain/1\n"
FACTS_TAG = b"oix-audit-facts/1\n"

_INT = struct.Struct(">Bq")
_LEN = struct.Struct(">BI")
_NULL = b"\x00"
_T_INT, _T_TEXT, _T_BYTES, _T_TIME = 1, 2, 3, 4
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since 1970 UTC; a naive ``moment`` is taken as UTC (SQLite returns those)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH_START) // _MICROSECOND


def _field(value: object) -> bytes:
    if value is None:
        return _NULL
    if isinstance(value, int):
        return _INT.pack(_T_INT, value)
    if isinstance(value, str):
        data = value.encode()
        return _LEN.pack(_T_TEXT, len(data)) + data
    if isinstance(value, bytes):
        return _LEN.pack(_T_BYTES, len(value)) + value
    if isinstance(value, datetime):
        return _INT.pack(_T_TIME, micros(value))
    raise TypeError(f"no canonical encoding for {type(value).__name__}")


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _LEN.pack(_T_TEXT, len(data)) + data


def _blob(value: bytes | None) -> bytes:
    if value is None:
        return _NULL
    return _LEN.pack(_T_BYTES, len(value)) + value


_FIVE_INTS = struct.Struct(">BqBqBqBqBq")


def _encode(record: AuditRecord, stored_at: bytes) -> bytes:
    # The same bytes as encoding each field with _field, in one pass: this runs
    # for every record the consumer stores.
    r = record
    return b"".join(
        (
            CHAIN_TAG,
            _text(r.topic),
            _FIVE_INTS.pack(
                _T_INT,
                r.kafka_partition,
                _T_INT,
                r.epoch,
                _T_INT,
                r.kafka_offset,
                _T_INT,
                r.kafka_timestamp,
                _T_INT,
                r.timestamp_type,
            ),
            _blob(r.record_key),
            _text(r.headers),
            _blob(r.value),
            _text(r.schema_fingerprint),
            _text(r.message_id),
            _text(r.originator),
            _text(r.report_type),
            _text(r.signature_status),
            _text(r.signature_detail),
            _text(r.decoded),
            _text(r.decode_error),
            stored_at,
        ),
    )


def canonical(record: AuditRecord) -> bytes:
    """The bytes of ``record`` the chain covers: every field but ``row_hash``, in column order."""
    return _encode(record, _field(record.stored_at))


def canonical_reference(record: AuditRecord) -> bytes:
    """:func:`canonical`, field by field as the specification reads (for tests)."""
    return CHAIN_TAG + b"".join([_field(v) for v in record[:-1]])


def link(previous: bytes, record: AuditRecord) -> bytes:
    """The hash of ``record`` following a row whose hash is ``previous``."""
    return hashlib.sha256(previous + canonical(record)).digest()


def kafka_facts(
    timestamp: int, timestamp_type: int, key: bytes | None, headers: str, value: bytes | None
) -> bytes:
    """A digest of what the broker said about one record (headers as stored JSON).

    The consumer compares it with the broker's record at a stored offset to
    tell a log that continues from one that was replaced.
    """
    parts = [_field(timestamp), _field(timestamp_type), _field(key), _field(headers), _field(value)]
    return hashlib.sha256(FACTS_TAG + b"".join(parts)).digest()


def facts_of(record: AuditRecord) -> bytes:
    """:func:`kafka_facts` of a stored record."""
    return kafka_facts(
        record.kafka_timestamp,
        record.timestamp_type,
        record.record_key,
        record.headers,
        record.value,
    )


@dataclass(frozen=True, slots=True)
class Linked:
    """Records stamped and chained, and the last hash of every partition they touch."""

    records: list[AuditRecord]
    heads: dict[tuple[str, int], bytes]


def chain(
    records: Iterable[AuditRecord],
    heads: dict[tuple[str, int], bytes],
    stored_at: datetime,
) -> Linked:
    """Stamp ``records`` with ``stored_at`` and link each to its partition's previous row.

    ``heads`` holds the hash of the last stored row of every partition in
    ``records`` (:data:`GENESIS` when a partition has none); a missing head is
    a bug, never a new chain. Records of one partition come in offset order.
    """
    current = dict(heads)
    out: list[AuditRecord] = []
    stamp = _field(stored_at)
    sha256 = hashlib.sha256
    for record in records:
        where = (record.topic, record.kafka_partition)
        digest = sha256(current[where] + _encode(record, stamp)).digest()
        current[where] = digest
        out.append(AuditRecord(*record[:-2], stored_at, digest))
    return Linked(out, current)
