"""Check an OIX evidence bundle with standard tools only: Python, ``avro`` and ``cryptography``.

This file imports nothing of OIX: an inspector without OIX (or distrusting
it) runs ``python3 check_evidence.py BUNDLE`` (every bundle holds a copy; the
one in OIX's documentation is the reference). It checks, and prints every
finding with its coordinates:

1. every file the manifest lists has its SHA-256, and no other file is there;
2. the manifest's Ed25519 signature, when the bundle is signed (compare the
   signer's public key with the one the exporting auditor gave you);
3. each partition's hash chain: every record's row hash is
   SHA-256(previous row hash || canonical encoding of the stored row), from
   the previous hash the manifest names to its last hash, with the count it
   names, in strictly increasing (epoch, offset) order, and the raw headers
   are those the chain covers;
4. every record's Ed25519 signature over its value, with the key its
   ``oix-key-id`` header names among the agreement's keys (``keys.json``),
   made by the party the record names as its originator, with a key that was
   valid (``not_before`` <= created_at < ``not_after``) at the record's
   **signed** creation time (``header.created_at`` of the decoded report, as
   OIX's verifier judges it: rotation windows), agrees with the status the
   audit store recorded.

Exit status 0: the bundle checks clean; 1: a finding; 2: unreadable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from avro.datafile import DataFileReader
from avro.io import DatumReader
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RECORDS = "records.avro"
KEYS = "keys.json"
CHAIN_TAG = b"oix-audit-chain/2\n"
OPENED_TAG = b"oix-audit-opened/1\n"
GENESIS = bytes(32)


def _int(value: int, tag: int = 1) -> bytes:
    return struct.pack(">Bq", tag, value)


def _text(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode()
    return struct.pack(">BI", 2, len(data)) + data


def _blob(value: bytes | None) -> bytes:
    if value is None:
        return b"\x00"
    return struct.pack(">BI", 3, len(value)) + value


def _sha256(data: bytes | None) -> bytes | None:
    return None if data is None else hashlib.sha256(data).digest()


def opened_digest(row: dict[str, Any]) -> bytes:
    """SHA-256 of what opening the value found: the decoded JSON and the decode error."""
    return hashlib.sha256(OPENED_TAG + _text(row["decoded"]) + _text(row["decode_error"])).digest()


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes the audit store's chain covers for one row (docs/audit.md, "the hash chain").

    Chain version 2: the content (value, what opening it found) enters through
    its SHA-256 digests, which the row keeps after retention purged the content.
    """
    row = record["stored"]
    retain_until = row["retain_until"]
    return b"".join(
        [
            CHAIN_TAG,
            _text(record["topic"]),
            _int(record["partition"]),
            _int(record["epoch"]),
            _int(record["offset"]),
            _int(record["timestamp"]),
            _int(record["timestamp_type"]),
            _blob(record["key"]),
            _text(row["headers_json"]),
            _blob(row["value_digest"]),
            _text(row["schema_fingerprint"]),
            _text(row["message_id"]),
            _text(row["originator"]),
            _text(row["report_type"]),
            _text(row["signature_status"]),
            _text(row["signature_detail"]),
            _blob(row["opened_digest"]),
            b"\x00" if retain_until is None else _int(retain_until),
            _int(row["stored_at_us"], 4),
        ]
    )


def content_matches(record: dict[str, Any]) -> bool:
    """The content a record still holds agrees with the digests the chain covers."""
    row = record["stored"]
    if row["purged_at_us"] is not None:  # no content left but a value put back must be the original
        return record["value"] is None or row["value_digest"] == _sha256(record["value"])
    same_value: bool = row["value_digest"] == _sha256(record["value"])
    same_opened: bool = row["opened_digest"] == opened_digest(row)
    return same_value and same_opened


def _headers_of(text: str) -> list[tuple[str, bytes]]:
    pairs = []
    for item in json.loads(text):
        raw = item["text"].encode() if "text" in item else base64.b64decode(item["base64"])
        pairs.append((item["name"], raw))
    return pairs


