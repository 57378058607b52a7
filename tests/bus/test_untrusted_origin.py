"""A record whose signed content cannot be decoded never passes for a proven originator."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_support import (
    RELEASED,
    partner_headers,
    private_key,
    reference_encode,
    reference_form,
)

from services.bus import H_ORIGINATOR, Exchange, Settings, SignatureStatus, load_examples

REPO = RELEASED.parents[1]
EXCHANGE = Exchange.from_settings(
    Settings(
        agreement=REPO / "deploy" / "agreement.example.yaml",
        keys_dir=REPO / "deploy" / "keys",
        schemas_dir=REPO / "schemas",
    )
)
REPORT = next(e.report for e in load_examples() if e.report.report_type == "IncidentReport")


def _unreleased_version(tmp_path: Path) -> Path:
    """A compatible IncidentReport version nobody released: a partner's newer schema."""
    current = max((RELEASED / "IncidentReport").glob("*.avsc"), key=lambda p: len(p.read_text()))
    schema = json.loads(current.read_text())
    schema["fields"].append({"name": "weather", "type": ["null", "string"], "default": None})
    path = tmp_path / "IncidentReport.avsc"
    path.write_text(json.dumps(schema))
    return path


def _signed_by_pl(tmp_path: Path, claimed: bytes | None) -> tuple[bytes, list[tuple[str, bytes]]]:
    datum = reference_form(REPORT.model_dump())
    datum["weather"] = "fog"
    value = reference_encode(_unreleased_version(tmp_path), datum)
    signature = private_key("PL-SG-2026-1").sign(value)
    headers = partner_headers(datum, "IncidentReport", value, "PL-SG-2026-1", signature)
    headers = [(k, v) for k, v in headers if k != H_ORIGINATOR]
    if claimed is not None:
        headers.append((H_ORIGINATOR, claimed))
    return value, headers


def test_a_header_claiming_another_party_than_the_signer_is_invalid(
    exchange: Exchange, tmp_path: Path
) -> None:
    # The case: header LT-VSAT, PL-SG's own key, a schema OIX does not know.
    value, headers = _signed_by_pl(tmp_path, b"LT-VSAT")
    opened = exchange.opener.open(value, headers)
    assert opened.decoded is None
    assert "unknown writer schema fingerprint" in str(opened.decode_error)
    assert opened.verification.status is SignatureStatus.INVALID
    assert "PL-SG's key" in opened.verification.reason
    assert "'LT-VSAT'" in opened.verification.reason
    assert not opened.trusted


def test_the_signers_own_claim_is_still_unproven(exchange: Exchange, tmp_path: Path) -> None:
    for claimed in (b"PL-SG", None):
        value, headers = _signed_by_pl(tmp_path, claimed)
        opened = exchange.opener.open(value, headers)
        assert opened.verification.status is SignatureStatus.UNVERIFIED_ORIGIN, claimed
        assert opened.verification.party == "PL-SG"
        assert "unproven" in opened.verification.reason
        assert not opened.trusted


def test_a_corrupt_value_signed_by_its_party_is_unproven(exchange: Exchange) -> None:
    value = exchange.codec.encode(REPORT)[:-3]
    signer = exchange.signer("LT-VSAT")
    headers = [
        ("oix-originator", b"LT-VSAT"),
        ("oix-signature", signer.sign(value)),
        ("oix-key-id", signer.key_id_bytes),
    ]
    opened = exchange.opener.open(value, headers)
    assert opened.decoded is None
    assert opened.verification.status is SignatureStatus.UNVERIFIED_ORIGIN


@settings(max_examples=200, deadline=None)
@given(
    value=st.binary(max_size=300),
    claimed=st.sampled_from([None, b"LT-VSAT", b"PL-SG", b"XX-NOBODY", b"\xff"]),
    signer_party=st.sampled_from(["LT-VSAT", "PL-SG", "UA-DPSU"]),
)
def test_undecodable_content_is_never_valid(
    value: bytes, claimed: bytes | None, signer_party: str
) -> None:
    signer = EXCHANGE.signer(signer_party)
    headers = [("oix-signature", signer.sign(value)), ("oix-key-id", signer.key_id_bytes)]
    if claimed is not None:
        headers.append(("oix-originator", claimed))
    opened = EXCHANGE.opener.open(value, headers)
    if opened.decoded is None:
        assert opened.verification.status is not SignatureStatus.VALID
