"""The evidence bundle's format: its files, the schema of ``records.avro``, row conversions.

``docs/replay.md`` specifies every file; the export (``_evidence``) and the
check (``_check``) share this module, and ``standalone_check.py``
implements the same format again without OIX's code.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro

from services.audit import AuditRecord

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RECORDS = "records.avro"
KEYS = "keys.json"
AGREEMENT = "agreement.yaml"
CHECKER = "check_evidence.py"
FORMAT = "oix-evidence/2"

STANDALONE = Path(__file__).with_name("standalone_check.py")
"""The standalone checker every bundle carries a copy of."""
_OPTIONAL_TEXT = ["null", "string"]

EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "EvidenceRecord",
    "namespace": "eu.oix.evidence",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "epoch", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long"},
        {"name": "timestamp_type", "type": "int"},
        {"name": "key", "type": ["null", "bytes"]},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Header",
                    "fields": [
                        {"name": "name", "type": "string"},
                        {"name": "value", "type": "bytes"},
                    ],
                },
            },
        },
        {"name": "value", "type": ["null", "bytes"]},
        {
            "name": "stored",
            "type": {
                "type": "record",
                "name": "StoredRow",
                "doc": "The audit store's row: what the chain covers besides the Kafka facts.",
                "fields": [
                    {"name": "headers_json", "type": "string"},
                    {"name": "schema_fingerprint", "type": _OPTIONAL_TEXT},
                    {"name": "message_id", "type": _OPTIONAL_TEXT},
                    {"name": "originator", "type": _OPTIONAL_TEXT},
                    {"name": "report_type", "type": _OPTIONAL_TEXT},
                    {"name": "signature_status", "type": "string"},
                    {"name": "signature_detail", "type": "string"},
                    {"name": "decoded", "type": _OPTIONAL_TEXT},
                    {"name": "decode_error", "type": _OPTIONAL_TEXT},
                    {"name": "stored_at_us", "type": "long"},
                    {"name": "row_hash", "type": "bytes"},
                    {"name": "value_digest", "type": ["null", "bytes"]},
                    {"name": "opened_digest", "type": ["null", "bytes"]},
                    {"name": "retain_until", "type": ["null", "long"]},
                    {"name": "purged_at_us", "type": ["null", "long"]},
                ],
            },
        },
    ],
}
"""The schema of ``records.avro`` (embedded in the file, as every container file's is)."""

PARSED_SCHEMA = fastavro.parse_schema(EVIDENCE_SCHEMA)
_EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH_START) // _MICROSECOND


def evidence_record(row: AuditRecord) -> dict[str, Any]:
    return {
        "topic": row.topic,
        "partition": row.kafka_partition,
        "epoch": row.epoch,
        "offset": row.kafka_offset,
        "timestamp": row.kafka_timestamp,
        "timestamp_type": row.timestamp_type,
        "key": None if row.record_key is None else bytes(row.record_key),
        "headers": [{"name": n, "value": v} for n, v in row.header_pairs()],
        "value": None if row.value is None else bytes(row.value),
        "stored": {
            "headers_json": row.headers,
            "schema_fingerprint": row.schema_fingerprint,
            "message_id": row.message_id,
            "originator": row.originator,
            "report_type": row.report_type,
            "signature_status": row.signature_status,
            "signature_detail": row.signature_detail,
            "decoded": row.decoded,
            "decode_error": row.decode_error,
            "stored_at_us": micros(row.stored_at),
            "row_hash": bytes(row.row_hash),
            "value_digest": None if row.value_digest is None else bytes(row.value_digest),
            "opened_digest": None if row.opened_digest is None else bytes(row.opened_digest),
            "retain_until": row.retain_until,
            "purged_at_us": None if row.purged_at is None else micros(row.purged_at),
        },
    }


def row_of(record: dict[str, Any]) -> AuditRecord:
    """The audit store's row an evidence record carries (to recompute its chain link)."""
    stored = record["stored"]
    return AuditRecord(
        record["topic"],
        record["partition"],
        record["epoch"],
        record["offset"],
        record["timestamp"],
        record["timestamp_type"],
        record["key"],
        stored["headers_json"],
        record["value"],
        stored["schema_fingerprint"],
        stored["message_id"],
        stored["originator"],
        stored["report_type"],
        stored["signature_status"],
        stored["signature_detail"],
        stored["decoded"],
        stored["decode_error"],
        _time(stored["stored_at_us"]),
        stored["row_hash"],
        stored["value_digest"],
        stored["opened_digest"],
        stored["retain_until"],
        None
        if stored["purged_at_us"] is None
        else _EPOCH_START + stored["purged_at_us"] * _MICROSECOND,
    )


def _time(micros_since_1970: int) -> datetime:
    return _EPOCH_START + micros_since_1970 * _MICROSECOND


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
