"""The exchange as an AsyncAPI 3.0 document, generated from the agreement and the released schemas.

Partners' tooling reads AsyncAPI: every topic is a channel with the messages it
carries, each message its Avro payload schema (the current released version,
self-contained), its Kafka headers and key; every party's sending and
receiving are operations. Nothing here is written by hand, so the document
cannot drift from what OIX does. ``docs/partners.md`` explains the same in prose.
"""

from __future__ import annotations

from typing import Any

from services.bus._agreement import FOLLOWS_ORIGINAL
from services.bus._envelope import (
    H_KEY_ID,
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_QUARANTINE_DETAIL,
    H_QUARANTINE_EPOCH,
    H_QUARANTINE_OFFSET,
    H_QUARANTINE_PARTITION,
    H_QUARANTINE_REASON,
    H_QUARANTINE_TIMESTAMP,
    H_QUARANTINE_TOPIC,
    H_SCHEMA,
    H_SIGNATURE,
    H_TRACEPARENT,
    H_TYPE,
)
from services.bus._exchange import Exchange
from services.bus._settings import Settings
from services.bus._topics import TopicKind
from services.bus._vocabulary import AGENCY_CODE_PATTERN

ASYNCAPI_VERSION = "3.0.0"
AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
CONTENT_TYPE = "avro/binary"
QUARANTINED = "QuarantinedRecord"
KAFKA_BINDING = "0.5.0"

_DESCRIPTION = """\
The operational information exchange between the parties of the agreement.

**Value**: Avro single-object encoding: the two bytes `C3 01`, the 8-byte
CRC-64-AVRO fingerprint of the writer schema (little-endian, exactly as the
Avro reference implementations give it; its 16 hex digits name the released
schema file `schemas/released/<Type>/<hex>.avsc` and are the `oix-schema`
header), then the Avro binary encoding of the record. A value may be written
with any released version of its type's schema; readers resolve it to theirs.

**Signature**: Ed25519 (RFC 8032) over the whole value, byte for byte, with the
originator's private key; the `oix-signature` header holds the raw 64-byte
signature (not base64), `oix-key-id` the key's id in the agreement
(`x-oix-parties`). A record is trusted only when its value decodes, the
signature verifies with a key of the party the decoded `header.originator`
names, and the headers agree with the signed content.

**Untrusted records** are stored, flagged, by the audit consumer and copied
once to the quarantine channel. See docs/partners.md.
"""

_KEYS = {
    "Acknowledgement": "The acknowledged message's id, so the receipt follows it.",
    "Cancellation": "The cancelled message's key (its event id), on the cancelled message's "
    "topics, so the cancellation follows it.",
}
_EVENT_KEY = (
    "The report's header.event_id as text: reports on one event, corrections included, "
    "stay in order on one partition."
)


def _report_headers(report_type: str, released: list[str], key_ids: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Kafka record headers: UTF-8 text, except oix-signature (raw bytes).",
        "required": [H_MESSAGE_ID, H_ORIGINATOR, H_TYPE, H_SCHEMA, H_SIGNATURE, H_KEY_ID],
        "properties": {
            H_MESSAGE_ID: {
                "type": "string",
                "format": "uuid",
                "description": "header.message_id of the signed value.",
            },
            H_ORIGINATOR: {
                "type": "string",
                "pattern": AGENCY_CODE_PATTERN,
                "description": "header.originator of the signed value.",
            },
            H_TYPE: {
                "type": "string",
                "const": report_type,
                "description": "The report type: the Avro record's name.",
            },
            H_SCHEMA: {
                "type": "string",
                "enum": released,
                "description": "The writer schema's fingerprint: the value's bytes 2 to 9 as 16 "
                "lower-case hex digits, a released version of this type.",
            },
            H_SIGNATURE: {
                "type": "string",
                "description": "The raw 64-byte Ed25519 signature over the whole value "
                "(not base64).",
            },
            H_KEY_ID: {
                "type": "string",
                "enum": key_ids,
                "description": "The id of the signing key in the agreement.",
            },
            H_TRACEPARENT: {
                "type": "string",
                "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context; optional.",
            },
        },
    }


