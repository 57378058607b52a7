"""``oix audit …`` as an operator and an auditor run it: real processes, real broker, real store."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import sqlalchemy as sa
from audit_support import (
    incident,
    produce,
    producer_for,
    publish,
    running_consumer,
    sealed_incidents,
    wait_stored,
)

from services.audit import AuditSettings, AuditStore, RecordQuery, migrate
from services.audit._engine import create_engine
from services.bus import Exchange, Settings

OIX = Path(sys.executable).parent / "oix"


async def oix(settings: Settings, url: str, *args: str) -> tuple[int, str, str]:
    """Run ``oix`` with the test's settings; returns exit code, stdout and stderr."""
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": settings.bootstrap or "",
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
        "OIX_DATA_DIR": str(settings.data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_AUDIT_DATABASE_URL": url,
        "OIX_AUDIT_METRICS_PORT": "0",
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
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(statement), params)
    finally:
        await engine.dispose()


async def test_run_refuses_a_store_that_was_never_migrated(
    settings: Settings, sqlite_url: str
) -> None:
    code, _, err = await oix(settings, sqlite_url, "audit", "run")
    assert code == 2
    assert "no schema yet: run `oix audit migrate`" in err


async def test_migrate_is_safe_to_run_again_and_can_print_its_sql(
    settings: Settings, sqlite_url: str
) -> None:
    assert (await oix(settings, sqlite_url, "audit", "migrate"))[1].startswith("migrated")
    code, out, _ = await oix(settings, sqlite_url, "audit", "migrate")
    assert (code, "nothing to do" in out) == (0, True)
    code, out, _ = await oix(settings, sqlite_url, "audit", "migrate", "--sql", "postgresql")
    assert code == 0
    assert "CREATE TABLE audit_record" in out
    assert "BYTEA" in out


async def test_verify_and_query_find_tampering_deletion_and_records(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, topic = incident(exchange)
    sealed = sealed_incidents(exchange, 30, keys=1)
    await publish(settings, topic, sealed, partition=0)
    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        await wait_stored(run.consumer, len(sealed))

    code, out, _ = await oix(settings, sqlite_url, "audit", "verify")
    assert code == 0, out
    assert "OK: 30 records" in out
    assert "30 signatures re-verified" in out
    assert "lag: 0 record(s)" in out

    wanted = sealed[7].message_id
    code, out, _ = await oix(
        settings, sqlite_url, "audit", "query", "--message-id", wanted, "--json"
    )
    assert code == 0
    (line,) = out.splitlines()
    found = orjson.loads(line)
    assert (found["topic"], found["partition"], found["offset"]) == (topic, 0, 7)
    assert found["decoded"]["header"]["message_id"] == wanted
    assert found["signature_status"] == "valid"
    code, out, _ = await oix(
        settings, sqlite_url, "audit", "query", "--topic", topic, "--partition", "0",
        "--from-offset", "10", "--to-offset", "12",
    )  # fmt: skip
    assert code == 0
    assert "3 record(s)" in out

    await _sql(
        sqlite_url,
        "UPDATE audit_record SET originator = 'PL-SG' WHERE kafka_offset = 4 AND topic = :t",
        t=topic,
    )
    await _sql(
        sqlite_url, "DELETE FROM audit_record WHERE kafka_offset = 20 AND topic = :t", t=topic
    )
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify")
    assert code == 1, out
    assert f"altered {topic}[0] epoch 0 offset 4:" in out
    assert f"gap {topic}[0] epoch 0 offset 20:" in out
    assert f"altered {topic}[0] epoch 0 offset 21:" in out
    assert "3 finding(s)" in out


async def test_verify_tells_lag_from_loss(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    _, topic = incident(exchange)
    producer = await producer_for(settings)
    try:
        await produce(producer, topic, sealed_incidents(exchange, 10, keys=1), partition=0)
        async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
            await wait_stored(run.consumer, 10)
        # Records the consumer has not read yet are lag, not loss.
        await produce(producer, topic, sealed_incidents(exchange, 5, keys=1), partition=0)
    finally:
        await producer.stop()
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-signatures")
    assert code == 0, out
    assert "lag: 5 record(s)" in out
    # Rows gone from the end of the store: Kafka holds the audit group's acknowledgement.
    await _sql(
        sqlite_url, "DELETE FROM audit_record WHERE kafka_offset >= 8 AND topic = :t", t=topic
    )
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-signatures")
    assert code == 1, out
    assert f"missing {topic}[0] epoch 0 offset 8..9: acknowledged to Kafka" in out


async def test_records_a_forger_rewrote_consistently_are_caught_by_their_signatures(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    # Someone with write access who rewrites a value and recomputes the whole chain
    # cannot make the originator's signature match.
    from services.audit import GENESIS, chain

    _, topic = incident(exchange)
    await publish(settings, topic, sealed_incidents(exchange, 3, keys=1), partition=0)
    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        await wait_stored(run.consumer, 3)
    await migrate(sqlite_url)
    store = await AuditStore.open(sqlite_url)
    try:
        rows = await store.query(RecordQuery(topic=topic))
    finally:
        await store.close()
    forged = [r._replace(value=(r.value or b"").replace(b"Neman", b"Bug R")) for r in rows]
    rechained = chain(forged, {(topic, 0): GENESIS}, rows[0].stored_at).records
    for row in rechained:
        await _sql(
            sqlite_url,
            "UPDATE audit_record SET value = :v, row_hash = :h, stored_at = :s "
            "WHERE topic = :t AND kafka_offset = :o",
            v=row.value,
            h=row.row_hash,
            s=rows[0].stored_at.replace(tzinfo=None),
            t=topic,
            o=row.kafka_offset,
        )
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-broker")
    assert code == 1, out
    assert out.count("signature") >= 3
    assert "stored as 'valid', verifies now as 'invalid'" in out
    assert "altered" not in out
