"""What every benchmark needs beside its subject: signed reports, a producer, the floors.

The floors are what the bus itself allows on this machine, measured in the
same run as the path under test: a raw aiokafka consumer reading the same
topic and a raw Ed25519 verify of the same values. Benchmarks import this
module by name (``bench/`` is on ``sys.path`` when one runs as a script).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.bus import (
    H_KEY_ID,
    H_SIGNATURE,
    Exchange,
    IncidentReport,
    SealedReport,
    Settings,
    freshen,
    load_examples,
    start_producer,
)

PG_ADMIN = os.environ.get("OIX_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""A PostgreSQL role that may create and drop the benchmarks' databases."""

T = TypeVar("T")

PARTNERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]
REPO = Path(__file__).resolve().parents[1]


def bench_settings(bootstrap: str, workdir: Path, topic_prefix: str = "bench") -> Settings:
    """The example agreement, its demo keys and schemas, on ``bootstrap``; only errors logged."""
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        data_dir=workdir,
        agreement=REPO / "deploy" / "agreement.example.yaml",
        keys_dir=REPO / "deploy" / "keys",
        schemas_dir=REPO / "schemas",
        log_format="json",
        log_level="ERROR",
    )


def seal(exchange: Exchange, count: int, *, to_partners: bool = False) -> list[SealedReport]:
    """``count`` signed IncidentReports of LT-VSAT, each a message (and, released to the
    partners with ``to_partners``, an event) of its own, over 64 keys."""
    reports = freshen([e.report for e in load_examples()])
    report = next(
        r for r in reports if isinstance(r, IncidentReport) and r.header.originator == "LT-VSAT"
    )
    header = report.header
    if to_partners:
        header = header.model_copy(update={"releasable_to": PARTNERS})
    sealer = exchange.sealer("LT-VSAT")
    out = []
    for i in range(count):
        message_id = uuid.uuid4()
        ids = {"message_id": message_id, "event_id": message_id} if to_partners else {}
        fresh = header.model_copy(update=ids or {"message_id": message_id})
        out.append(sealer.seal(report.model_copy(update={"header": fresh}), key=f"s-{i % 64}"))
    return out


async def send_all(producer: AIOKafkaProducer, topic: str, sealed: Sequence[SealedReport]) -> None:
    """Send ``sealed`` to ``topic`` in acknowledged chunks of 2,000."""
    for start in range(0, len(sealed), 2000):
        futures = [
            await producer.send(topic, s.value, key=s.key, headers=s.headers)
            for s in sealed[start : start + 2000]
        ]
        await asyncio.gather(*futures)


async def produce(settings: Settings, topic: str, sealed: Sequence[SealedReport]) -> None:
    """:func:`send_all` through a producer of its own (OIX's settings: acks=all)."""
    assert settings.bootstrap is not None
    producer = await start_producer(settings, settings.bootstrap)
    try:
        await send_all(producer, topic, sealed)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, count: int) -> float:
    """Floor: records per second a bare aiokafka consumer reads of ``topic`` from its start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def raw_verify(exchange: Exchange, sealed: Sequence[SealedReport]) -> tuple[float, float]:
    """Floor: reports verified per second (Ed25519, one thread), and CPU µs per report."""
    verifier = exchange.verifier
    items = [(s.value, dict(s.headers)) for s in sealed[:20000]]
    started, cpu = time.perf_counter(), time.thread_time()
    for value, headers in items:
        status = verifier.verify(
            value, headers[H_SIGNATURE], headers[H_KEY_ID].decode(), "LT-VSAT"
        ).status
        assert status == "valid"
    cpu_us = (time.thread_time() - cpu) / len(items) * 1e6
    return len(items) / (time.perf_counter() - started), cpu_us


async def beside_floor(floor: Callable[[], Awaitable[float]], row: Awaitable[T]) -> tuple[T, float]:
    """``row``'s result, and ``floor()`` measured just before and just after it (the mean).

    A judged row's floor: on the shared 2-core machine a floor's rate moved by half
    within minutes, so one taken at the start misjudged rows run a minute later.
    """
    before = await floor()
    result = await row
    after = await floor()
    return result, (before + after) / 2


async def postgres_database() -> str:
    """A fresh PostgreSQL database for one measurement (its async SQLAlchemy URL)."""
    name = f"oix_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host}/{name}"


async def drop_database(url: str) -> None:
    """Drop a database :func:`postgres_database` made."""
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