def _check_files(bundle: Path, manifest: dict[str, Any], findings: list[str]) -> None:
    listed = manifest["files"]
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if not path.is_file():
            findings.append(f"{name}: listed in the manifest but missing")
            continue
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        if found != digest:
            findings.append(f"{name}: SHA-256 {found} differs from the manifest's {digest}")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {
        MANIFEST,
        SIGNATURE,
    }
    findings.extend(f"{name}: not listed in the manifest" for name in sorted(present - set(listed)))


def _check_signature(bundle: Path, manifest: dict[str, Any], findings: list[str]) -> str:
    path = bundle / SIGNATURE
    signer = manifest.get("signer")
    if not path.is_file():
        if signer:
            findings.append(f"{SIGNATURE}: missing, but the manifest names a signer")
        return "unsigned"
    if not signer:
        findings.append(f"{SIGNATURE}: present, but the manifest names no signer")
        return "signature without signer"
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(signer["public_key"]))
        key.verify(base64.b64decode(path.read_text().strip()), (bundle / MANIFEST).read_bytes())
    except (InvalidSignature, ValueError, binascii.Error):
        findings.append(f"{SIGNATURE}: the manifest's signature does not verify")
        return "bad signature"
    return f"signed by {signer.get('name', '?')} (public key {signer['public_key']})"


Key = tuple[str, Ed25519PublicKey, "datetime | None", "datetime | None"]
"""A key of keys.json: its party, public key, and validity window (not_before, not_after)."""


