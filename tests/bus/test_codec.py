"""The codec: single-object encoding, agreement with the avro reference package, bad bytes."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import io
import json
import uuid
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.bus import (
    Codec,
    CorruptMessageError,
    DecodeError,
    Report,
    SchemaRegistry,
    UnknownSchemaError,
    load_examples,
)

REPO = Path(__file__).resolve().parents[2]
CODEC = Codec(SchemaRegistry.from_dir(REPO / "schemas"))
EXAMPLES = load_examples(REPO / "deploy" / "examples")
VALUES = [CODEC.encode(e.report) for e in EXAMPLES]


def _reference_form(value: Any) -> Any:
    """A record as the avro package takes and returns it."""
    if isinstance(value, dict):
        return {k: _reference_form(v) for k, v in value.items() if k != "type"}
    if isinstance(value, list):
        return [_reference_form(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return value


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_single_object_prefix_is_magic_and_little_endian_fingerprint(example: Any) -> None:
    value = CODEC.encode(example.report)
    fingerprint = CODEC.fingerprint_of(example.report.report_type)
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == fingerprint
    assert fingerprint.hex() == CODEC.registry.current[example.report.report_type].fingerprint_hex


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_bytes_agree_with_the_avro_reference_package(example: Any) -> None:
    report: Report = example.report
    schema = avro.schema.parse(json.dumps(CODEC.registry.current[report.report_type].schema))
    theirs = io.BytesIO()
    avro.io.DatumWriter(schema).write(
        _reference_form(report.model_dump()), avro.io.BinaryEncoder(theirs)
    )
    ours = CODEC.encode(report)
    assert ours[10:] == theirs.getvalue()
    read_back = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(ours[10:])))
    assert read_back == _reference_form(CODEC.decode(ours).record)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_decode_gives_back_the_report(example: Any) -> None:
    decoded = CODEC.decode(CODEC.encode(example.report))
    assert decoded.report_type == example.report.report_type
    assert decoded.to_model() == example.report


def test_unknown_fingerprint_is_a_typed_error() -> None:
    value = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + VALUES[0][10:]
    with pytest.raises(UnknownSchemaError, match="fingerprint 0123456789abcdef: not in"):
        CODEC.decode(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "shorter than the 10-byte"),
        (b"\xc3\x01\x00", "shorter than the 10-byte"),
        (b"{" + VALUES[0][1:], "not the Avro single-object marker"),
        (VALUES[0][:-5], "does not decode"),
        (VALUES[0] + b"\x00", "1 trailing bytes"),
    ],
    ids=["empty", "short", "json", "truncated", "trailing"],
)
def test_bad_bytes_are_a_typed_error(value: bytes, message: str) -> None:
    with pytest.raises(CorruptMessageError, match=message):
        CODEC.decode(value)


def _decode_or_typed_error(value: bytes) -> None:
    # Decoding may succeed (a mutation can keep the value valid) or raise the typed error.
    with contextlib.suppress(DecodeError):
        CODEC.decode(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_give_only_the_typed_error(value: bytes) -> None:
    _decode_or_typed_error(value)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALUES),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "set"]),
            st.integers(0, 10_000),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_mutated_values_give_only_the_typed_error(
    original: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    value = bytearray(original)
    for kind, position, byte in mutations:
        at = position % (len(value) + 1)
        if kind == "insert":
            value.insert(at, byte)
        elif value and at < len(value):
            if kind == "flip":
                value[at] ^= 1 << (byte % 8)
            elif kind == "delete":
                del value[at]
            else:
                value[at] = byte
    _decode_or_typed_error(bytes(value))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALUES), st.binary(min_size=0, max_size=600))
def test_valid_prefix_with_random_body_gives_only_the_typed_error(
    original: bytes, body: bytes
) -> None:
    _decode_or_typed_error(original[:10] + body)


def test_a_huge_length_prefix_neither_hangs_nor_exhausts_memory() -> None:
    # A zig-zag varint of 2**62 where a string length belongs.
    huge = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    with pytest.raises(CorruptMessageError):
        CODEC.decode(VALUES[0][:10] + huge + b"x" * 10)
