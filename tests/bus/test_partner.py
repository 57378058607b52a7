"""The partner kit, run as a partner runs it, against OIX's gateway and audit store.

``examples/partner/partner.py`` uses only confluent-kafka, the avro package and
cryptography; here it runs as a process of its own on the embedded broker.
OIX runs as operators run it: ``oix gateway run`` and ``oix audit run``, and
``oix audit query`` reads what the store holds. Both directions are checked,
and a schema version OIX has not released yet.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wire_support import REPO

from services.audit import AuditStore, RecordQuery
from services.bus import Settings, free_port, freshen, parse_report

PARTNER = REPO / "examples" / "partner" / "partner.py"
PYTHON = sys.executable
OIX = Path(sys.executable).parent / "oix"
KEYS = REPO / "deploy" / "keys"


def _env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OIX_BOOTSTRAP": settings.bootstrap or "",
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_AGREEMENT": str(REPO / "deploy" / "agreement.example.yaml"),
        "OIX_KEYS_DIR": str(KEYS),
        "OIX_SCHEMAS_DIR": str(REPO / "schemas"),
        "OIX_DATA_DIR": str(data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_AUDIT_DATABASE_URL": f"sqlite:///{data_dir / 'audit.db'}",
        "OIX_AUDIT_OPEN_PROCESSES": "0",
        "OIX_AUDIT_SESSION_TIMEOUT_MS": "2000",
        "OIX_AUDIT_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_AUDIT_REBALANCE_TIMEOUT_MS": "2000",
        "OIX_AUDIT_METADATA_MAX_AGE_MS": "500",
        "OIX_AUDIT_FETCH_MAX_WAIT_MS": "20",
        "OIX_AUDIT_BATCH_MAX_MS": "20",
        "COLUMNS": "250",
        **extra,
    }


async def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def oix(env: dict[str, str], *args: str) -> str:
    code, out, err = await _run(env, str(OIX), *args)
    assert code == 0, f"oix {' '.join(args)}: {err}"
    return out


async def partner(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Run the partner program; its JSON lines."""
    code, out, err = await _run(env, PYTHON, str(PARTNER), *args)
    assert code == 0, f"partner {' '.join(args)}:\n{out}\n{err}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def service(env: dict[str, str], ready_url: str, *args: str) -> AsyncIterator[None]:
    """``oix ARGS`` as a long-running process, until the block ends (then SIGTERM)."""
    log = (Path(env["OIX_DATA_DIR"]) / f"{args[0]}.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        str(OIX), *args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
    )
    log.close()
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert process.returncode is None, f"oix {args[0]} exited: see its log"
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(ready_url)).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"oix {args[0]} did not get ready"
                await asyncio.sleep(0.1)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)


@contextlib.asynccontextmanager
async def audit_service(env: dict[str, str]) -> AsyncIterator[str]:
    """``oix audit run``; yields its metrics URL."""
    port = free_port()
    env = {**env, "OIX_AUDIT_METRICS_PORT": str(port)}
    async with service(env, f"http://127.0.0.1:{port}/healthz", "audit", "run", "--migrate"):
        yield f"http://127.0.0.1:{port}/metrics"


