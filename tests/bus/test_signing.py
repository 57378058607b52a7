"""Signatures over encoded values, and Kafka headers checked against the signed content."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka_support import read_topics

from services.bus import (
    H_KEY_ID,
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_SCHEMA,
    H_SIGNATURE,
    H_TYPE,
    Exchange,
    SealedReport,
    Settings,
    SignatureStatus,
    Signer,
    SigningError,
    Verifier,
    load_examples,
    start_producer,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = next(
    e.report for e in load_examples(REPO / "deploy" / "examples") if e.name.startswith("02")
)


def _replace(
    headers: list[tuple[str, bytes]], name: str, value: bytes | None
) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in headers if k != name]
    return kept if value is None else [*kept, (name, value)]


@pytest.fixture
def sealed(exchange: Exchange) -> SealedReport:
    return exchange.sealer("LV-VRS").seal(EXAMPLE)


def test_libsodium_and_openssl_make_the_same_signature() -> None:
    private = Ed25519PrivateKey.generate()
    value = b"\xc3\x01 any value"
    signer = Signer("LT-VSAT", "k", private.private_bytes_raw())
    assert signer.sign(value) == private.sign(value)


def test_a_sealed_report_verifies(exchange: Exchange, sealed: SealedReport) -> None:
    opened = exchange.opener.open(sealed.value, sealed.headers)
    assert opened.verification.status is SignatureStatus.VALID
    assert opened.trusted


def test_a_tampered_value_is_invalid(exchange: Exchange, sealed: SealedReport) -> None:
    value = bytearray(sealed.value)
    value[-3] ^= 0x01
    opened = exchange.opener.open(bytes(value), sealed.headers)
    assert opened.verification.status is SignatureStatus.INVALID
    assert "does not match" in opened.verification.reason


@pytest.mark.parametrize(
    ("header", "forged"),
    [
        (H_ORIGINATOR, b"LT-VSAT"),
        (H_MESSAGE_ID, b"00000000-0000-0000-0000-000000000000"),
        (H_TYPE, b"SituationReport"),
        (H_SCHEMA, b"0000000000000000"),
    ],
)
def test_a_header_contradicting_the_signed_content_is_invalid(
    exchange: Exchange, sealed: SealedReport, header: str, forged: bytes
) -> None:
    opened = exchange.opener.open(sealed.value, _replace(sealed.headers, header, forged))
    assert opened.verification.status is SignatureStatus.INVALID
    assert header in opened.verification.reason


def test_a_missing_fact_header_is_invalid(exchange: Exchange, sealed: SealedReport) -> None:
    opened = exchange.opener.open(sealed.value, _replace(sealed.headers, H_ORIGINATOR, None))
    assert opened.verification.status is SignatureStatus.INVALID
    assert "missing" in opened.verification.reason


def test_no_signature_is_unsigned(exchange: Exchange, sealed: SealedReport) -> None:
    headers = _replace(_replace(sealed.headers, H_SIGNATURE, None), H_KEY_ID, None)
    assert (
        exchange.opener.open(sealed.value, headers).verification.status is SignatureStatus.UNSIGNED
    )


def test_signature_without_key_id_is_invalid(exchange: Exchange, sealed: SealedReport) -> None:
    headers = _replace(sealed.headers, H_KEY_ID, None)
    assert (
        exchange.opener.open(sealed.value, headers).verification.status is SignatureStatus.INVALID
    )


def test_an_unknown_key_id_is_reported(exchange: Exchange, sealed: SealedReport) -> None:
    headers = _replace(sealed.headers, H_KEY_ID, b"XX-NOBODY-1")
    opened = exchange.opener.open(sealed.value, headers)
    assert opened.verification.status is SignatureStatus.UNKNOWN_KEY
    assert "XX-NOBODY-1" in opened.verification.reason


def test_a_party_signing_for_another_is_invalid(exchange: Exchange, sealed: SealedReport) -> None:
    # LT-VSAT's genuine key signs a value whose signed header says LV-VRS sent it.
    lithuania = exchange.signer("LT-VSAT")
    headers = _replace(
        _replace(sealed.headers, H_SIGNATURE, lithuania.sign(sealed.value)),
        H_KEY_ID,
        lithuania.key_id.encode(),
    )
    opened = exchange.opener.open(sealed.value, headers)
    assert opened.verification.status is SignatureStatus.INVALID
    assert "LT-VSAT's key" in opened.verification.reason


def test_the_sealer_refuses_to_sign_for_another_party(exchange: Exchange) -> None:
    with pytest.raises(SigningError, match=r"LV-VRS cannot be signed with LT-VSAT's key"):
        exchange.sealer("LT-VSAT").seal(EXAMPLE)


def test_a_key_file_not_matching_the_agreement_is_refused(
    tmp_path: Path, exchange: Exchange
) -> None:
    from services.bus import generate_key_pair

    (tmp_path / "LT-VSAT-2026-1.pem").write_bytes(generate_key_pair().private_pem)
    other = Exchange(exchange.agreement, exchange.codec, exchange.naming, tmp_path)
    with pytest.raises(SigningError, match="does not match the public key"):
        other.signer("LT-VSAT")


def test_a_short_signature_is_invalid(exchange: Exchange) -> None:
    verifier = Verifier(exchange.agreement.trusted_keys())
    verification = verifier.verify(b"v", b"short", "LT-VSAT-2026-1", "LT-VSAT")
    assert verification.status is SignatureStatus.INVALID
    assert "5 bytes" in verification.reason


async def test_tampering_on_the_way_through_the_broker_is_found(
    settings: Settings, exchange: Exchange, bootstrap: str, sealed: SealedReport
) -> None:
    topic = exchange.naming.feed("LV-VRS", "incidents")
    value = bytearray(sealed.value)
    value[40] ^= 0xFF
    producer = await start_producer(settings, bootstrap)
    try:
        await producer.send_and_wait(topic, sealed.value, key=sealed.key, headers=sealed.headers)
        await producer.send_and_wait(topic, bytes(value), key=sealed.key, headers=sealed.headers)
    finally:
        await producer.stop()
    records = await read_topics(bootstrap, [topic], expected=2)
    statuses = sorted(exchange.opener.open(r.value, r.headers).verification.status for r in records)
    assert statuses == [SignatureStatus.INVALID, SignatureStatus.VALID]
