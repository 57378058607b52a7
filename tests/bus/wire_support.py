"""The partner's side of the wire, written with the reference ``avro`` package and ``cryptography``.

Nothing here uses OIX's codec or signer: these helpers are what a partner
agency's developer writes from ``docs/partners.md``, so the tests that use
them compare OIX with an independent implementation on the actual bytes.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import json
import uuid
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[2]
RELEASED = REPO / "schemas" / "released"
KEYS = REPO / "deploy" / "keys"
MAGIC = b"\xc3\x01"


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def reference_schema(path: Path) -> avro.schema.Schema:
    """The released schema file as the avro package parses it."""
    return avro.schema.parse(path.read_text(encoding="utf-8"))


def reference_fingerprint(path: Path) -> bytes:
    """The CRC-64-AVRO fingerprint bytes of a schema file, computed by the avro package.

    The spec's [STRIP] rule drops ``logicalType`` from the Parsing Canonical
    Form; avro 1.12 keeps ``{"type":"string"}`` instead of ``"string"`` for such
    a primitive (Java writes ``"string"``), so the attribute is dropped before
    parsing, which by the spec cannot change any correct canonical form.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    stripped = avro.schema.parse(json.dumps(_strip_logical_types(raw)))
    fingerprint: bytes = stripped.fingerprint("CRC-64-AVRO")
    return fingerprint


def reference_form(value: Any) -> Any:
    """A report's data (pydantic ``model_dump``) as the avro package takes and returns it."""
    if isinstance(value, dict):
        return {k: reference_form(v) for k, v in value.items() if k != "type"}
    if isinstance(value, list):
        return [reference_form(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return value


def reference_encode(path: Path, datum: dict[str, Any]) -> bytes:
    """A single-object encoded value: ``C3 01``, the fingerprint bytes, the avro package's body."""
    body = io.BytesIO()
    avro.io.DatumWriter(reference_schema(path)).write(datum, avro.io.BinaryEncoder(body))
    return MAGIC + reference_fingerprint(path) + body.getvalue()


def reference_decode(value: bytes, writer: Path, reader: Path | None = None) -> dict[str, Any]:
    """The avro package's reading of a value's body, resolved to ``reader`` when given."""
    decoder = avro.io.BinaryDecoder(io.BytesIO(value[10:]))
    datum_reader = avro.io.DatumReader(
        reference_schema(writer), reference_schema(reader) if reader else None
    )
    record: dict[str, Any] = datum_reader.read(decoder)
    return record


def private_key(key_id: str) -> Ed25519PrivateKey:
    """A demo party's private key, loaded by ``cryptography`` from its PKCS#8 PEM file."""
    key = serialization.load_pem_private_key((KEYS / f"{key_id}.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def partner_headers(
    datum: dict[str, Any], report_type: str, value: bytes, key_id: str, signature: bytes
) -> list[tuple[str, bytes]]:
    """The Kafka headers a partner writes (docs/partners.md), UTF-8 text but the signature."""
    header = datum["header"]
    return [
        ("oix-message-id", str(header["message_id"]).encode()),
        ("oix-originator", header["originator"].encode()),
        ("oix-type", report_type.encode()),
        ("oix-schema", value[2:10].hex().encode()),
        ("oix-signature", signature),
        ("oix-key-id", key_id.encode()),
    ]
