"""One audited Kafka record as the store keeps it, and how it is built from what arrived.

Building a record is pure: it takes the Kafka facts and the bus's
:class:`~services.bus.Opener`, and never raises for bad input, so a poison
record is stored, flagged, like any other.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from services.bus import (
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_TYPE,
    CorruptMessageError,
    KafkaRecord,
    Opener,
    SignatureStatus,
    UnknownSchemaError,
    read_fingerprint,
)

EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
NOT_STORED = EPOCH_START
"""``stored_at`` of a record that has not been written yet."""

Headers = tuple[tuple[str, bytes], ...]

UNKNOWN_SCHEMA_ERROR = f"{UnknownSchemaError.__name__}: "
"""How ``decode_error`` begins for a value whose writer schema was not released (yet)."""


class AuditRecord(NamedTuple):
    """One stored record: its Kafka coordinates and facts, what opening it found, its chain link.

    The field order is the column order of the ``audit_record`` table and the
    order in which the hash chain covers the fields (see ``docs/audit.md``).
    """

    topic: str
    kafka_partition: int
    epoch: int
    kafka_offset: int
    kafka_timestamp: int
    timestamp_type: int
    record_key: bytes | None
    headers: str
    value: bytes | None
    schema_fingerprint: str | None
    message_id: str | None
    originator: str | None
    report_type: str | None
    signature_status: str
    signature_detail: str
    decoded: str | None
    decode_error: str | None
    stored_at: datetime
    row_hash: bytes
    value_digest: bytes | None = None
    """SHA-256 of the original ``value`` (None for none): kept, and chained, after a purge."""
    opened_digest: bytes | None = None
    """SHA-256 of what opening found (``decoded``, ``decode_error``): kept after a purge."""
    retain_until: int | None = None
    """Kafka time (ms) the content may be kept until; None: the agreement's default applies."""
    purged_at: datetime | None = None
    """When the content (value, decoded, decode_error) was purged; None while it is kept."""
    purge_id: str | None = None
    """The retention event that purged it (``audit_retention_event``)."""

    def header_pairs(self) -> Headers:
        """The Kafka headers exactly as they arrived."""
        return decode_headers(self.headers)

    @property
    def trusted(self) -> bool:
        """Decoded and signed by the originator it names (the only proven originator)."""
        return self.signature_status == SignatureStatus.VALID and self.decode_error is None

    @property
    def purged(self) -> bool:
        """Its content was purged (retention or erasure): only digests and facts remain."""
        return self.purged_at is not None

    @property
    def unknown_schema(self) -> bool:
        """Stored raw because its writer schema (:attr:`schema_fingerprint`) is not released."""
        return (self.decode_error or "").startswith(UNKNOWN_SCHEMA_ERROR)


COLUMNS: tuple[str, ...] = AuditRecord._fields

CHAINED = COLUMNS.index("row_hash")
"""Fields before this index are the stored facts; ``row_hash`` and the ones after are derived."""

PURGED_FIELDS = ("value", "decoded", "decode_error")
"""The content a purge removes; every other column stays (see ``docs/audit.md``)."""

DAY_MS = 86_400_000


def coordinates_key(topic: str, partition: int, epoch: int, offset: int) -> bytes:
    """The key of a quarantine copy: the original's ``topic/partition/epoch/offset``.

    Topic names cannot hold ``/``; the epoch tells apart two records at one
    offset of a log that went backwards (see ``docs/audit.md``).
    """
    return f"{topic}/{partition}/{epoch}/{offset}".encode()


def reason_of(record: AuditRecord) -> str:
    """Why ``record`` cannot be trusted, as one word (the ``oix-quarantine-reason`` header)."""
    status = record.signature_status
    if status not in {SignatureStatus.VALID, SignatureStatus.UNVERIFIED_ORIGIN}:
        return status  # invalid, unsigned, unknown_key: the signature says enough
    if record.unknown_schema:
        return "unknown_schema"
    return "undecodable"


def encode_headers(headers: Headers) -> str:
    """Kafka headers as JSON text, order and duplicates kept, every byte recoverable.

    A value that is UTF-8 text is kept as ``text`` (readable in SQL); any other
    value as ``base64``.
    """
    items: list[dict[str, str]] = []
    for name, raw in headers:
        try:
            items.append({"name": name, "text": raw.decode()})
        except UnicodeDecodeError:
            items.append({"name": name, "base64": base64.b64encode(raw).decode()})
    return orjson.dumps(items).decode()


