r"""A partner agency's OIX client, written only with standard libraries (docs/partners.md).

It uses confluent-kafka (librdkafka) for Kafka, the Apache Avro reference
package ``avro`` for encoding, and ``cryptography`` for Ed25519: no OIX code.
Its inputs are what the exchange gives a partner: the AsyncAPI document
(``oix agreement asyncapi``: topics, routing, key ids, public keys), the
released schema files (``schemas/released``) and the agency's private key.

    python partner.py publish --asyncapi exchange.json --schemas schemas/released \\
        --agency PL-SG --key PL-SG-2026-1.pem --key-id PL-SG-2026-1 report.json
    python partner.py read --asyncapi exchange.json --schemas schemas/released \\
        --agency PL-SG --count 1

``publish`` prints one JSON line per topic written; ``read`` one per record
read, with what verifying it found. The exit status is 0 when everything was
written (publish) or ``--count`` records were read (read), whatever they held.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"\xc3\x01"
PREFIX_SIZE = 10
SIGNATURE_SIZE = 64


# -- schemas: the released files, each named by its fingerprint --------------------------------


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def fingerprint(schema_json: dict[str, Any]) -> bytes:
    """The 8 CRC-64-AVRO fingerprint bytes of a schema, in wire (little-endian) order.

    The Avro spec strips ``logicalType`` from the Parsing Canonical Form; the
    Python avro package 1.12 keeps ``{"type":"string"}`` for such a primitive
    where Java writes ``"string"``, so it is dropped before parsing here.
    """
    stripped = avro.schema.parse(json.dumps(_without_logical_types(schema_json)))
    result: bytes = stripped.fingerprint("CRC-64-AVRO")
    return result


class Schemas:
    """Every released schema version, by fingerprint (checked against its file name)."""

    def __init__(self, released: Path) -> None:
        self.by_fingerprint: dict[bytes, tuple[str, avro.schema.Schema]] = {}
        for path in sorted(released.glob("*/*.avsc")):
            self.add(path, expect_name=True)

    def add(self, path: Path, *, expect_name: bool = False) -> bytes:
        """Load one schema file; returns its fingerprint."""
        schema_json = json.loads(path.read_text(encoding="utf-8"))
        found = fingerprint(schema_json)
        if expect_name and found.hex() != path.stem:
            raise SystemExit(f"{path}: its fingerprint is {found.hex()}, not its name")
        report_type = str(schema_json["name"]).rsplit(".", 1)[-1]
        self.by_fingerprint[found] = (report_type, avro.schema.parse(json.dumps(schema_json)))
        return found


# -- encoding: JSON report -> Avro single-object value ----------------------------------------


def to_datum(schema: avro.schema.Schema, value: Any, path: str = "") -> Any:
    """A JSON value as the avro package writes it: defaults filled, times as datetimes."""
    if isinstance(schema, avro.schema.RecordSchema):
        if not isinstance(value, dict):
            raise SystemExit(f"{path or 'report'}: expected an object")
        datum = {}
        for field in schema.fields:
            where = f"{path}.{field.name}" if path else field.name
            if field.name in value:
                datum[field.name] = to_datum(field.type, value[field.name], where)
            elif field.has_default:
                datum[field.name] = field.default
            else:
                raise SystemExit(f"{where}: required")
        return datum
    if isinstance(schema, avro.schema.UnionSchema):
        if value is None:
            return None
        branch = next(s for s in schema.schemas if s.type != "null")
        return to_datum(branch, value, path)
    if isinstance(schema, avro.schema.ArraySchema):
        return [to_datum(schema.items, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if schema.get_prop("logicalType") == "timestamp-millis" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def encode(schema: avro.schema.Schema, schema_fingerprint: bytes, datum: dict[str, Any]) -> bytes:
    """``C3 01``, the fingerprint bytes, then the Avro binary body."""
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(body))
    return MAGIC + schema_fingerprint + body.getvalue()


def fill_header(header: dict[str, Any], agency: str) -> dict[str, Any]:
    """What OIX's gateway fills for its agencies, a partner writing directly fills itself."""
    filled = dict(header)
    filled.setdefault("message_id", str(uuid.uuid4()))
    filled.setdefault("event_id", filled["message_id"])
    filled.setdefault("originator", agency)
    filled.setdefault("created_at", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
    return filled


def route(document: dict[str, Any], agency: str, report_type: str, readers: list[str]) -> list[str]:
    """The topics a report goes to, by the agreement's rule read from the AsyncAPI document.

    The originator's feed if the report is released to exactly the feed's
    readers, else one direct channel per recipient.
    """
    channels = document["channels"].values()
    feed = next(
        c
        for c in channels
        if c.get("x-oix-kind") == "feed"
        and c.get("x-oix-originator") == agency
        and report_type in c["messages"]
    )
    wanted = sorted(set(readers) - {agency})
    if wanted == sorted(feed["x-oix-readers"]):
        return [feed["address"]]
    direct = {
        c["x-oix-recipient"]: c["address"]
        for c in channels
        if c.get("x-oix-kind") == "direct" and c.get("x-oix-originator") == agency
    }
    missing = [r for r in wanted if r not in direct]
    if missing or not wanted:
        raise SystemExit(f"header.releasable_to: the agreement does not release to {missing}")
    return [direct[r] for r in wanted]


def publish(args: argparse.Namespace) -> int:
    """Encode, sign and produce one report; print where each copy landed."""
    document = json.loads(args.asyncapi.read_text(encoding="utf-8"))
    schemas = Schemas(args.schemas)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    report_type = report.pop("type")
    if args.writer_schema is not None:
        writer_fingerprint = schemas.add(args.writer_schema)  # a version OIX may not know yet
    else:
        message = document["components"]["messages"][report_type]
        writer_fingerprint = bytes.fromhex(message["x-oix-fingerprint"])
    written_type, schema = schemas.by_fingerprint[writer_fingerprint]
    assert written_type == report_type, (written_type, report_type)
    report["header"] = fill_header(report["header"], args.agency)
    datum = to_datum(schema, report)
    value = encode(schema, writer_fingerprint, datum)
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{args.key}: not an Ed25519 private key")
    header = datum["header"]
    headers = [
        ("oix-message-id", str(header["message_id"]).encode()),
        ("oix-originator", header["originator"].encode()),
        ("oix-type", report_type.encode()),
        ("oix-schema", writer_fingerprint.hex().encode()),
        ("oix-signature", key.sign(value)),  # raw 64 bytes over the whole value
        ("oix-key-id", args.key_id.encode()),
        ("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode()),
    ]
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    delivered: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        delivered.append((error, message))

    topics = route(document, args.agency, report_type, header["releasable_to"])
    for topic in topics:
        producer.produce(
            topic,
            value=value,
            key=str(header["event_id"]).encode(),
            headers=headers,
            on_delivery=on_delivery,
        )
    if producer.flush(30) != 0:
        raise SystemExit("the broker did not acknowledge every record within 30 s")
    failed = False
    for error, message in delivered:
        failed = failed or error is not None
        shown = {
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "message_id": str(header["message_id"]),
            "error": str(error) if error is not None else None,
        }
        print(json.dumps(shown), flush=True)
    return 1 if failed else 0


# -- reading: verify, then decode -------------------------------------------------------------


def trusted_keys(document: dict[str, Any]) -> dict[str, tuple[str, Ed25519PublicKey]]:
    """Key id -> (party, public key), from the document's ``x-oix-parties``."""
    return {
        key["id"]: (code, Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])))
        for code, party in document["x-oix-parties"].items()
        for key in party["keys"]
    }


