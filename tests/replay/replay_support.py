"""Helpers of the replay tests: signed reports with known timestamps, produced to real topics."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastavro import schemaless_writer

from services.audit import AuditConsumer, AuditSettings, AuditStore, migrate
from services.bus import (
    H_SCHEMA,
    H_SIGNATURE,
    Exchange,
    IncidentReport,
    Report,
    SealedReport,
    Settings,
    freshen,
    load_examples,
    start_producer,
)

BASE_MS = 1_780_000_000_000
"""Timestamp of the first produced record; record i is stamped BASE_MS + i seconds."""


def report_of(originator: str) -> Report:
    """A fresh example incident report, as if ``originator`` wrote it."""
    reports = freshen([e.report for e in load_examples()])
    report = next(
        r for r in reports if isinstance(r, IncidentReport) and r.header.originator == "LT-VSAT"
    )
    header = report.header.model_copy(update={"originator": originator})
    return report.model_copy(update={"header": header})


def sealed(exchange: Exchange, originator: str, count: int) -> list[SealedReport]:
    """``count`` signed incident reports of ``originator``, distinct message and event ids."""
    report = report_of(originator)
    sealer = exchange.sealer(originator)
    out = []
    for i in range(count):
        # Each its own event, as first reports are.
        header = report.header.model_copy(
            update={"message_id": uuid.uuid4(), "event_id": uuid.uuid4()}
        )
        out.append(sealer.seal(report.model_copy(update={"header": header}), key=f"s-{i % 4}"))
    return out


def sealed_with_older_schema(exchange: Exchange) -> SealedReport:
    """An LT-VSAT incident written with IncidentReport's first released version, signed."""
    codec = exchange.codec
    current = codec.registry.current["IncidentReport"]
    older = next(
        s
        for fp, s in codec.registry.released.items()
        if s.name == "IncidentReport" and fp != current.fingerprint
    )
    report = report_of("LT-VSAT")
    body = io.BytesIO()
    body.write(b"\xc3\x01" + older.fingerprint)
    schemaless_writer(body, older.parsed, report.model_dump())  # detected_by is not in it
    value = body.getvalue()
    fresh = exchange.sealer("LT-VSAT").seal(report)
    signer = exchange.signer("LT-VSAT")
    headers = [
        (name, signer.sign(value) if name == H_SIGNATURE else raw)
        for name, raw in fresh.headers
        if name != H_SCHEMA
    ]
    headers.insert(3, (H_SCHEMA, older.fingerprint_hex.encode()))
    return SealedReport(
        "IncidentReport", fresh.message_id, fresh.key, value, headers, fresh.traceparent
    )


@dataclass
class Produced:
    """What a test produced to one partition: offset i holds ``reports[i]``."""

    topic: str
    reports: list[SealedReport]


async def produce(
    settings: Settings,
    topic: str,
    reports: Sequence[SealedReport],
    *,
    first_ms: int = BASE_MS,
    raw: Sequence[tuple[bytes, list[tuple[str, bytes]]]] = (),
) -> None:
    """Produce ``reports`` (then ``raw`` values) to partition 0 of ``topic``, stamped 1 s apart."""
    assert settings.bootstrap is not None
    producer = await start_producer(settings, settings.bootstrap)
    try:
        futures = []
        for i, report in enumerate(reports):
            futures.append(
                await producer.send(
                    topic,
                    report.value,
                    key=report.key,
                    headers=report.headers,
                    partition=0,
                    timestamp_ms=first_ms + i * 1000,
                )
            )
        for value, headers in raw:
            futures.append(await producer.send(topic, value, headers=headers, partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def audit_running(
    settings: Settings, exchange: Exchange, url: str
) -> AsyncIterator[AuditConsumer]:
    """The real audit consumer storing every OIX topic into ``url`` until the block ends."""
    await migrate(url)
    store = await AuditStore.open(url)
    assert settings.bootstrap is not None
    audit = AuditSettings(
        metrics_port=0,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=2000,
        metadata_max_age_ms=500,
        fetch_max_wait_ms=20,
        batch_max_ms=20,
        commit_interval_ms=100,
        reset_confirm_ms=1000,
        retry_max_backoff_ms=500,
        open_processes=0,
    )
    consumer = AuditConsumer(settings, audit, exchange, settings.bootstrap, store=store)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await store.close()


REPO = Path(__file__).resolve().parents[2]
OIX = [sys.executable, "-m", "services.cli"]


def env_of(settings: Settings, sqlite_url: str | None = None) -> dict[str, str]:
    found = {
        **os.environ,
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "ERROR",
        "OIX_BOOTSTRAP": settings.bootstrap or "",
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_DATA_DIR": str(settings.data_dir),
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
    }
    if sqlite_url is not None:
        found["OIX_AUDIT_DATABASE_URL"] = sqlite_url
    return found
