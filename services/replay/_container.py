"""The Avro schema of replayed records in an object container file.

One record per replayed Kafka record: its coordinates, the raw key, headers
and value exactly as on the wire, what opening it found, and the decoded
report as a union of every current report schema (null when undecodable),
so that any Avro reader gets typed reports without OIX's code.
"""

from __future__ import annotations

import copy
from typing import Any

from services.bus import Codec

NAMESPACE = "eu.oix.replay"
REPORTS_NAMESPACE = "eu.oix.exchange"
_NAMED = {"record", "enum", "fixed"}


def _full(schema: dict[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    return name if "." in name else f"{schema.get('namespace', namespace)}.{name}"


def _once(schema: Any, seen: set[str], namespace: str) -> Any:
    """``schema`` with every named type already in ``seen`` replaced by its name."""
    if isinstance(schema, list):
        return [_once(branch, seen, namespace) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in _NAMED:
        full = _full(schema, namespace)
        if full in seen:
            return full
        seen.add(full)
        namespace = schema.get("namespace", namespace)
    out = dict(schema)
    if isinstance(out.get("type"), dict | list):
        out["type"] = _once(out["type"], seen, namespace)
    if "fields" in out:
        out["fields"] = [
            {**item, "type": _once(item["type"], seen, namespace)} for item in out["fields"]
        ]
    for key in ("items", "values"):
        if key in out:
            out[key] = _once(out[key], seen, namespace)
    return out


def report_names(codec: Codec) -> list[str]:
    """The report types in the union's order (sorted by name)."""
    return sorted(codec.registry.current)


def container_schema(codec: Codec) -> dict[str, Any]:
    """The schema of a replay's Avro container file, for the current report schemas."""
    seen: set[str] = set()
    reports = [
        _once(copy.deepcopy(codec.registry.current[name].schema), seen, REPORTS_NAMESPACE)
        for name in report_names(codec)
    ]
    optional_text = ["null", "string"]
    return {
        "type": "record",
        "name": "ReplayedRecord",
        "namespace": NAMESPACE,
        "doc": "One Kafka record of the OIX exchange, as replayed by `oix replay`.",
        "fields": [
            {"name": "source", "type": "string", "doc": "kafka or store"},
            {"name": "topic", "type": "string"},
            {"name": "partition", "type": "int"},
            {"name": "epoch", "type": "int", "doc": "the audit store's epoch of the log"},
            {"name": "offset", "type": "long"},
            {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
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
            {"name": "schema_fingerprint", "type": optional_text},
            {"name": "report_type", "type": optional_text},
            {"name": "message_id", "type": optional_text},
            {"name": "originator", "type": optional_text},
            {"name": "signature_status", "type": "string"},
            {"name": "signature_detail", "type": "string"},
            {"name": "decode_error", "type": optional_text},
            {"name": "report", "type": ["null", *reports], "default": None},
        ],
    }