def _moment(text: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` accepted on every Python 3), or None."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: FURB162  # Python < 3.11
    if moment.tzinfo is None:
        raise ValueError(f"{text}: a time without its UTC offset")
    return moment


def _keys(bundle: Path) -> dict[str, Key]:
    keys = {}
    for item in json.loads((bundle / KEYS).read_text())["keys"]:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(item["public_key"]))
        window = (_moment(item.get("not_before")), _moment(item.get("not_after")))
        keys[item["key_id"]] = (item["party"], public, *window)
    return keys


def _created_at(stored: dict[str, Any]) -> datetime | None:
    """The signed creation time: ``header.created_at`` of the decoded report, if readable."""
    if stored["decoded"] is None or stored["decode_error"] is not None:
        return None
    created = json.loads(stored["decoded"]).get("header", {}).get("created_at")
    return None if created is None else _moment(created)


def _outside(key: Key, created_at: datetime | None) -> str | None:
    """Why the key was not valid when the record was created (None: it was)."""
    _, _, not_before, not_after = key
    if created_at is None:
        return None  # undecodable: not verified anyway (its originator is unproven)
    created = created_at.isoformat()
    if not_before is not None and created_at < not_before:
        return f"created at {created}, before its key's not_before {not_before.isoformat()}"
    if not_after is not None and created_at >= not_after:
        return f"created at {created}, at or after its key's not_after {not_after.isoformat()}"
    return None


def _signature_finding(record: dict[str, Any], keys: dict[str, Key]) -> tuple[bool, str | None]:
    """Whether the value's signature checks out, and a contradiction with the recorded status.

    Checks out: made with the key of the originator the decoded content names,
    the key valid at the record's signed creation time (as OIX's verifier).
    """
    headers = {h["name"]: h["value"] for h in record["headers"]}
    signature, key_id = headers.get("oix-signature"), headers.get("oix-key-id")
    stored = record["stored"]
    verified, why = False, "its signature does not verify by its originator's key"
    if signature and key_id and key_id.decode(errors="replace") in keys:
        key = keys[key_id.decode()]
        try:
            key[1].verify(signature, record["value"] or b"")
            # Undecodable content names no proven originator (OIX: unverified_origin).
            verified = key[0] == stored["originator"] and stored["decode_error"] is None
        except InvalidSignature:
            verified = False
        if verified:
            outside = _outside(key, _created_at(stored))
            if outside is not None:
                verified, why = False, f"its key was not valid then: {outside}"
    if stored["signature_status"] == "valid" and not verified:
        return False, f"recorded as valid, but {why}"
    return verified, None


def _readable(stream: Any, findings: list[str]) -> Iterator[object]:
    """The records of records.avro; a file that stops being readable is a finding."""
    count = 0
    try:
        for item in DataFileReader(stream, DatumReader()):
            yield item
            count += 1
    except Exception as exc:  # noqa: BLE001  # any failure of the reader means the same
        findings.append(f"{RECORDS}: unreadable after record {count}: {exc!r}")


def check(bundle: Path) -> tuple[list[str], list[str]]:  # noqa: C901  # one pass, every check in order
    """The findings (empty: clean) and a summary of what was checked."""
    findings: list[str] = []
    manifest = json.loads((bundle / MANIFEST).read_text())
    _check_files(bundle, manifest, findings)
    signed = _check_signature(bundle, manifest, findings)
    keys = _keys(bundle)
    chains = {(p["topic"], p["partition"]): p for p in manifest["partitions"]}
    state: dict[tuple[str, int], dict[str, Any]] = {}
    valid = total = purged = 0
    with (bundle / RECORDS).open("rb") as stream:
        for item in _readable(stream, findings):
            record = cast("dict[str, Any]", item)
            total += 1
            where = (record["topic"], record["partition"])
            at = f"{where[0]}[{where[1]}] epoch {record['epoch']} offset {record['offset']}"
            chain = chains.get(where)
            if chain is None:
                findings.append(f"{at}: its partition is not in the manifest")
                continue
            seen = state.setdefault(
                where, {"hash": bytes.fromhex(chain["previous_hash"]), "count": 0, "at": None}
            )
            position = (record["epoch"], record["offset"])
            if seen["at"] is not None and position <= seen["at"]:
                findings.append(f"{at}: out of order (after epoch/offset {seen['at']})")
            seen["at"] = position
            raw = [(h["name"], h["value"]) for h in record["headers"]]
            if raw != _headers_of(record["stored"]["headers_json"]):
                findings.append(f"{at}: the raw headers differ from those the chain covers")
            expected = hashlib.sha256(seen["hash"] + canonical(record)).digest()
            if expected != record["stored"]["row_hash"]:
                findings.append(f"{at}: the chain breaks here (row hash does not follow)")
            seen["hash"] = record["stored"]["row_hash"]
            seen["count"] += 1
            if not content_matches(record):
                findings.append(f"{at}: the content differs from the digests the chain covers")
            if record["stored"]["purged_at_us"] is not None:
                purged += 1  # its value is gone by retention: the chain still covers its digest
                continue
            ok, contradiction = _signature_finding(record, keys)
            valid += ok
            if contradiction:
                findings.append(f"{at}: {contradiction}")
    for where, chain in sorted(chains.items()):
        seen = state.get(where, {"hash": bytes.fromhex(chain["previous_hash"]), "count": 0})
        name = f"{where[0]}[{where[1]}]"
        if seen["count"] != chain["count"]:
            findings.append(f"{name}: {seen['count']} records, the manifest says {chain['count']}")
        if seen["hash"].hex() != chain["last_hash"]:
            findings.append(f"{name}: the chain ends at {seen['hash'].hex()}, not the manifest's")
    summary = [
        f"manifest: {signed}",
        f"records: {total} in {len(chains)} partition chain(s)",
        (
            f"signatures: {valid} verified by their originator's key valid at their creation, "
            f"{purged} purged by retention (chained by digest), {total - valid - purged} not"
        ),
    ]
    return findings, summary


def main(argv: list[str]) -> int:
    """``python3 check_evidence.py BUNDLE``."""
    if len(argv) != 2:  # noqa: PLR2004
        sys.stderr.write("usage: check_evidence.py BUNDLE_DIRECTORY\n")
        return 2
    bundle = Path(argv[1])
    try:
        findings, summary = check(bundle)
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"cannot read the bundle {bundle}: {exc!r}\n")
        return 2
    for line in summary:
        sys.stdout.write(f"{line}\n")
    for finding in findings:
        sys.stdout.write(f"FINDING {finding}\n")
    sys.stdout.write("clean\n" if not findings else f"{len(findings)} finding(s)\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
