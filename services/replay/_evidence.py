"""Evidence bundles: a range of the exchange's history an inspector can check without OIX.

A bundle is a directory (``docs/replay.md`` specifies every file):

- ``records.avro``: every record of the range, the raw key, headers and value
  exactly as on the wire, its Kafka coordinates, and the audit store's row
  (what it found, when it stored it, its hash-chain link);
- ``keys.json`` and ``agreement.yaml``: the public keys and the agreement in
  force; ``schemas/``: the released writer schemas of the values;
- ``check_evidence.py``: the standalone checker (standard tools only);
- ``manifest.json``: the SHA-256 of every file, each partition's chain from
  the hash before the range to its last hash, and what was selected;
  ``manifest.sig``: its Ed25519 signature when the exporter signs.

A range is whole pieces of each partition's chain (from the first selected
row to the last, every row between), so its continuity can be proven; content
filters would cut the chain and are refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import AuditRecord, RecordScan, link
from services.bus import H_KEY_ID, H_SIGNATURE, Exchange, Settings, TrustedKey, Verifier
from services.replay._errors import EvidenceError, SelectionError
from services.replay._select import Selection

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RECORDS = "records.avro"
KEYS = "keys.json"
AGREEMENT = "agreement.yaml"
CHECKER = "check_evidence.py"
FORMAT = "oix-evidence/1"

_STANDALONE = Path(__file__).with_name("standalone_check.py")
_OPTIONAL_TEXT = ["null", "string"]

EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "EvidenceRecord",
    "namespace": "eu.oix.evidence",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "epoch", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long"},
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
        {
            "name": "stored",
            "type": {
                "type": "record",
                "name": "StoredRow",
                "doc": "The audit store's row: what the chain covers besides the Kafka facts.",
                "fields": [
                    {"name": "headers_json", "type": "string"},
                    {"name": "schema_fingerprint", "type": _OPTIONAL_TEXT},
                    {"name": "message_id", "type": _OPTIONAL_TEXT},
                    {"name": "originator", "type": _OPTIONAL_TEXT},
                    {"name": "report_type", "type": _OPTIONAL_TEXT},
                    {"name": "signature_status", "type": "string"},
                    {"name": "signature_detail", "type": "string"},
                    {"name": "decoded", "type": _OPTIONAL_TEXT},
                    {"name": "decode_error", "type": _OPTIONAL_TEXT},
                    {"name": "stored_at_us", "type": "long"},
                    {"name": "row_hash", "type": "bytes"},
                ],
            },
        },
    ],
}
"""The schema of ``records.avro`` (embedded in the file, as every container file's is)."""

_PARSED = fastavro.parse_schema(EVIDENCE_SCHEMA)
_EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH_START) // _MICROSECOND


def _evidence_record(row: AuditRecord) -> dict[str, Any]:
    return {
        "topic": row.topic,
        "partition": row.kafka_partition,
        "epoch": row.epoch,
        "offset": row.kafka_offset,
        "timestamp": row.kafka_timestamp,
        "timestamp_type": row.timestamp_type,
        "key": None if row.record_key is None else bytes(row.record_key),
        "headers": [{"name": n, "value": v} for n, v in row.header_pairs()],
        "value": None if row.value is None else bytes(row.value),
        "stored": {
            "headers_json": row.headers,
            "schema_fingerprint": row.schema_fingerprint,
            "message_id": row.message_id,
            "originator": row.originator,
            "report_type": row.report_type,
            "signature_status": row.signature_status,
            "signature_detail": row.signature_detail,
            "decoded": row.decoded,
            "decode_error": row.decode_error,
            "stored_at_us": _micros(row.stored_at),
            "row_hash": bytes(row.row_hash),
        },
    }


