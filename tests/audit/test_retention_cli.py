"""``oix audit purge|erase|hold|…`` as an operator runs them (real processes, real SQLite), and
the purge schedule of ``oix audit run``.

The records are stored with Kafka timestamps of March 2026 and 30 days of retention: past
it whatever today's date, so the commands run on their real clock.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from polling import eventually
from store_contract import T0, append_chained, record

from services.audit import AuditRecord, AuditStore, migrate
from services.audit._record import DAY_MS
from services.audit._retention import run_purge_schedule
from services.bus import Settings

pytestmark = pytest.mark.timeout(120)

OIX = Path(sys.executable).parent / "oix"
TOPIC = "oix.LT-VSAT.incidents"


async def oix(settings: Settings, url: str, *args: str) -> tuple[int, str, str]:
    """Run ``oix`` with the test's settings and store; exit code, stdout, stderr."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"COLUMNS", "OIX_BOOTSTRAP"}},
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
        "OIX_DATA_DIR": str(settings.data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_AUDIT_DATABASE_URL": url,
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        str(OIX),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _rows() -> list[AuditRecord]:
    """Offsets 0-2 past retention (30 days from March 2026), 3 kept for 100 years."""
    rows = []
    for offset, days in ((0, 30), (1, 30), (2, 30), (3, 36_500)):
        base = record(offset, at=T0)
        rows.append(base._replace(retain_until=base.kafka_timestamp + days * DAY_MS))
    return rows


async def _stored(url: str) -> list[AuditRecord]:
    store = await AuditStore.open(url)
    try:
        return await store.scan(TOPIC, 0, None, 100)
    finally:
        await store.close()


async def _store_sample(url: str) -> list[AuditRecord]:
    await migrate(url)
    store = await AuditStore.open(url)
    try:
        return await append_chained(store, _rows())
    finally:
        await store.close()


async def test_purge_dry_run_then_purge_then_verify_and_query(
    settings: Settings, sqlite_url: str
) -> None:
    stored = await _store_sample(sqlite_url)
    code, out, err = await oix(settings, sqlite_url, "audit", "purge", "--dry-run")
    assert code == 0, err
    assert f"{TOPIC}[0] offset 0..2: 3 record(s)" in out
    assert "would purge 3 record(s); nothing was changed (dry run)" in out
    assert await _stored(sqlite_url) == stored

    code, out, err = await oix(settings, sqlite_url, "audit", "purge", "--by", "ops-1")
    assert code == 0, err
    assert "purged 3 record(s)" in out
    after = await _stored(sqlite_url)
    assert [r.value is None for r in after] == [True, True, True, False]

    code, out, err = await oix(
        settings, sqlite_url, "audit", "verify", "--no-broker", "--no-signatures", "--details"
    )
    assert code == 0, out + err
    assert "retention: 3 of 4 record(s) purged" in out
    assert "retention log: 1 purge" in out
    assert f"purge by ops-1 (oix audit purge): 3 record(s) at {TOPIC}[0] offset 0..2" in out

    code, out, err = await oix(settings, sqlite_url, "audit", "query", "--topic", TOPIC, "--json")
    assert code == 0, err
    assert "note: 3 of these records are purged" in err
    shown = [orjson.loads(line) for line in out.splitlines()]
    assert [s["purged_at"] is not None for s in shown] == [True, True, True, False]
    assert shown[0]["value"] is None
    assert shown[0]["value_digest"] == after[0].value_digest.hex()  # type: ignore[union-attr]
    assert shown[0]["message_id"] == stored[0].message_id

    code, out, _ = await oix(settings, sqlite_url, "audit", "retention-log")
    assert code == 0
    assert "1 retention event(s)" in out


async def test_hold_release_and_erase_from_the_command_line(
    settings: Settings, sqlite_url: str
) -> None:
    stored = await _store_sample(sqlite_url)
    held = stored[0].message_id
    assert held is not None
    code, out, err = await oix(
        settings, sqlite_url, "audit", "hold", "--message-id", held, "--reason", "case 9"
    )
    assert code == 0, err
    hold_id = out.split()[1]
    code, out, _ = await oix(settings, sqlite_url, "audit", "holds")
    assert f"{hold_id}  message id {held}" in out
    code, out, _ = await oix(settings, sqlite_url, "audit", "purge")
    assert "purged 2 record(s)" in out
    assert "1 record(s) past retention kept by a legal hold" in out
    code, out, err = await oix(
        settings, sqlite_url, "audit", "release-hold", hold_id, "--reason", "closed"
    )
    assert code == 0, err
    code, out, _ = await oix(settings, sqlite_url, "audit", "purge")
    assert "purged 1 record(s)" in out

    kept = stored[3].message_id
    assert kept is not None
    erase = ["audit", "erase", kept, "--request-ref", "REQ-7", "--reason", "wrong"]
    code, _, err = await oix(settings, sqlite_url, *erase, "--requested-by", "LV-VRS")
    assert code == 2
    assert "LV-VRS is not its proven originator" in err
    assert (await _stored(sqlite_url))[3].value is not None
    code, out, err = await oix(settings, sqlite_url, *erase, "--requested-by", "LT-VSAT")
    assert code == 0, err
    assert "erased 1 record(s)" in out
    assert (await _stored(sqlite_url))[3].value is None
    code, out, _ = await oix(settings, sqlite_url, "audit", "retention-log")
    kinds = [line.split()[3] for line in out.splitlines()[:-1]]
    assert kinds == ["hold", "purge", "release", "purge", "erasure"]


async def test_the_schedule_purges_until_stopped(sqlite_url: str) -> None:
    await _store_sample(sqlite_url)
    store = await AuditStore.open(sqlite_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_purge_schedule(store, 730, 0.05, stop))
    try:

        async def purged() -> bool:
            rows = await store.scan(TOPIC, 0, None, 100)
            return [r.purged_at is not None for r in rows] == [True, True, True, False]

        await eventually(purged, "the first round purged offsets 0-2", timeout=30)
        # Later records past retention are taken by a later round.
        later = record(4, at=T0 - timedelta(days=1))
        await append_chained(store, [later._replace(retain_until=later.kafka_timestamp)])

        async def taken() -> bool:
            rows = await store.scan(TOPIC, 0, None, 100)
            return rows[-1].purged_at is not None

        await eventually(taken, "a later round purged offset 4", timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await store.close()
    assert task.done()
    assert task.exception() is None
