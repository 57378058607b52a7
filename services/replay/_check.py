"""Checking an evidence bundle: files, manifest signature, chain continuity, signatures.

Needs no OIX store: only the bundle (see ``_bundle`` and ``docs/replay.md``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson

from services.audit import AuditRecord, content_matches, link
from services.bus import H_KEY_ID, H_SIGNATURE, TrustedKey, Verifier
from services.replay._bundle import FORMAT, KEYS, MANIFEST, RECORDS, SIGNATURE, row_of, sha256_of
from services.replay._errors import EvidenceError


@dataclass
class EvidenceCheck:
    """What checking a bundle found: ``findings`` empty means it checks clean."""

    findings: list[str] = field(default_factory=list)
    records: int = 0
    partitions: int = 0
    valid_signatures: int = 0
    purged: int = 0
    """Records whose content retention purged: chained by digest, no signature to check."""
    signed_by: str | None = None

    @property
    def clean(self) -> bool:
        """No finding."""
        return not self.findings


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{path}: cannot be read as JSON: {exc}") from exc


def _check_files(bundle: Path, manifest: dict[str, Any], found: EvidenceCheck) -> None:
    listed: dict[str, str] = manifest.get("files", {})
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if not path.is_file():
            found.findings.append(f"{name}: listed in the manifest but missing")
        elif sha256_of(path) != digest:
            found.findings.append(f"{name}: its SHA-256 differs from the manifest's")
    extra = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {
        MANIFEST,
        SIGNATURE,
        *listed,
    }
    found.findings.extend(f"{name}: not listed in the manifest" for name in sorted(extra))


def _check_manifest_signature(
    bundle: Path, manifest: dict[str, Any], found: EvidenceCheck, expected_signer: str | None
) -> None:
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415  # only when signed
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415  # same
        Ed25519PublicKey,
    )

    signer = manifest.get("signer")
    path = bundle / SIGNATURE
    if signer is None or not path.is_file():
        if signer is not None or path.is_file():
            found.findings.append(f"{SIGNATURE}: the signature and the manifest's signer disagree")
        elif expected_signer is not None:
            found.findings.append(f"{MANIFEST}: not signed, but a signer's key was expected")
        return
    public = str(signer["public_key"])
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public))
        key.verify(base64.b64decode(path.read_text().strip()), (bundle / MANIFEST).read_bytes())
    except (InvalidSignature, ValueError):
        found.findings.append(f"{SIGNATURE}: the manifest's signature does not verify")
        return
    if expected_signer is not None and public != expected_signer:
        found.findings.append(f"{SIGNATURE}: signed by {public}, not by the expected key")
    found.signed_by = f"{signer.get('name') or '?'} ({public})"


def _verifier(bundle: Path) -> Verifier:
    keys = [
        TrustedKey(
            item["party"],
            item["key_id"],
            base64.b64decode(item["public_key"]),
            None if item["not_before"] is None else datetime.fromisoformat(item["not_before"]),
            None if item["not_after"] is None else datetime.fromisoformat(item["not_after"]),
        )
        for item in _read_json(bundle / KEYS)["keys"]
    ]
    return Verifier(keys)


def _created_at(decoded: str | None) -> datetime | None:
    if decoded is None:
        return None
    created = orjson.loads(decoded).get("header", {}).get("created_at")
    return None if created is None else datetime.fromisoformat(created)


def _readable(stream: Any, found: EvidenceCheck) -> Iterator[dict[str, Any]]:
    """The records of ``records.avro``; a file that stops being readable is a finding."""
    try:
        for record in fastavro.reader(stream):
            assert isinstance(record, dict)
            yield record
    except Exception as exc:  # noqa: BLE001  # damaged bytes fail fastavro in many ways; all say one thing
        found.findings.append(
            f"{RECORDS}: unreadable after record {found.records}: {type(exc).__name__}: {exc}"
        )


def check_evidence(bundle: Path, *, expected_signer: str | None = None) -> EvidenceCheck:
    """Check a bundle: files, manifest signature, chain continuity, every record's signature.

    ``expected_signer`` (base64 Ed25519 public key) requires the manifest signed by it.

    Raises:
        EvidenceError: not a bundle (no readable manifest, another format, a manifest or
            key list without the fields it must have).
    """
    try:
        return _check(bundle, expected_signer)
    except (KeyError, TypeError, AttributeError) as exc:
        raise EvidenceError(
            f"{bundle}: the manifest or keys.json lacks what it must hold ({exc!r})"
        ) from exc


def _purged(row: AuditRecord, at: str, found: EvidenceCheck) -> bool:
    """Note content that differs from its chained digests; True for a purged record.

    A purged record's value, put back in a bundle, must still be the original.
    """
    value_put_back = row.value is not None and row.purged_at is not None
    if not content_matches(row) or (
        value_put_back and hashlib.sha256(row.value or b"").digest() != row.value_digest
    ):
        found.findings.append(f"{at}: the content differs from the digests the chain covers")
    if row.purged_at is None:
        return False
    found.purged += 1
    return True


def _check_record_signature(
    row: AuditRecord, pairs: dict[str, bytes], verifier: Verifier, at: str, found: EvidenceCheck
) -> None:
    """Verify the value's signature; one recorded as valid that does not verify is a finding."""
    key_id = pairs.get(H_KEY_ID)
    verification = verifier.verify(
        row.value or b"",
        pairs.get(H_SIGNATURE),
        None if key_id is None else key_id.decode(errors="replace"),
        row.originator if row.decode_error is None else None,
        _created_at(row.decoded),
    )
    found.valid_signatures += verification.ok
    if row.signature_status == "valid" and not verification.ok:
        found.findings.append(
            f"{at}: recorded as valid, but its signature does not verify "
            f"({verification.status}: {verification.reason})"
        )


