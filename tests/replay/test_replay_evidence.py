"""Evidence bundles: a bundle checks clean; one changed byte, one removed or two reordered
messages are each found by `check_evidence` and by the standalone checker (standard tools)."""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from polling import eventually
from replay_support import audit_running, produce, sealed

from services.audit import AuditStore, RecordScan, Retention
from services.bus import Exchange, Settings
from services.replay import (
    Selection,
    SelectionError,
    check_evidence,
    export_evidence,
)

pytestmark = pytest.mark.timeout(120)

Records = list[dict[str, Any]]


@pytest.fixture
async def bundle(settings: Settings, exchange: Exchange, store_url: str, tmp_path: Path) -> Path:
    """An unsigned bundle of two partitions' chains, from a store the audit consumer filled
    (SQLite, then PostgreSQL)."""
    lt = exchange.naming.feed("LT-VSAT", "incidents")
    ee = exchange.naming.feed("EE-PPA", "incidents")
    await produce(settings, lt, sealed(exchange, "LT-VSAT", 8))
    await produce(settings, ee, sealed(exchange, "EE-PPA", 3))
    async with audit_running(settings, exchange, store_url) as consumer:
        await eventually(lambda: consumer.stored >= 11, "11 records stored", timeout=60)
    scan = await RecordScan.open(store_url)
    try:
        result = await export_evidence(
            scan, exchange, settings, Selection(topics=(lt, ee)), tmp_path / "bundle"
        )
    finally:
        await scan.close()
    assert result.records == 11
    assert len(result.chains) == 2
    return result.directory