def _row_of(record: dict[str, Any]) -> AuditRecord:
    """The audit store's row an evidence record carries (to recompute its chain link)."""
    stored = record["stored"]
    return AuditRecord(
        record["topic"],
        record["partition"],
        record["epoch"],
        record["offset"],
        record["timestamp"],
        record["timestamp_type"],
        record["key"],
        stored["headers_json"],
        record["value"],
        stored["schema_fingerprint"],
        stored["message_id"],
        stored["originator"],
        stored["report_type"],
        stored["signature_status"],
        stored["signature_detail"],
        stored["decoded"],
        stored["decode_error"],
        _EPOCH_START + stored["stored_at_us"] * _MICROSECOND,
        stored["row_hash"],
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PartitionChain:
    """One partition's piece of the chain in a bundle."""

    topic: str
    partition: int
    previous_hash: bytes
    first: tuple[int, int]
    last: tuple[int, int]
    last_hash: bytes = b""
    count: int = 0

    def as_json(self) -> dict[str, Any]:
        """The manifest's entry."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first": {"epoch": self.first[0], "offset": self.first[1]},
            "last": {"epoch": self.last[0], "offset": self.last[1]},
            "previous_hash": self.previous_hash.hex(),
            "last_hash": self.last_hash.hex(),
            "count": self.count,
        }


@dataclass
class ExportResult:
    """What an export wrote."""

    directory: Path
    records: int = 0
    chains: list[PartitionChain] = field(default_factory=list)
    interrupted: bool = False
    signed: bool = False


CONTENT_FILTERS = (
    "message_id",
    "event_id",
    "report_type",
    "originator",
    "signature_status",
    "mode",
)


def _refuse_content_filters(selection: Selection) -> None:
    used = [name for name in CONTENT_FILTERS if getattr(selection, name) is not None]
    if used:
        names = ", ".join(f"--{name.replace('_', '-')}" for name in used)
        raise SelectionError(
            f"{names}: an evidence bundle holds whole pieces of each partition's hash chain, "
            "which a filter on content would cut; select by topic, party, partition, offsets "
            "or time (filter the bundle's records afterwards)",
        )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The exporter's Ed25519 private key (PKCS#8 PEM, as ``oix keys generate`` writes).

    Raises:
        EvidenceError: the file cannot be read or is not an Ed25519 key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EvidenceError(f"--sign-key: cannot load {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"--sign-key: {path} is not an Ed25519 private key")
    return key


def _public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def _segments(
    scan: RecordScan, selection: Selection, topics: tuple[str, ...]
) -> list[PartitionChain]:
    """Each selected partition's first and last selected row: the chain pieces to export."""
    bounds: dict[tuple[str, int], PartitionChain] = {}
    async for row in scan.records(selection.scan_filter(topics)):
        where = (row.topic, row.kafka_partition)
        at = (row.epoch, row.kafka_offset)
        chain = bounds.get(where)
        if chain is None:
            bounds[where] = PartitionChain(row.topic, row.kafka_partition, b"", at, at)
        else:
            chain.last = at
    for chain in bounds.values():
        chain.previous_hash = await scan.previous_hash(chain.topic, chain.partition, *chain.first)
    return [bounds[where] for where in sorted(bounds)]


def _refuse_used(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise EvidenceError(f"--evidence: {directory} is not empty; give a new directory")


def _make(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


async def export_evidence(  # noqa: C901  # one pass: write, stop, chain bookkeeping
    scan: RecordScan,
    exchange: Exchange,
    settings: Settings,
    selection: Selection,
    directory: Path,
    *,
    sign_key: Ed25519PrivateKey | None = None,
    signer_name: str = "",
    stop: asyncio.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write the evidence bundle of ``selection`` (from the audit store) into ``directory``.

    ``stop`` ends the export after the current record; the bundle then covers
    what was written, and checks clean.

    Raises:
        SelectionError: a content filter, or nothing selected.
        EvidenceError: ``directory`` exists and is not empty.
    """
    _refuse_content_filters(selection)
    _refuse_used(directory)
    topics = selection.topics or tuple(exchange.router.all_topics())
    chains = await _segments(scan, selection, topics)
    if not chains:
        raise SelectionError("nothing in the audit store matches the selection")
    result = ExportResult(directory)
    _make(directory)
    fingerprints: set[str] = set()
    with (directory / RECORDS).open("wb") as stream:
        writer = fastavro.write.Writer(stream, _PARSED, codec="deflate")
        for chain in chains:
            if stop is not None and stop.is_set():
                break
            async for row in scan.segment(chain.topic, chain.partition, chain.first, chain.last):
                writer.write(_evidence_record(row))
                chain.last = (row.epoch, row.kafka_offset)
                chain.last_hash = bytes(row.row_hash)
                chain.count += 1
                result.records += 1
                if row.schema_fingerprint:
                    fingerprints.add(row.schema_fingerprint)
                if progress is not None:
                    progress(1)
                if stop is not None and stop.is_set():
                    result.interrupted = True
                    break
            if chain.count:
                result.chains.append(chain)
        writer.flush()
    _write_context(directory, exchange, settings, fingerprints)
    manifest = _manifest(directory, exchange, settings, selection, result)
    if sign_key is not None:
        manifest["signer"] = {"name": signer_name, "public_key": _public_b64(sign_key)}
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    (directory / MANIFEST).write_bytes(data)
    if sign_key is not None:
        signature = base64.b64encode(sign_key.sign(data)).decode()
        (directory / SIGNATURE).write_text(signature + "\n", encoding="ascii")
        result.signed = True
    return result


def _write_context(
    directory: Path, exchange: Exchange, settings: Settings, fingerprints: set[str]
) -> None:
    keys = [
        {
            "party": key.party,
            "key_id": key.key_id,
            "public_key": base64.b64encode(key.public_key).decode(),
            "not_before": None if key.not_before is None else key.not_before.isoformat(),
            "not_after": None if key.not_after is None else key.not_after.isoformat(),
        }
        for key in exchange.agreement.trusted_keys()
    ]
    (directory / KEYS).write_bytes(orjson.dumps({"keys": keys}, option=orjson.OPT_INDENT_2))
    shutil.copyfile(settings.agreement, directory / AGREEMENT)
    shutil.copyfile(_STANDALONE, directory / CHECKER)
    released = settings.schemas_dir / "released"
    for fingerprint in sorted(fingerprints):
        for path in released.glob(f"*/{fingerprint}.avsc"):
            target = directory / "schemas" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _manifest(
    directory: Path,
    exchange: Exchange,
    settings: Settings,
    selection: Selection,
    result: ExportResult,
) -> dict[str, Any]:
    files = {
        str(path.relative_to(directory)): _sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name not in {MANIFEST, SIGNATURE}
    }
    agreement = exchange.agreement.exchange
    chosen = {
        "topics": list(selection.topics),
        "partition": selection.partition,
        "from_offset": selection.from_offset,
        "to_offset": selection.to_offset,
        "since": None if selection.since is None else selection.since.isoformat(),
        "until": None if selection.until is None else selection.until.isoformat(),
    }
    return {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "selection": chosen,
        "interrupted": result.interrupted,
        "agreement": {
            "title": agreement.title,
            "version": agreement.version,
            "file": AGREEMENT,
            "source": str(settings.agreement),
        },
        "records": result.records,
        "partitions": [chain.as_json() for chain in result.chains],
        "files": files,
    }


# -- checking ----------------------------------------------------------------------------------


@dataclass
class EvidenceCheck:
    """What checking a bundle found: ``findings`` empty means it checks clean."""

    findings: list[str] = field(default_factory=list)
    records: int = 0
    partitions: int = 0
    valid_signatures: int = 0
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
        elif _sha256(path) != digest:
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
    except (ValueError, EOFError, OSError, zlib.error, KeyError, TypeError) as exc:
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
            row = _row_of(record)
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
            pairs = dict(raw)
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
