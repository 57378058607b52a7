"""One replayed record: its Kafka facts exactly as on the wire, and what opening it found.

Records come from the broker or from the audit store; both become a
:class:`Replayed`, decoded with the schema version that wrote them resolved to
the current one. Opening never raises: an undecodable record is replayed with
its reason, never skipped.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.audit import AuditRecord
from services.bus import (
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_TYPE,
    Codec,
    DecodeError,
    KafkaRecord,
    Opener,
    read_fingerprint,
)

NOT_CHECKED = "not_checked"
"""The signature status of a record replayed without signature checks (``--no-checks``)."""
NOT_CHECKED_DETAIL = "replayed without signature checks"
RAW_DETAIL = "replayed raw: not decoded, signature not checked"

Headers = tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class Replayed:
    """A record as replayed: coordinates, raw key/headers/value, and the decoded report."""

    source: str
    """``kafka`` or ``store``."""
    topic: str
    partition: int
    epoch: int
    """The audit store's epoch of the partition's log (0 for records read from Kafka)."""
    offset: int
    timestamp: int
    """The Kafka record timestamp, milliseconds since 1970 UTC."""
    timestamp_type: int
    key: bytes | None
    headers: Headers
    value: bytes | None
    schema_fingerprint: str | None
    report_type: str | None
    message_id: str | None
    originator: str | None
    signature_status: str
    signature_detail: str
    report: dict[str, Any] | None
    """The decoded report (Avro data resolved to the current schema), None when undecodable."""
    decode_error: str | None
    stored: AuditRecord | None = None
    """The audit store's row (its chain link), for records read from the store."""
    report_avro: bytes | None = None
    """The report as the Avro container's ``report`` union (index, then body), when the
    reader made it: worker processes send this instead of the decoded dict (``_opening``)."""

    @property
    def undecodable(self) -> bool:
        """Opening the value failed (a raw replay, which does not decode, is not undecodable)."""
        return self.decode_error is not None

    @property
    def time(self) -> datetime:
        """The Kafka record timestamp as a UTC time."""
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    def header_field(self, name: str) -> Any:
        """A field of the decoded report's MessageHeader (None when undecodable)."""
        if self.report is None:
            return None
        return self.report["header"].get(name)


def header_text(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode(errors="replace")


def value_fingerprint(value: bytes | None) -> str | None:
    try:
        return read_fingerprint(value or b"").hex()
    except DecodeError:
        return None


def _purged(source: str, facts: KafkaRecord, epoch: int, stored: AuditRecord) -> Replayed:
    """A record whose content retention purged: shown as what it is, never as missing."""
    purged_at = stored.purged_at.isoformat() if stored.purged_at is not None else "?"
    digest = stored.value_digest.hex() if stored.value_digest is not None else "none"
    return Replayed(
        source,
        facts.topic,
        facts.partition,
        epoch,
        facts.offset,
        facts.timestamp,
        facts.timestamp_type,
        facts.key,
        tuple(facts.headers),
        None,
        stored.schema_fingerprint,
        stored.report_type,
        stored.message_id,
        stored.originator,
        stored.signature_status,
        stored.signature_detail,
        None,
        f"purged by retention at {purged_at} (event {stored.purge_id}); value SHA-256 {digest}",
        stored,
    )


def open_replayed(
    codec: Codec,
    opener: Opener | None,
    source: str,
    facts: KafkaRecord,
    *,
    epoch: int = 0,
    stored: AuditRecord | None = None,
) -> Replayed:
    """Decode (and with ``opener``, verify) one record; never raises for bad input.

    Without ``opener`` the signature is not checked: the status is the stored
    one for a stored record, :data:`NOT_CHECKED` for one read from Kafka.
    """
    headers = tuple(facts.headers)
    value = facts.value
    if stored is not None and stored.purged_at is not None:
        return _purged(source, facts, epoch, stored)
    found = dict(headers)
    report: dict[str, Any] | None = None
    error: str | None = None
    if opener is not None:
        opened = opener.open(value, headers)
        decoded = opened.decoded
        status, detail = str(opened.verification.status), opened.verification.reason
        if opened.decode_error is not None:
            error = f"{type(opened.decode_error).__name__}: {opened.decode_error}"
    else:
        decoded = None
        try:
            decoded = codec.decode(value or b"")
        except DecodeError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if stored is not None:
            status, detail = stored.signature_status, stored.signature_detail
        else:
            status, detail = NOT_CHECKED, NOT_CHECKED_DETAIL
    if decoded is not None:
        report = decoded.record
        message_id: str | None = str(decoded.message_id)
        originator: str | None = decoded.originator
        report_type: str | None = decoded.report_type
    else:
        message_id = header_text(found, H_MESSAGE_ID)
        originator = header_text(found, H_ORIGINATOR)
        report_type = header_text(found, H_TYPE)
    return Replayed(
        source,
        facts.topic,
        facts.partition,
        epoch,
        facts.offset,
        facts.timestamp,
        facts.timestamp_type,
        facts.key,
        headers,
        value,
        value_fingerprint(value),
        report_type,
        message_id,
        originator,
        status,
        detail,
        report,
        error,
        stored,
    )


def raw_replayed(
    source: str, facts: KafkaRecord, *, epoch: int = 0, stored: AuditRecord | None = None
) -> Replayed:
    """A record replayed raw: wire bytes, headers and coordinates, neither decoded nor verified.

    Type, message id and originator are what the headers (or the store's row) say;
    the report is null and no decode error is claimed.
    """
    if stored is not None and stored.purged_at is not None:
        return _purged(source, facts, epoch, stored)
    headers = tuple(facts.headers)
    if stored is not None:
        report_type, message_id, originator = (
            stored.report_type,
            stored.message_id,
            stored.originator,
        )
        status, detail = stored.signature_status, stored.signature_detail
    else:
        found = dict(headers)
        report_type = header_text(found, H_TYPE)
        message_id = header_text(found, H_MESSAGE_ID)
        originator = header_text(found, H_ORIGINATOR)
        status, detail = NOT_CHECKED, RAW_DETAIL
    return Replayed(
        source,
        facts.topic,
        facts.partition,
        epoch,
        facts.offset,
        facts.timestamp,
        facts.timestamp_type,
        facts.key,
        headers,
        facts.value,
        value_fingerprint(facts.value),
        report_type,
        message_id,
        originator,
        status,
        detail,
        None,
        None,
        stored,
    )


@dataclass(frozen=True, slots=True)
class StoredFacts:
    """A stored row seen as the Kafka record it was (a :class:`~services.bus.KafkaRecord`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, row: AuditRecord) -> StoredFacts:
        """The Kafka facts of a stored row."""
        return cls(
            row.topic,
            row.kafka_partition,
            row.kafka_offset,
            row.kafka_timestamp,
            row.timestamp_type,
            None if row.record_key is None else bytes(row.record_key),
            None if row.value is None else bytes(row.value),
            row.header_pairs(),
        )


def json_default(value: Any) -> Any:
    """What orjson cannot write by itself: bytes as base64, decimals as text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def header_items(headers: Headers) -> list[dict[str, str]]:
    """Kafka headers as JSON items: ``text`` when UTF-8, else ``base64`` (order kept)."""
    items: list[dict[str, str]] = []
    for name, raw in headers:
        try:
            items.append({"name": name, "text": raw.decode()})
        except UnicodeDecodeError:
            items.append({"name": name, "base64": base64.b64encode(raw).decode()})
    return items