def standalone(bundle: Path) -> subprocess.CompletedProcess[str]:
    """The bundle's own copy of the standard-tools checker, run as an inspector would."""
    return subprocess.run(
        [sys.executable, "-I", str(bundle / "check_evidence.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=bundle.parent,
        check=False,
    )


def test_the_standalone_checker_imports_no_oix_code() -> None:
    source = (Path(__file__).parents[2] / "services/replay/standalone_check.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"avro", "cryptography", "__future__"}


async def test_a_bundle_checks_clean_both_ways(bundle: Path) -> None:
    found = check_evidence(bundle)
    assert found.findings == []
    assert found.records == 11
    assert found.valid_signatures == 11
    done = standalone(bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean" in done.stdout
    assert "11 verified" in done.stdout


def rewrite(bundle: Path, change: Callable[[Records], Records], *, manifest: bool) -> None:
    """Rewrite records.avro through ``change``; with ``manifest``, fix its digest there too."""
    path = bundle / "records.avro"
    with path.open("rb") as stream:
        reader = fastavro.reader(stream)
        schema = reader.writer_schema
        records = [dict(r) for r in reader if isinstance(r, dict)]
    with path.open("wb") as stream:
        fastavro.writer(stream, schema, change(records), codec="deflate")
    if manifest:
        data = json.loads((bundle / "manifest.json").read_text())
        data["files"]["records.avro"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True))


def flip_a_byte(records: Records) -> Records:
    value = bytearray(records[3]["value"])
    value[-1] ^= 0x01
    records[3]["value"] = bytes(value)
    return records


def remove_one(records: Records) -> Records:
    return records[:4] + records[5:]


def swap_two(records: Records) -> Records:
    # Two records of one partition (records 3..10 are LT-VSAT's): the order between
    # partitions means nothing in Kafka, within one it is the order of the exchange.
    assert records[4]["topic"] == records[5]["topic"]
    records[4], records[5] = records[5], records[4]
    return records


@pytest.mark.parametrize("change", [flip_a_byte, remove_one, swap_two])
@pytest.mark.parametrize("manifest", [False, True], ids=["digest-stale", "digest-forged"])
async def test_tampering_is_found_by_both_checkers(
    bundle: Path, tmp_path: Path, change: Callable[[Records], Records], manifest: bool
) -> None:
    assert check_evidence(bundle).clean
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    rewrite(tampered, change, manifest=manifest)
    found = check_evidence(tampered)
    assert not found.clean
    if manifest:
        # The digest was forged to match: the chain itself must give the change away.
        assert any("chain" in f or "out of order" in f for f in found.findings), found.findings
        assert any("offset" in f for f in found.findings)
    else:
        assert any("records.avro" in f for f in found.findings), found.findings
    done = standalone(tampered)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FINDING" in done.stdout


async def test_a_signed_manifest_is_verified_and_a_changed_one_refused(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 3))
    async with audit_running(settings, exchange, sqlite_url) as consumer:
        await eventually(lambda: consumer.stored >= 3, "3 records stored", timeout=60)
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    scan = await RecordScan.open(sqlite_url)
    try:
        with pytest.raises(SelectionError, match="--originator"):
            await export_evidence(
                scan, exchange, settings, Selection(originator="LT-VSAT"), tmp_path / "no"
            )
        result = await export_evidence(
            scan,
            exchange,
            settings,
            Selection(topics=(topic,)),
            tmp_path / "signed",
            sign_key=key,
            signer_name="inspector test",
        )
    finally:
        await scan.close()
    assert result.signed
    found = check_evidence(result.directory, expected_signer=public.decode())
    assert found.clean, found.findings
    assert found.signed_by is not None
    assert standalone(result.directory).returncode == 0
    other = base64.b64encode(bytes(32)).decode()
    assert not check_evidence(result.directory, expected_signer=other).clean
    manifest = result.directory / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"records": 3', '"records": 4'))
    assert any("signature" in f for f in check_evidence(result.directory).findings)
    assert standalone(result.directory).returncode == 1


async def test_an_interrupted_export_covers_what_it_wrote_and_checks_clean(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 9))
    async with audit_running(settings, exchange, sqlite_url) as consumer:
        await eventually(lambda: consumer.stored >= 9, "9 records stored", timeout=60)
    stop = asyncio.Event()
    written = 0

    def count(n: int) -> None:
        nonlocal written
        written += n
        if written == 4:
            stop.set()  # as Ctrl-C does

    scan = await RecordScan.open(sqlite_url)
    try:
        result = await export_evidence(
            scan,
            exchange,
            settings,
            Selection(topics=(topic,)),
            tmp_path / "cut",
            stop=stop,
            progress=count,
        )
    finally:
        await scan.close()
    assert result.interrupted
    assert result.records == 4
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    assert manifest["partitions"][0]["last"]["offset"] == 3
    assert check_evidence(result.directory).clean
    assert standalone(result.directory).returncode == 0


async def test_a_damaged_file_is_a_finding_not_a_crash(bundle: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    path = damaged / "records.avro"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(8)  # inside a compressed block
    path.write_bytes(bytes(data))
    found = check_evidence(damaged)
    assert any("records.avro" in f for f in found.findings), found.findings
    done = standalone(damaged)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


async def test_a_bundle_of_purged_records_checks_clean_and_their_content_cannot_return(
    settings: Settings, exchange: Exchange, store_url: str, tmp_path: Path
) -> None:
    """Retention purged the content: the chain still covers every record through its
    digests, both checkers say so; a value put back that is not the original is found."""
    lt = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, lt, sealed(exchange, "LT-VSAT", 6))
    async with audit_running(settings, exchange, store_url) as consumer:
        await eventually(lambda: consumer.stored >= 6, "6 records stored", timeout=60)
    store = await AuditStore.open(store_url)
    try:
        later = datetime.now(UTC) + timedelta(days=10 * 365)
        assert (await Retention(store, clock=lambda: later).purge(730, actor="test")).count == 6
    finally:
        await store.close()
    scan = await RecordScan.open(store_url)
    try:
        result = await export_evidence(
            scan, exchange, settings, Selection(topics=(lt,)), tmp_path / "purged"
        )
    finally:
        await scan.close()
    found = check_evidence(result.directory)
    assert (found.findings, found.records, found.purged) == ([], 6, 6)
    done = standalone(result.directory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 purged by retention" in done.stdout

    def put_back(records: Records) -> Records:
        records[2]["value"] = b"not what was signed"
        return records

    rewrite(result.directory, put_back, manifest=True)
    found = check_evidence(result.directory)
    assert [f for f in found.findings if "content differs" in f] != [], found
    done = standalone(result.directory)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "content differs" in done.stdout


def with_key_window(settings: Settings, directory: Path, **window: str) -> Settings:
    """The settings with an agreement giving LT-VSAT's key the validity ``window``."""
    agreement = yaml.safe_load(Path(settings.agreement).read_text())
    agreement["parties"]["LT-VSAT"]["keys"][0].update(window)
    path = directory / "agreement.yaml"
    path.write_text(yaml.safe_dump(agreement, sort_keys=False))
    return settings.model_copy(update={"agreement": path})


async def test_a_message_signed_outside_its_keys_window_is_found_by_both_checkers(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    """Stored as valid while the key had no window; the agreement in force at the export
    ends the key's window before the records' signed creation time (a key retired, or
    found compromised, later): both checkers report every such record."""
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 3))
    async with audit_running(settings, exchange, sqlite_url) as consumer:
        await eventually(lambda: consumer.stored >= 3, "3 records stored", timeout=60)
    bundles = {}
    for name, window in (
        ("retired", {"not_after": "2026-01-01T00:00:00Z"}),
        ("not-yet", {"not_before": "2099-01-01T00:00:00Z"}),
        ("in-force", {"not_before": "2026-01-01T00:00:00Z", "not_after": "2099-01-01T00:00:00Z"}),
    ):
        (tmp_path / name).mkdir()
        changed = with_key_window(settings, tmp_path / name, **window)
        scan = await RecordScan.open(sqlite_url)
        try:
            result = await export_evidence(
                scan,
                Exchange.from_settings(changed),
                changed,
                Selection(topics=(topic,)),
                tmp_path / name / "bundle",
            )
        finally:
            await scan.close()
        keys = json.loads((result.directory / "keys.json").read_text())["keys"]
        assert any(k["not_after"] or k["not_before"] for k in keys)  # the window is recorded
        bundles[name] = result.directory

    clean = check_evidence(bundles["in-force"])
    assert (clean.findings, clean.valid_signatures) == ([], 3)
    done = standalone(bundles["in-force"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 verified" in done.stdout

    for name, word in (("retired", "not_after"), ("not-yet", "not_before")):
        found = check_evidence(bundles[name])
        assert found.valid_signatures == 0
        assert len(found.findings) == 3, found.findings
        assert all("recorded as valid" in f and "valid" in f for f in found.findings)
        assert all("offset" in f for f in found.findings)
        done = standalone(bundles[name])
        assert done.returncode == 1, done.stdout + done.stderr
        findings = [line for line in done.stdout.splitlines() if line.startswith("FINDING")]
        assert len(findings) == 3, done.stdout
        assert all("its key was not valid then" in f and word in f for f in findings)
        assert "0 verified" in done.stdout