def _check(  # noqa: C901  # one pass over the records, every check in order
    bundle: Path, expected_signer: str | None
) -> EvidenceCheck:
    manifest = _read_json(bundle / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise EvidenceError(f"{bundle}: not an OIX evidence bundle ({FORMAT})")
    found = EvidenceCheck()
    _check_files(bundle, manifest, found)
    _check_manifest_signature(bundle, manifest, found, expected_signer)
    verifier = _verifier(bundle)
    chains = {(p["topic"], p["partition"]): p for p in manifest["partitions"]}
    found.partitions = len(chains)
    heads: dict[tuple[str, int], bytes] = {}
    counts: dict[tuple[str, int], int] = {}
    last_at: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        stream = (bundle / RECORDS).open("rb")
    except OSError as exc:
        raise EvidenceError(f"{bundle / RECORDS}: {exc.strerror}") from exc
    with stream:
        for record in _readable(stream, found):
            found.records += 1
            row = row_of(record)
            where = (row.topic, row.kafka_partition)
            at = f"{row.topic}[{row.kafka_partition}] epoch {row.epoch} offset {row.kafka_offset}"
            chain = chains.get(where)
            if chain is None:
                found.findings.append(f"{at}: its partition is not in the manifest")
                continue
            position = (row.epoch, row.kafka_offset)
            if where in last_at and position <= last_at[where]:
                found.findings.append(f"{at}: out of order, after {last_at[where]}")
            last_at[where] = position
            raw = tuple((h["name"], h["value"]) for h in record["headers"])
            if raw != row.header_pairs():
                found.findings.append(f"{at}: the raw headers differ from those the chain covers")
            previous = heads.get(where, bytes.fromhex(chain["previous_hash"]))
            if link(previous, row) != row.row_hash:
                found.findings.append(f"{at}: the chain breaks here (row hash does not follow)")
            heads[where] = row.row_hash
            counts[where] = counts.get(where, 0) + 1
            if _purged(row, at, found):
                continue  # its value is gone by retention: the chain still covers its digest
            _check_record_signature(row, dict(raw), verifier, at, found)
    for where, chain in sorted(chains.items()):
        name = f"{where[0]}[{where[1]}]"
        if counts.get(where, 0) != chain["count"]:
            found.findings.append(
                f"{name}: {counts.get(where, 0)} records, the manifest says {chain['count']}"
            )
        end = heads.get(where, bytes.fromhex(chain["previous_hash"]))
        if end.hex() != chain["last_hash"]:
            found.findings.append(f"{name}: the chain ends at {end.hex()}, not the manifest's")
    return found
