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
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import RecordScan
from services.bus import Exchange, Settings
from services.replay._bundle import (
    AGREEMENT,
    CHECKER,
    FORMAT,
    KEYS,
    MANIFEST,
    PARSED_SCHEMA,
    RECORDS,
    SIGNATURE,
    STANDALONE,
    evidence_record,
    sha256_of,
)
from services.replay._errors import EvidenceError, SelectionError
from services.replay._select import Selection


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
        writer = fastavro.write.Writer(stream, PARSED_SCHEMA, codec="deflate")
        for chain in chains:
            if stop is not None and stop.is_set():
                break
            async for row in scan.segment(chain.topic, chain.partition, chain.first, chain.last):
                writer.write(evidence_record(row))
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
    shutil.copyfile(STANDALONE, directory / CHECKER)
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
        str(path.relative_to(directory)): sha256_of(path)
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
