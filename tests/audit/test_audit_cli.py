"""``oix audit …`` as an operator and an auditor run it: real processes, real broker, real store."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from datetime import UTC, datetime
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
    wait_for_count,
    wait_stored,
)
from store_contract import append_chained, record

from services.audit import (
    AuditSettings,
    AuditStore,
    BrokerPartition,
    EventKind,
    FindingKind,
    LogEvent,
    RecordQuery,
    Verifier,
    migrate,
)
from services.audit._engine import create_engine
from services.bus import (
    H_KEY_ID,
    H_SIGNATURE,
    Exchange,
    IncidentReport,
    Settings,
    free_port,
    freshen,
    load_examples,
)

OIX = Path(sys.executable).parent / "oix"


async def oix(
    settings: Settings,
    url: str,
    *args: str,
    columns: str | None = "200",
    metrics_port: str = "0",
) -> tuple[int, str, str]:
    """Run ``oix`` with the test's settings; returns exit code, stdout and stderr.

    Its stdout is a pipe; ``columns`` is the width it is told (None: not told).
    """
    inherited = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "OIX_BOOTSTRAP"}}
    env = {
        **inherited,
        "OIX_BOOTSTRAP": settings.bootstrap or "",
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
        "OIX_DATA_DIR": str(settings.data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_AUDIT_DATABASE_URL": url,
        "OIX_AUDIT_METRICS_PORT": metrics_port,
        **({"COLUMNS": columns} if columns else {}),
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
            "UPDATE audit_record SET value = :v, value_digest = :d, row_hash = :h, stored_at = :s "
            "WHERE topic = :t AND kafka_offset = :o",
            v=row.value,
            d=row.value_digest,
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


def _lv_incident(exchange: Exchange) -> tuple[IncidentReport, str]:
    report = next(
        r
        for r in freshen([e.report for e in load_examples()])
        if isinstance(r, IncidentReport) and r.header.originator == "LV-VRS"
    )
    header = report.header
    return report, exchange.router.topics_for(
        report.report_type, header.originator, header.releasable_to
    )[0]


async def test_verify_tells_integrity_from_trust_and_names_a_message_id_two_parties_used(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    # Issue 8: verify said OK (exit 0) over forged and unsigned records; LT-VSAT could
    # publish under LV-VRS's message id and the store held two messages under one id.
    lv_report, lv_topic = _lv_incident(exchange)
    lv = exchange.sealer("LV-VRS").seal(lv_report)
    lt_report, lt_topic = incident(exchange)
    # A partner signs its own report with LV's message id: a valid LT-VSAT signature.
    reuse = exchange.sealer("LT-VSAT").seal(
        lt_report.model_copy(
            update={
                "header": lt_report.header.model_copy(
                    update={"message_id": lv_report.header.message_id}
                )
            }
        )
    )
    [genuine, unsigned, forged] = sealed_incidents(exchange, 3, keys=1)
    unsigned_headers = [(k, v) for k, v in unsigned.headers if k not in {H_SIGNATURE, H_KEY_ID}]
    producer = await producer_for(settings)
    try:
        lv_at = await producer.send_and_wait(lv_topic, lv.value, key=lv.key, headers=lv.headers)
        sent = [
            await producer.send_and_wait(lt_topic, value, key=key, headers=headers, partition=0)
            for value, key, headers in (
                (reuse.value, reuse.key, reuse.headers),
                (genuine.value, genuine.key, genuine.headers),
                (unsigned.value, unsigned.key, unsigned_headers),
                (forged.value.replace(b"Neman", b"Bug R"), forged.key, forged.headers),
            )
        ]
    finally:
        await producer.stop()
    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        # Five records, and the quarantine's copies of the two untrusted ones.
        await wait_for_count(run.consumer.store, 7)

    code, out, _ = await oix(settings, sqlite_url, "audit", "verify")
    assert code == 4, out
    assert "integrity: ok" in out
    assert "trust: 3 finding(s): 2 record(s) prove no originator (1 invalid, 1 unsigned)" in out
    assert "1 message id(s) stored under two proven originators" in out
    assert "2 of 2 copied to the quarantine topic" in out
    untrusted = f"untrusted {lt_topic}[0] epoch 0 offset"
    assert f"{untrusted} 2: 1 record(s) that prove no originator, unsigned: no signature" in out
    assert f"{untrusted} 3: 1 record(s) that prove no originator, invalid: the signature" in out
    reused = str(lv_report.header.message_id)
    assert (
        f"message id {reused} is stored under 2 proven originators, two different messages "
        "under one id" in out
    )
    assert f"LV-VRS at {lv_topic}[{lv_at.partition}]@{lv_at.offset} (epoch 0)" in out
    assert f"LT-VSAT at {lt_topic}[0]@{sent[0].offset} (epoch 0)" in out

    code, out, _ = await oix(settings, sqlite_url, "audit", "query", "--reused", "--json")
    assert code == 0
    shown = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["originator"], r["message_id"], r["originator_proven"]) for r in shown] == [
        ("LV-VRS", reused, True),
        ("LT-VSAT", reused, True),
    ]

    # Piped to a file: every column whole, and a note when the limit cut the result.
    code, out, err = await oix(
        settings, sqlite_url, "audit", "query", "--topic", lt_topic, "--limit", "2", columns=None
    )
    assert code == 0
    assert genuine.message_id in out
    assert reused in out
    assert "2 record(s)" in out
    assert "note: only the first 2 matching records are shown; more match" in err
    code, _, err = await oix(
        settings, sqlite_url, "audit", "query", "--topic", lt_topic, "--limit", "4", columns=None
    )
    assert (code, "note:" in err) == (0, False)

    await _sql(
        sqlite_url, "DELETE FROM audit_record WHERE kafka_offset = 1 AND topic = :t", t=lt_topic
    )
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-broker")
    assert code == 5, out
    assert "integrity: 2 finding(s)" in out


async def test_repeated_broker_anomalies_are_one_finding_per_partition_and_epoch(
    settings: Settings, sqlite_url: str
) -> None:
    # After a restart under load the broker served dozens of offsets twice per partition:
    # verify printed a line for each.
    topic = f"{settings.topic_prefix}.LT-VSAT.incidents"
    at = datetime.now(UTC)
    repeated = [
        LogEvent(topic, 2, 1, EventKind.OFFSET_REPEATED, offset, offset, f"kept {offset:02x}", at)
        for offset in range(3, 63, 2)
    ]
    reset = LogEvent(topic, 2, 1, EventKind.LOG_RESET, None, 9, "anchor record differs", at)
    await migrate(sqlite_url)
    store = await AuditStore.open(sqlite_url)
    try:
        await store.append([], [reset, *repeated], {})
    finally:
        await store.close()

    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-broker")
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.startswith("repeated_offset")]
    noticed = at.isoformat(timespec="seconds")
    assert lines == [
        (
            f"repeated_offset {topic}[2] epoch 1 offset 3..61: the broker served 30 offsets more "
            f"than once, noticed {noticed} to {noticed}; the first record at each offset is "
            "stored, the other described (--details)"
        ),
    ]
    assert out.count("log_reset") == 1
    code, out, _ = await oix(settings, sqlite_url, "audit", "verify", "--no-broker", "--details")
    assert code == 1
    assert out.count("more than once: kept") == 30
    assert f"    {topic}[2] epoch 1: the broker served offset 61 more than once: kept 3d" in out


async def test_a_store_past_the_broker_is_worded_for_what_is_known(sqlite_url: str) -> None:
    # The broker may have gone backwards, or served records past its high watermark:
    # verify cannot tell which, and must not claim the first.
    topic = "oix.LT-VSAT.incidents"
    await migrate(sqlite_url)
    store = await AuditStore.open(sqlite_url)
    try:
        await append_chained(store, [record(offset) for offset in range(6)])
        broker = {(topic, 0): BrokerPartition(topic, 0, 0, 4, None)}
        report = await Verifier(store, None).run(broker)
    finally:
        await store.close()
    [finding] = report.findings
    assert (finding.kind, finding.first_offset, finding.last_offset) == (
        FindingKind.AHEAD_OF_BROKER,
        4,
        5,
    )
    assert "went backwards and no audit consumer has noticed yet" not in finding.detail
    assert finding.detail.startswith(
        "the store holds offsets up to 5, read from this partition, but the broker's high "
        "watermark is 4 now: either its log went backwards"
    )
    assert "or it served records past its high watermark" in finding.detail


def _error_line(stderr: str) -> str:
    """The one error line of a failed command: no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


async def test_a_broker_that_cannot_be_reached_is_one_line_not_a_traceback(
    settings: Settings, sqlite_url: str
) -> None:
    nowhere = settings.model_copy(update={"bootstrap": f"127.0.0.1:{free_port()}"})
    for command in (("audit", "run", "--migrate"), ("audit", "verify")):
        code, _, err = await oix(nowhere, sqlite_url, *command)
        assert code == 2, err  # not 1: verify's exit 1 means integrity findings
        assert f"cannot reach the broker at {nowhere.bootstrap}" in _error_line(err)
        assert "Unclosed AIOKafkaConsumer" not in err


async def test_a_taken_metrics_port_is_one_line_naming_the_variable(
    settings: Settings, sqlite_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await oix(
            settings, sqlite_url, "audit", "run", "--migrate", metrics_port=str(port)
        )
    assert code == 2
    line = _error_line(err)
    assert f"OIX_AUDIT_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in line
    assert "set OIX_AUDIT_METRICS_PORT to a free port, or 0 for any free port" in line
