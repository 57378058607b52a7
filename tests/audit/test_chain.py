"""The hash chain and the record encoding: pure functions, checked without I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from store_contract import record

from services.audit import GENESIS, AuditRecord, canonical, chain, link
from services.audit._chain import (
    CHAINED_FIELDS,
    canonical_reference,
    content_matches,
    facts_of,
    kafka_facts,
    link_v1,
    micros,
    with_digests,
)
from services.audit._record import (
    clean_text,
    decode_headers,
    encode_headers,
    schema_fingerprint,
)

STORED_AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _known_row() -> AuditRecord:
    return AuditRecord(
        topic="oix.LT-VSAT.incidents",
        kafka_partition=0,
        epoch=0,
        kafka_offset=0,
        kafka_timestamp=1772366400000,
        timestamp_type=0,
        record_key=b"INC-1",
        headers='[{"name":"oix-message-id","text":"m-1"}]',
        value=b"\xc3\x01value",
        schema_fingerprint=None,
        message_id="m-1",
        originator="LT-VSAT",
        report_type="IncidentReport",
        signature_status="valid",
        signature_detail="",
        decoded='{"a":1}',
        decode_error=None,
        stored_at=STORED_AT,
        row_hash=b"",
    )


def test_a_known_row_hashes_to_the_documented_value_in_chain_version_1() -> None:
    # The version 1 vector (before retention): re-chaining verifies old rows with it.
    assert link_v1(GENESIS, _known_row()).hex() == (
        "bea8bee34bf21920b26afc1989cc3a45420631ba9d7d0c40f13ac4fc7217bd77"
    )


def _text(text: str) -> bytes:
    data = text.encode()
    return b"\x02" + len(data).to_bytes(4, "big") + data


def _blob(data: bytes) -> bytes:
    return b"\x03" + len(data).to_bytes(4, "big") + data


def _int(number: int, tag: bytes = b"\x01") -> bytes:
    return tag + number.to_bytes(8, "big", signed=True)


def test_a_known_row_hashes_to_the_documented_value() -> None:
    # The test vector of docs/audit.md, encoded here by hand from the specification.
    row = with_digests(_known_row())
    value_digest = hashlib.sha256(b"\xc3\x01value").digest()
    opened = hashlib.sha256(b"oix-audit-opened/1\n" + _text('{"a":1}') + b"\x00").digest()
    spec = b"".join(
        [
            b"oix-audit-chain/2\n",
            _text("oix.LT-VSAT.incidents"),
            _int(0),
            _int(0),
            _int(0),
            _int(1772366400000),
            _int(0),
            _blob(b"INC-1"),
            _text('[{"name":"oix-message-id","text":"m-1"}]'),
            _blob(value_digest),
            b"\x00",
            _text("m-1"),
            _text("LT-VSAT"),
            _text("IncidentReport"),
            _text("valid"),
            _text(""),
            _blob(opened),
            b"\x00",
            _int(1772366400123456, b"\x04"),
        ],
    )
    assert canonical(row) == spec
    assert link(GENESIS, row) == hashlib.sha256(GENESIS + spec).digest()
    assert link(GENESIS, row).hex() == VECTOR_V2


VECTOR_V2 = "145f5a2b99dca8b1c60b457a37e83db2903b53cacd9c3238a68c1aeb2aa0d4c7"
"""Pinned in docs/audit.md."""


@pytest.mark.parametrize("field", CHAINED_FIELDS)
def test_every_chained_column_is_covered(field: str) -> None:
    row = with_digests(record(1)._replace(stored_at=STORED_AT, retain_until=5))
    value = getattr(row, field)
    if isinstance(value, bool) or value is None:
        changed = "x"
    elif isinstance(value, int):
        changed = value + 1
    elif isinstance(value, str):
        changed = value + "x"
    elif isinstance(value, bytes):
        changed = value + b"x"
    else:
        changed = datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)
    assert link(GENESIS, row) != link(GENESIS, row._replace(**{field: changed}))


@pytest.mark.parametrize(
    ("field", "changed"), [("value", b"other"), ("decoded", "{}"), ("decode_error", "x")]
)
def test_content_is_covered_through_its_digests(field: str, changed: object) -> None:
    row = with_digests(record(1)._replace(stored_at=STORED_AT))
    altered = row._replace(**{field: changed})
    assert link(GENESIS, row) == link(GENESIS, altered)  # the chain alone cannot see it...
    assert content_matches(row)
    assert not content_matches(altered)  # ...the digest check does
    assert link(GENESIS, row) != link(GENESIS, with_digests(altered))


def test_purging_the_content_keeps_the_link() -> None:
    row = with_digests(record(1)._replace(stored_at=STORED_AT))
    purged = row._replace(
        value=None, decoded=None, decode_error=None, purged_at=STORED_AT, purge_id="p"
    )
    assert link(GENESIS, purged) == link(GENESIS, row)
    assert content_matches(purged)
    assert link(GENESIS, purged._replace(value_digest=bytes(32))) != link(GENESIS, row)


@pytest.mark.parametrize(
    "row",
    [
        record(1)._replace(stored_at=STORED_AT),
        record(2)._replace(record_key=None, value=None, decoded=None, message_id=None),
        record(3)._replace(signature_detail="", decode_error="", headers="[]", epoch=7),
    ],
)
def test_the_fast_encoding_is_the_specified_one(row: AuditRecord) -> None:
    assert canonical(row) == canonical_reference(row)
    assert chain([row], {(row.topic, 0): GENESIS}, STORED_AT).records[0].row_hash == link(
        GENESIS, with_digests(row)._replace(stored_at=STORED_AT)
    )


def test_none_empty_text_and_bytes_are_told_apart() -> None:
    row = record(1)
    hashes = {
        link(GENESIS, with_digests(row._replace(record_key=key))) for key in (None, b"", b"k")
    } | {link(GENESIS, with_digests(row._replace(decode_error=text))) for text in ("", "k")}
    assert len(hashes) == 5


def test_chain_links_each_partition_to_its_own_head() -> None:
    a0, a1 = record(0), record(1)
    b0 = record(0, partition=1)
    heads = {(a0.topic, 0): b"\x01" * 32, (a0.topic, 1): GENESIS}
    linked = chain([a0, b0, a1], heads, STORED_AT)
    first, other, second = linked.records
    assert first.row_hash == link(b"\x01" * 32, first)
    assert other.row_hash == link(GENESIS, other)
    assert second.row_hash == link(first.row_hash, second)
    assert linked.heads == {(a0.topic, 0): second.row_hash, (a0.topic, 1): other.row_hash}
    assert {r.stored_at for r in linked.records} == {STORED_AT}


def test_a_partition_without_a_known_head_is_a_bug_not_a_new_chain() -> None:
    with pytest.raises(KeyError):
        chain([record(0)], {}, STORED_AT)


def test_naive_times_are_utc() -> None:
    assert micros(STORED_AT) == micros(STORED_AT.replace(tzinfo=None)) == 1772366400123456


def test_headers_survive_exactly_text_or_not() -> None:
    headers = (("a", b"text"), ("a", b"\xff\xfe"), ("nul", b"\x00"), ("empty", b""))
    assert decode_headers(encode_headers(headers)) == headers


def test_facts_of_a_stored_record_match_the_broker_record() -> None:
    row = with_digests(record(4))
    assert facts_of(row) == kafka_facts(
        row.kafka_timestamp, row.timestamp_type, row.record_key, row.headers, row.value
    )
    assert facts_of(row) != facts_of(with_digests(row._replace(value=b"other")))
    assert facts_of(row) == facts_of(row._replace(value=None, purged_at=STORED_AT))


def test_text_every_store_accepts() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("a\udc80b") == "a?b"
    assert clean_text(None) is None


def test_schema_fingerprint_of_single_object_values() -> None:
    # The 8 bytes in wire order, as the released file is named: never read as a number.
    assert schema_fingerprint(b"\xc3\x01" + bytes.fromhex("897eecb088f47981") + b"x") == (
        "897eecb088f47981"
    )
    assert schema_fingerprint(b"\xc3\x02" + bytes(8)) is None
    assert schema_fingerprint(b"short") is None
    assert schema_fingerprint(None) is None
