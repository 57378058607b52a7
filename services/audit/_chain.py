"""The tamper-evident hash chain of each partition: pure functions, no I/O.

Each stored row's hash is ``SHA-256(previous row's hash || canonical encoding
of the row)``; the first row of a partition follows :data:`GENESIS`. The
chain runs through every epoch of a partition, so a row altered, inserted or
deleted anywhere breaks every later link. ``docs/audit.md`` specifies the
encoding so that an auditor can recompute it with other tools.

Chain version 2 covers the content (the value, and what opening it found)
through its SHA-256 digests, which the row keeps: purging the content by
retention leaves every link verifiable, while altering the content breaks
the digest, and altering a digest breaks the chain. Version 1 (before
retention) covered the content itself; :func:`link_v1` recomputes it for the
migration that re-chains old stores.
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

CHAIN_TAG = b"oix-audit-chain/2\n"
CHAIN_TAG_V1 = b"oix-audit-chain/1\n"
FACTS_TAG = b"oix-audit-facts/2\n"
OPENED_TAG = b"oix-audit-opened/1\n"

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
_STORED_AT = AuditRecord._fields.index("stored_at")


def _encode_v1(record: AuditRecord, stored_at: bytes) -> bytes:
    r = record
    return b"".join(
        (
            CHAIN_TAG_V1,
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


def _optional_int(value: int | None) -> bytes:
    return _NULL if value is None else _INT.pack(_T_INT, value)


def value_digest(value: bytes | None) -> bytes | None:
    """SHA-256 of a record's value (None for none): what the chain covers of it."""
    return None if value is None else hashlib.sha256(value).digest()


def opened_digest(decoded: str | None, decode_error: str | None) -> bytes:
    """SHA-256 of what opening a value found: the decoded JSON and the decode error."""
    return hashlib.sha256(OPENED_TAG + _text(decoded) + _text(decode_error)).digest()


def with_digests(record: AuditRecord) -> AuditRecord:
    """``record`` with the digests of its content (before it is chained)."""
    return record._replace(
        value_digest=value_digest(record.value),
        opened_digest=opened_digest(record.decoded, record.decode_error),
    )


def content_matches(record: AuditRecord) -> bool:
    """The content a row still holds agrees with its digests (always true once purged)."""
    if record.purged_at is not None:
        return True
    return record.value_digest == value_digest(record.value) and (
        record.opened_digest == opened_digest(record.decoded, record.decode_error)
    )


def _encode(record: AuditRecord, stored_at: bytes) -> bytes:
    return _encode_with(record, record.value_digest, record.opened_digest, stored_at)


def _encode_with(
    r: AuditRecord, value_digest: bytes | None, opened_digest: bytes | None, stored_at: bytes
) -> bytes:
    # The same bytes as encoding each field with _field, in one pass: this runs
    # for every record the consumer stores. Content enters through its digests.
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
            _blob(value_digest),
            _text(r.schema_fingerprint),
            _text(r.message_id),
            _text(r.originator),
            _text(r.report_type),
            _text(r.signature_status),
            _text(r.signature_detail),
            _blob(opened_digest),
            _optional_int(r.retain_until),
            stored_at,
        ),
    )


CHAINED_FIELDS = (
    "topic",
    "kafka_partition",
    "epoch",
    "kafka_offset",
    "kafka_timestamp",
    "timestamp_type",
    "record_key",
    "headers",
    "value_digest",
    "schema_fingerprint",
    "message_id",
    "originator",
    "report_type",
    "signature_status",
    "signature_detail",
    "opened_digest",
    "retain_until",
    "stored_at",
)
"""What chain version 2 covers, in order (``docs/audit.md``)."""


def canonical(record: AuditRecord) -> bytes:
    """The bytes of ``record`` the chain covers: :data:`CHAINED_FIELDS`, in that order."""
    return _encode(record, _field(record.stored_at))


def canonical_reference(record: AuditRecord) -> bytes:
    """:func:`canonical`, field by field as the specification reads (for tests)."""
    return CHAIN_TAG + b"".join([_field(getattr(record, name)) for name in CHAINED_FIELDS])


def link(previous: bytes, record: AuditRecord) -> bytes:
    """The hash of ``record`` following a row whose hash is ``previous`` (chain version 2)."""
    return hashlib.sha256(previous + canonical(record)).digest()


def link_v1(previous: bytes, record: AuditRecord) -> bytes:
    """The hash chain version 1 gave ``record`` (it covered the content itself)."""
    return hashlib.sha256(previous + _encode_v1(record, _field(record.stored_at))).digest()


def kafka_facts(
    timestamp: int, timestamp_type: int, key: bytes | None, headers: str, value: bytes | None
) -> bytes:
    """A digest of what the broker said about one record (headers as stored JSON).

    The consumer compares it with the broker's record at a stored offset to
    tell a log that continues from one that was replaced. The value enters
    through its digest, so a purged row is compared as well as a kept one.
    """
    return _facts(timestamp, timestamp_type, key, headers, value_digest(value))


def _facts(
    timestamp: int, timestamp_type: int, key: bytes | None, headers: str, digest: bytes | None
) -> bytes:
    parts = [
        _field(timestamp),
        _field(timestamp_type),
        _field(key),
        _field(headers),
        _field(digest),
    ]
    return hashlib.sha256(FACTS_TAG + b"".join(parts)).digest()


def facts_of(record: AuditRecord) -> bytes:
    """:func:`kafka_facts` of a stored record (from its value digest: purged or not)."""
    return _facts(
        record.kafka_timestamp,
        record.timestamp_type,
        record.record_key,
        record.headers,
        record.value_digest,
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
    make = AuditRecord._make
    for record in records:
        where = (record.topic, record.kafka_partition)
        value = record.value
        value_hash = None if value is None else sha256(value).digest()
        opened = sha256(OPENED_TAG + _text(record.decoded) + _text(record.decode_error)).digest()
        digest = sha256(current[where] + _encode_with(record, value_hash, opened, stamp)).digest()
        current[where] = digest
        # One tuple built directly: _replace costs more than the hashing here.
        out.append(
            make(
                (
                    *record[:_STORED_AT],
                    stored_at,
                    digest,
                    value_hash,
                    opened,
                    record.retain_until,
                    None,
                    None,
                ),
            ),
        )
    return Linked(out, current)