def _quarantine_headers() -> dict[str, Any]:
    text: dict[str, Any] = {"type": "string"}
    number: dict[str, Any] = {"type": "string", "pattern": "^[0-9]+$"}
    described: dict[str, tuple[dict[str, Any], str]] = {
        H_QUARANTINE_TOPIC: (text, "The topic the record was read from."),
        H_QUARANTINE_PARTITION: (number, "Its partition."),
        H_QUARANTINE_OFFSET: (number, "Its offset."),
        H_QUARANTINE_EPOCH: (
            number,
            "The audit store's epoch of that partition (0 unless the broker's log went backwards).",
        ),
        H_QUARANTINE_TIMESTAMP: (number, "Its Kafka timestamp, milliseconds since 1970."),
        H_QUARANTINE_REASON: (
            {
                "type": "string",
                "enum": [
                    "invalid",
                    "unsigned",
                    "unknown_key",
                    "unknown_schema",
                    "undecodable",
                ],
            },
            "Why it is not trusted.",
        ),
        H_QUARANTINE_DETAIL: (text, "What verification and decoding found, in words."),
    }
    return {
        "type": "object",
        "description": "The original record's headers, untouched and in order, then these "
        "(the last occurrence of each is the audit consumer's).",
        "required": list(described),
        "properties": {
            name: {**schema, "description": doc} for name, (schema, doc) in described.items()
        },
    }


def _messages(exchange: Exchange) -> dict[str, Any]:
    registry = exchange.codec.registry
    key_ids = sorted(key.key_id for key in exchange.agreement.trusted_keys())
    messages: dict[str, Any] = {}
    for report_type in sorted(registry.current):
        current = registry.current[report_type]
        released = sorted(
            s.fingerprint_hex for s in registry.released.values() if s.name == report_type
        )
        messages[report_type] = {
            "name": report_type,
            "title": report_type,
            "summary": str(current.schema.get("doc", report_type)),
            "contentType": CONTENT_TYPE,
            "headers": _report_headers(report_type, released, key_ids),
            "payload": {"schemaFormat": AVRO_FORMAT, "schema": current.schema},
            "bindings": {
                "kafka": {
                    "key": {
                        "type": "string",
                        "description": _KEYS.get(report_type, _EVENT_KEY),
                    },
                    "schemaIdLocation": "payload",
                    "schemaIdPayloadEncoding": "Avro single-object encoding: C3 01, then the "
                    "8-byte CRC-64-AVRO fingerprint (little-endian)",
                    "bindingVersion": KAFKA_BINDING,
                },
            },
            "x-oix-fingerprint": current.fingerprint_hex,
            "x-oix-released-fingerprints": released,
        }
    messages[QUARANTINED] = {
        "name": QUARANTINED,
        "title": "Quarantined record",
        "summary": "A record the audit consumer could not trust (undecodable, unsigned, "
        "forged, unknown key or schema), copied once as it arrived.",
        "contentType": "application/octet-stream",
        "headers": _quarantine_headers(),
        "payload": {"description": "The original value, byte for byte (absent for a tombstone)."},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "pattern": "^[^/]+/[0-9]+/[0-9]+/[0-9]+$",
                    "description": "The original's topic/partition/epoch/offset.",
                },
                "bindingVersion": KAFKA_BINDING,
            },
        },
    }
    return messages


def _channel_types(exchange: Exchange, topic: str) -> list[str]:
    info = exchange.naming.parse(topic)
    assert info is not None
    agreement = exchange.agreement
    if info.kind is TopicKind.QUARANTINE:
        return [QUARANTINED]
    if info.kind is TopicKind.FEED:
        assert info.feed is not None
        feeds = [info.feed]
    else:
        feeds = [
            feed
            for release in agreement.releases
            if release.from_ == info.originator and info.recipient in release.to
            for feed in release.feeds
        ]
    types = {t for feed in feeds for t in agreement.feeds[feed].report_types}
    return sorted(types | FOLLOWS_ORIGINAL)


def _channel_id(exchange: Exchange, topic: str) -> str:
    return topic.removeprefix(f"{exchange.naming.prefix}.")