def open_record(
    value: bytes, headers: dict[str, bytes], schemas: Schemas, keys: dict[str, Any]
) -> dict[str, Any]:
    """What a receiving party checks, in order; ``status`` is ``valid`` or why not."""
    seen: dict[str, Any] = {"status": "valid", "reason": None, "type": None, "report": None}
    if len(value) < PREFIX_SIZE or value[:2] != MAGIC:
        return {**seen, "status": "undecodable", "reason": "not Avro single-object encoded"}
    seen["fingerprint"] = value[2:PREFIX_SIZE].hex()
    signature, key_id = headers.get("oix-signature"), headers.get("oix-key-id", b"").decode()
    if signature is None or key_id not in keys:
        return {**seen, "status": "untrusted", "reason": f"unsigned or unknown key {key_id!r}"}
    party, public_key = keys[key_id]
    try:
        public_key.verify(signature, value)
    except InvalidSignature:
        return {**seen, "status": "invalid", "reason": "signature does not match the value"}
    known = schemas.by_fingerprint.get(value[2:PREFIX_SIZE])
    if known is None:
        reason = f"signed by {party}, but schema {seen['fingerprint']} is not released"
        return {**seen, "status": "unknown_schema", "reason": reason}
    report_type, schema = known
    reader = avro.io.DatumReader(schema)
    record = reader.read(avro.io.BinaryDecoder(io.BytesIO(value[PREFIX_SIZE:])))
    if not isinstance(record, dict):
        return {**seen, "status": "undecodable", "reason": "the value is not a record"}
    header = record["header"]
    claims = {
        "oix-originator": header["originator"],
        "oix-message-id": str(header["message_id"]),
        "oix-type": report_type,
        "oix-schema": seen["fingerprint"],
    }
    if header["originator"] != party:
        reason = f"signed by {party}, the content claims {header['originator']}"
        return {**seen, "status": "invalid", "reason": reason}
    for name, signed in claims.items():
        if headers.get(name, b"").decode(errors="replace") != signed:
            return {**seen, "status": "invalid", "reason": f"header {name} contradicts the value"}
    return {**seen, "type": report_type, "report": record}