async def stored(
    env: dict[str, str], *filters: str, topic: str, count: int = 1
) -> list[dict[str, Any]]:
    """``oix audit query --json --topic TOPIC FILTERS``, once ``topic`` has ``count`` records."""
    store = await AuditStore.open(f"sqlite+aiosqlite:///{Path(env['OIX_DATA_DIR']) / 'audit.db'}")
    try:
        deadline = time.monotonic() + 30
        while len(await store.query(RecordQuery(topic=topic))) < count:
            assert time.monotonic() < deadline, f"not {count} records stored from {topic}"
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    out = await oix(env, "audit", "query", "--json", "--topic", topic, *filters)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _example(name: str) -> dict[str, Any]:
    path = next((REPO / "deploy" / "examples").glob(f"{name}*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _pl_incident(tmp_path: Path) -> Path:
    """PL-SG's own incident report, as its system writes it (no OIX gateway fills it)."""
    report = _example("06")
    header = report["header"]
    for name in ("message_id", "created_at"):
        del header[name]
    header["originator"] = "PL-SG"
    header["originating_unit"] = "Podlaski border guard division"
    header["releasable_to"] = ["LT-VSAT", "LV-VRS", "EE-PPA", "UA-DPSU"]
    report["location"] = {"border_section": "PL-BY-PODLASKIE", "description": "Bug river"}
    report["narrative"] = "Two persons swam across the Bug and asked for asylum."
    path = tmp_path / "pl-incident.json"
    path.write_text(json.dumps(report))
    return path


def _partner_args(env: dict[str, str], asyncapi: Path, command: str, agency: str) -> list[str]:
    return [
        command,
        "--bootstrap",
        env["OIX_BOOTSTRAP"],
        "--asyncapi",
        str(asyncapi),
        "--schemas",
        str(REPO / "schemas" / "released"),
        "--agency",
        agency,
    ]


async def _asyncapi(env: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "exchange.asyncapi.json"
    await oix(env, "agreement", "asyncapi", "--output", str(path))
    return path


def test_the_partner_imports_nothing_but_the_standard_libraries() -> None:
    tree = ast.parse(PARTNER.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"avro", "confluent_kafka", "cryptography"}


async def test_the_partner_and_oix_read_each_other(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings, tmp_path)
    asyncapi = await _asyncapi(env, tmp_path)
    token = (await oix(env, "gateway", "token", "create", "LT-VSAT", "--name", "t")).strip()
    gateway_port = free_port()
    # Moved to the present: the gateway refuses times more than a year old.
    fresh = freshen([parse_report(_example("06"))])[0]
    report = {**fresh.model_dump(mode="json"), "type": fresh.report_type}
    for name in ("message_id", "event_id", "created_at", "originator"):
        del report["header"][name]  # the gateway fills them
    async with (
        audit_service(env),
        service(
            env,
            f"http://127.0.0.1:{gateway_port}/readyz",
            "gateway",
            "run",
            "--agency",
            "LT-VSAT",
            "--port",
            str(gateway_port),
        ),
    ):
        # Partner -> OIX: PL-SG publishes with its own key; the audit store holds it, valid.
        args = _partner_args(env, asyncapi, "publish", "PL-SG")
        key = ["--key", str(KEYS / "PL-SG-2026-1.pem"), "--key-id", "PL-SG-2026-1"]
        [written] = await partner(env, *args, *key, str(_pl_incident(tmp_path)))
        assert written["topic"] == f"{settings.topic_prefix}.PL-SG.incidents"
        assert written["error"] is None
        [row] = await stored(env, "--originator", "PL-SG", topic=written["topic"])

        # OIX -> partner: LT-VSAT's gateway publishes; PL-SG reads and verifies it.
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"http://127.0.0.1:{gateway_port}/v1/reports",
                json=report,
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 201, answer.text
        accepted = answer.json()
        read = await partner(env, *_partner_args(env, asyncapi, "read", "PL-SG"), "--count", "1")

    assert row["signature_status"] == "valid", row["signature_detail"]
    assert row["originator_proven"] is True
    assert row["message_id"] == written["message_id"]
    header = row["decoded"]["header"]
    assert (header["originator"], header["event_id"]) == ("PL-SG", written["message_id"])
    assert row["decoded"]["narrative"] == "Two persons swam across the Bug and asked for asylum."
    assert base64.b64decode(row["key"]).decode() == written["message_id"]

    [seen] = read
    assert seen["status"] == "valid", seen["reason"]
    assert (seen["topic"], seen["offset"]) == (accepted["topic"], accepted["offset"])
    got = seen["report"]
    assert got["header"]["message_id"] == accepted["message_id"]
    assert got["header"]["event_id"] == accepted["message_id"]  # filled by the gateway
    assert got["header"]["originator"] == "LT-VSAT"
    assert got["header"]["handling"] == ["PURPOSE_ONLY", "NO_COURT"]
    assert got["narrative"] == report["narrative"]
    assert got["detected_by"] == "PATROL"
    assert seen["key"] == accepted["message_id"]


def _proposed_version(schemas: Path, tmp_path: Path) -> Path:
    """A compatible IncidentReport version a partner proposes; the same change in ``schemas``."""
    weather = {"name": "weather", "type": ["null", "string"], "default": None}
    current = max(
        (REPO / "schemas" / "released" / "IncidentReport").glob("*.avsc"),
        key=lambda p: len(p.read_text()),
    )
    proposed = json.loads(current.read_text())
    proposed["fields"].append(weather)
    path = tmp_path / "IncidentReport-proposed.avsc"
    path.write_text(json.dumps(proposed, indent=2))
    source = schemas / "reports" / "IncidentReport.avsc"
    mine = json.loads(source.read_text())
    mine["fields"].append(weather)
    source.write_text(json.dumps(mine, indent=2))
    return path


@pytest.mark.slow
async def test_a_version_oix_has_not_released_is_kept_raw_then_decoded_after_release(
    settings: Settings, tmp_path: Path
) -> None:
    env = _env(settings, tmp_path)
    asyncapi = await _asyncapi(env, tmp_path)
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    proposed = _proposed_version(schemas, tmp_path)
    report = json.loads(_pl_incident(tmp_path).read_text())
    report["weather"] = "fog over the river"
    report_file = tmp_path / "with-weather.json"
    report_file.write_text(json.dumps(report))
    args = [
        *_partner_args(env, asyncapi, "publish", "PL-SG"),
        "--key",
        str(KEYS / "PL-SG-2026-1.pem"),
        "--key-id",
        "PL-SG-2026-1",
        "--writer-schema",
        str(proposed),
        str(report_file),
    ]
    async with audit_service(env) as metrics_url:
        [written] = await partner(env, *args)
        topic = written["topic"]
        [row] = await stored(env, topic=topic)
        [copy] = await stored(env, topic=f"{settings.topic_prefix}.quarantine")
        table = await oix(env, "audit", "query", "--topic", topic)
        proven = await oix(env, "audit", "query", "--json", "--originator", "PL-SG")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(metrics_url)).text
    unknown = row["schema_fingerprint"]
    assert row["unknown_schema"] is True
    assert row["signature_status"] == "unverified_origin"
    assert row["decoded"] is None
    assert row["value"] is not None  # stored raw
    assert f"unknown schema {unknown}" in table
    assert "PL-SG (unproven)" in table
    assert proven.strip() == ""  # its originator is a claim nothing proves yet
    assert "oix_audit_unknown_schema_records_total 1.0" in metrics
    headers = {h["name"]: h.get("text") for h in copy["headers"]}
    assert headers["oix-quarantine-reason"] == "unknown_schema"
    assert headers["oix-quarantine-offset"] == str(written["offset"])
    assert copy["value"] == row["value"]

    # The version is released, the service reloaded with it: what was stored decodes.
    released = await oix(env, "schemas", "release", "--schemas-dir", str(schemas))
    assert f"released IncidentReport {unknown}" in released
    reloaded = {**env, "OIX_SCHEMAS_DIR": str(schemas)}
    [again] = await stored(reloaded, topic=topic)
    assert again["now"]["signature_status"] == "valid"
    assert again["now"]["decoded"]["weather"] == "fog over the river"
    assert again["now"]["originator"] == "PL-SG"
    assert "decodes now: valid" in await oix(reloaded, "audit", "query", "--topic", topic)
    verified = await oix(reloaded, "audit", "verify", "--no-broker")
    assert "OK" in verified
    async with audit_service(reloaded):
        [later] = await partner(reloaded, *args)
        [fresh] = await stored(
            reloaded,
            "--from-offset",
            str(later["offset"]),
            "--partition",
            str(later["partition"]),
            topic=topic,
            count=2,
        )
    assert fresh["signature_status"] == "valid", fresh["signature_detail"]
    assert fresh["decoded"]["weather"] == "fog over the river"