def decode_headers(text: str) -> Headers:
    """The inverse of :func:`encode_headers`."""
    pairs = []
    for item in orjson.loads(text):
        raw = item["text"].encode() if "text" in item else base64.b64decode(item["base64"])
        pairs.append((item["name"], raw))
    return tuple(pairs)


def schema_fingerprint(value: bytes | None) -> str | None:
    """The writer schema fingerprint an Avro single-object value names, as 16 hex digits.

    The hex spelling of the 8 bytes after ``C3 01`` in wire order: the released
    schema file's name and the ``oix-schema`` header.
    """
    if value is None:
        return None
    try:
        fingerprint = read_fingerprint(value)
    except CorruptMessageError:
        return None
    return fingerprint.hex()


def clean_text(text: str | None) -> str | None:
    """``text`` that every store accepts: no NUL characters, no lone surrogates.

    Header values and error messages come from outside; PostgreSQL refuses
    both in ``text`` columns, and a refused row would block its partition.
    """
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="replace").decode()
    return text


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _header_text(found: dict[str, bytes], name: str) -> str | None:
    raw = found.get(name)
    return None if raw is None else raw.decode(errors="replace")


class Opening(NamedTuple):
    """What decoding and verifying a record's value and headers found (fields of AuditRecord)."""

    headers: str
    schema_fingerprint: str | None
    message_id: str | None
    originator: str | None
    report_type: str | None
    signature_status: str
    signature_detail: str
    decoded: str | None
    decode_error: str | None
    retention_days: int | None = None
    """The signed header's ``retention_days`` (None when it has none or did not decode)."""


def _retention_days(header: dict[str, Any]) -> int | None:
    days = header.get("retention_days")
    return days if isinstance(days, int) and not isinstance(days, bool) and days > 0 else None


def open_value(opener: Opener, value: bytes | None, headers: Headers) -> Opening:
    """Decode and verify one record's value; never raises for bad input.

    Where the value decodes, message id, originator and type come from the
    signed content; where it does not, from the Kafka headers, which nobody
    vouches for (the signature status says so).
    """
    opened = opener.open(value, headers)
    decoded_json: str | None = None
    decode_error: str | None = None
    retention_days: int | None = None
    if opened.decoded is not None:
        decoded = opened.decoded
        message_id: str | None = str(decoded.message_id)
        originator = clean_text(decoded.originator)
        report_type: str | None = decoded.report_type
        retention_days = _retention_days(decoded.header)
        try:
            decoded_json = orjson.dumps(decoded.record, default=_json_default).decode()
        except TypeError as exc:
            decode_error = f"decoded, but not representable as JSON: {exc}"
    else:
        found = opened.headers
        message_id = clean_text(_header_text(found, H_MESSAGE_ID))
        originator = clean_text(_header_text(found, H_ORIGINATOR))
        report_type = clean_text(_header_text(found, H_TYPE))
        error = opened.decode_error
        decode_error = f"{type(error).__name__}: {error}" if error is not None else None
    verification = opened.verification
    return Opening(
        encode_headers(headers),
        schema_fingerprint(value),
        message_id,
        originator,
        report_type,
        str(verification.status),
        clean_text(verification.reason) or "",
        decoded_json,
        clean_text(decode_error),
        retention_days,
    )


def assemble(record: KafkaRecord, epoch: int, opening: Opening) -> AuditRecord:
    """The unstored :class:`AuditRecord` of ``record`` in ``epoch``."""
    return AuditRecord(
        record.topic,
        record.partition,
        epoch,
        record.offset,
        record.timestamp,
        record.timestamp_type,
        record.key,
        opening.headers,
        record.value,
        *opening[1:9],
        NOT_STORED,
        b"",
        retain_until=retain_until(record.timestamp, opening.retention_days),
    )


def retain_until(timestamp: int, retention_days: int | None) -> int | None:
    """Until when (Kafka time, ms) a record's content may be kept; None: the default applies.

    Retention counts from the record's Kafka timestamp (the time the broker's
    ``retention.ms`` counts from too), not from when the audit stored it.
    """
    return None if retention_days is None else timestamp + retention_days * DAY_MS


def open_record(opener: Opener, record: KafkaRecord, epoch: int) -> AuditRecord:
    """Decode and verify one Kafka record into an unstored :class:`AuditRecord` of ``epoch``."""
    return assemble(record, epoch, open_value(opener, record.value, tuple(record.headers)))