def _headers(message: Any) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {
        name: value.encode() if isinstance(value, str) else value or b"" for name, value in pairs
    }


def read(args: argparse.Namespace) -> int:
    """Read the channels released to the agency from the start; print what each record holds."""
    document = json.loads(args.asyncapi.read_text(encoding="utf-8"))
    schemas = Schemas(args.schemas)
    keys = trusted_keys(document)
    mine = f"{args.agency}.receive."
    wanted = sorted(
        document["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for name, operation in document["operations"].items()
        if name.startswith(mine)
    )
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"{args.agency}.partner-example",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    read_count = 0
    try:
        existing = consumer.list_topics(timeout=10).topics
        assign = [
            TopicPartition(topic, number, OFFSET_BEGINNING)
            for topic in wanted
            if topic in existing
            for number in sorted(existing[topic].partitions)
        ]
        consumer.assign(assign)
        deadline = time.monotonic() + args.timeout
        while read_count < args.count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            found = open_record(message.value() or b"", _headers(message), schemas, keys)
            shown = {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": (message.key() or b"").decode(errors="replace"),
                **found,
            }
            print(json.dumps(shown, default=str), flush=True)
            read_count += 1
    finally:
        consumer.close()
    return 0 if read_count >= args.count else 1


def main() -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("publish", "read"):
        command = commands.add_parser(name)
        command.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
        command.add_argument("--asyncapi", type=Path, required=True)
        command.add_argument("--schemas", type=Path, required=True, help="schemas/released")
        command.add_argument("--agency", required=True, help="your agency code, e.g. PL-SG")
    publishing = commands.choices["publish"]
    publishing.add_argument("--key", type=Path, required=True, help="PKCS#8 PEM private key")
    publishing.add_argument("--key-id", required=True, help="its id in the agreement")
    publishing.add_argument("--writer-schema", type=Path, help="a schema version of your own")
    publishing.add_argument("report", type=Path, help="the report as JSON, with its type")
    reading = commands.choices["read"]
    reading.add_argument("--count", type=int, default=1, help="stop after this many records")
    reading.add_argument("--timeout", type=float, default=30.0, help="seconds")
    args = parser.parse_args()
    return publish(args) if args.command == "publish" else read(args)


if __name__ == "__main__":
    sys.exit(main())