def _channels(exchange: Exchange) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    readers = {p: set(exchange.router.readable_by(p)) for p in exchange.agreement.parties}
    for topic in exchange.router.all_topics():
        info = exchange.naming.parse(topic)
        assert info is not None
        who_reads = sorted(p for p, topics in readers.items() if topic in topics)
        if info.kind is TopicKind.QUARANTINE:
            description = "Records the audit consumer could not trust, each copied once."
        elif info.kind is TopicKind.FEED:
            description = (
                f"{info.originator}'s {info.feed!r} feed, released to {', '.join(who_reads)}."
            )
        else:
            description = (
                f"{info.originator}'s reports for {info.recipient} alone, when their "
                "releasable_to is narrower than the feed's readers."
            )
        channel: dict[str, Any] = {
            "address": topic,
            "title": topic,
            "description": description,
            "messages": {
                t: {"$ref": f"#/components/messages/{t}"} for t in _channel_types(exchange, topic)
            },
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING}},
            # The routing rule, machine-readable: a report goes to its originator's feed
            # when releasable_to names exactly the feed's readers, else to one direct
            # channel per recipient.
            "x-oix-kind": str(info.kind),
            "x-oix-readers": who_reads,
        }
        where = {
            "x-oix-originator": info.originator,
            "x-oix-feed": info.feed,
            "x-oix-recipient": info.recipient,
        }
        channel.update({name: value for name, value in where.items() if value is not None})
        channels[_channel_id(exchange, topic)] = channel
    return channels


def _operations(exchange: Exchange) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    naming = exchange.naming

    def add(who: str, action: str, topic: str, summary: str) -> None:
        channel = _channel_id(exchange, topic)
        verb = "send" if action == "send" else "receive"
        operations[f"{who}.{verb}.{channel}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
        }

    for party in sorted(exchange.agreement.parties):
        for topic in exchange.router.all_topics():
            if topic.startswith(naming.writer_prefix(party)):
                add(party, "send", topic, f"{party} publishes, signed with its own key.")
        for topic in exchange.router.readable_by(party):
            add(party, "receive", topic, f"{party} reads what was released to it.")
    for topic in exchange.router.all_topics():
        add("audit", "receive", topic, "The audit consumer stores every record.")
    add("audit", "send", naming.quarantine, "The audit consumer copies untrusted records here.")
    return operations


def _parties(exchange: Exchange) -> dict[str, Any]:
    return {
        code: {
            "name": party.name,
            "country": party.country,
            "keys": [
                {"id": key.id, "algorithm": "Ed25519", "public_key": key.public_key}
                for key in party.keys
            ],
        }
        for code, party in exchange.agreement.parties.items()
    }


def _servers(settings: Settings) -> dict[str, Any]:
    if not settings.bootstrap:
        return {}
    secured = settings.kafka_security_protocol in {"SSL", "SASL_SSL"}
    server: dict[str, Any] = {
        "host": settings.bootstrap,
        "protocol": "kafka-secure" if secured else "kafka",
        "description": f"Kafka bootstrap servers ({settings.kafka_security_protocol}).",
    }
    components: dict[str, Any] = {}
    mechanism = settings.kafka_sasl_mechanism
    if settings.kafka_security_protocol.startswith("SASL") and mechanism:
        scheme = "scramSha512" if mechanism == "SCRAM-SHA-512" else "scramSha256"
        components[scheme] = {"type": scheme, "description": f"SASL {mechanism} per party."}
        server["security"] = [{"$ref": f"#/components/securitySchemes/{scheme}"}]
    return {"servers": {"exchange": server}, "securitySchemes": components}


def asyncapi_document(exchange: Exchange, settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the exchange; ``settings`` adds the server when known."""
    agreement = exchange.agreement
    components: dict[str, Any] = {"messages": _messages(exchange)}
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:oix:{agreement.exchange.id}",
        "info": {
            "title": agreement.exchange.title,
            "version": agreement.exchange.version,
            "description": _DESCRIPTION,
        },
        "defaultContentType": CONTENT_TYPE,
    }
    servers = _servers(settings) if settings is not None else {}
    if servers:
        document["servers"] = servers["servers"]
        if servers["securitySchemes"]:
            components["securitySchemes"] = servers["securitySchemes"]
    document["channels"] = _channels(exchange)
    document["operations"] = _operations(exchange)
    document["components"] = components
    document["x-oix-parties"] = _parties(exchange)
    return document
