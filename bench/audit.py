"""Audit benchmark: throughput into SQLite and PostgreSQL beside the raw floors, and latency.

In one run, on one embedded broker and one backlog of signed IncidentReports:

- raw consume: a plain aiokafka consumer reading the backlog, no decoding, no storing;
- raw verify: Ed25519 verification of the same values on one thread (libsodium);
- audit -> SQLite and audit -> PostgreSQL: the audit consumer, from its first
  assignment until every record is committed (fetch, decode, verify, chain, write);
- latency: produce -> durable row (after the commit) at a steady 1,000 messages/s.

Targets (issue 4): PostgreSQL at least 10,000 msg/s including signature
verification and at least 0.5 of the lower floor; p99 under 250 ms.
PostgreSQL is the server at OIX_BENCH_POSTGRES (default 127.0.0.1:5432, trust).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from common import (
    bench_settings,
    drop_database,
    postgres_database,
    produce,
    raw_consume,
    raw_verify,
    seal,
)
from rich.console import Console
from rich.table import Table

from services.audit import AuditConsumer, AuditRecord, AuditSettings, AuditStore, migrate
from services.bus import (
    EmbeddedBroker,
    Exchange,
    SealedReport,
    Settings,
    configure_logging,
    start_producer,
)

BACKLOG = int(os.environ.get("OIX_BENCH_RECORDS", "60000"))
LATENCY_RATE = 1000
LATENCY_SECONDS = 15

console = Console(width=None if sys.stdout.isatty() else 120)  # a log keeps whole rows


async def until(event: asyncio.Event, consumer: asyncio.Task[None], timeout: float) -> None:
    """Wait for ``event``; a consumer that stops first fails the benchmark with its error."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({waiter, consumer}, timeout=timeout, return_when="FIRST_COMPLETED")
    if waiter not in done:
        waiter.cancel()
        if consumer in done:
            consumer.result()
            raise RuntimeError("the audit consumer stopped early")
        raise TimeoutError(f"waited {timeout:.0f} s")


def audit_settings(**overrides: object) -> AuditSettings:
    base: dict[str, object] = {
        "metrics_port": None,
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "rebalance_timeout_ms": 2000,
        "metadata_max_age_ms": 1000,
    }
    return AuditSettings(**{**base, **overrides})  # type: ignore[arg-type]


def start_audit(
    settings: Settings,
    exchange: Exchange,
    store: AuditStore,
    committed: Callable[[Sequence[AuditRecord]], None],
) -> tuple[AuditConsumer, asyncio.Event, asyncio.Task[None]]:
    """An audit consumer in a fresh group, running; set the event to drain and stop it."""
    assert settings.bootstrap is not None
    consumer = AuditConsumer(
        settings,
        audit_settings(group_id=f"bench-{uuid.uuid4().hex[:8]}"),
        exchange,
        settings.bootstrap,
        store=store,
        on_committed=committed,
    )
    stop = asyncio.Event()
    return consumer, stop, asyncio.create_task(consumer.run(stop))


async def audit_throughput(
    settings: Settings, exchange: Exchange, url: str, count: int
) -> tuple[float, float]:
    """Records per second from the first assignment to the last commit, and batch size."""
    await migrate(url)
    store = await AuditStore.open(url)
    done = asyncio.Event()
    batches: list[int] = []

    def committed(records: Sequence[AuditRecord]) -> None:
        batches.append(len(records))
        if consumer.stored >= count:
            done.set()

    consumer, stop, task = start_audit(settings, exchange, store, committed)
    try:
        await until(consumer.assigned, task, 60)
        started = time.perf_counter()
        await until(done, task, 600)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await task
        assert await store.count() == count, "the store does not hold the backlog exactly"
        await store.close()
    return count / elapsed, statistics.mean(batches)


async def create_topic(settings: Settings, topic: str) -> None:
    assert settings.bootstrap is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()


async def latency(
    base: Settings, url: str, sealed: Sequence[SealedReport]
) -> tuple[float, float, int]:
    """p50 and p99 (ms) from produce to committed row at a steady rate, and the count.

    A topic prefix of its own, created before the consumer starts: the consumer
    sees only this topic, from its first record.
    """
    settings = base.model_copy(update={"topic_prefix": f"lat{uuid.uuid4().hex[:8]}"})
    exchange = Exchange.from_settings(settings)
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await create_topic(settings, topic)
    await migrate(url)
    store = await AuditStore.open(url)
    assert settings.bootstrap is not None
    delays: list[float] = []

    all_committed = asyncio.Event()

    def committed(records: Sequence[AuditRecord]) -> None:
        now = time.time() * 1000
        delays.extend(now - r.kafka_timestamp for r in records)
        if len(delays) >= len(sealed):
            all_committed.set()

    consumer, stop, task = start_audit(settings, exchange, store, committed)
    producer = await start_producer(settings, settings.bootstrap, linger_ms=0)
    try:
        await until(consumer.assigned, task, 60)
        started = time.perf_counter()
        for i, s in enumerate(sealed):
            due = started + i / LATENCY_RATE
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            await producer.send(topic, s.value, key=s.key, headers=s.headers)
        await producer.flush()
        await until(all_committed, task, 30)
    finally:
        await producer.stop()
        stop.set()
        await task
        await store.close()
    ordered = sorted(delays)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99, len(ordered)


async def main() -> None:
    configure_logging("json", "ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="oix-bench-audit-"))
    async with EmbeddedBroker() as broker:
        settings = bench_settings(broker.bootstrap, workdir)
        exchange = Exchange.from_settings(settings)
        console.print(f"signing {BACKLOG} IncidentReports ({LATENCY_RATE * LATENCY_SECONDS} more)")
        sealed = seal(exchange, BACKLOG + 2 * LATENCY_RATE * LATENCY_SECONDS)
        backlog, steady = sealed[:BACKLOG], sealed[BACKLOG:]
        topic = exchange.naming.feed("LT-VSAT", "incidents")
        await produce(settings, topic, backlog)
        console.print(f"backlog of {BACKLOG} records ({len(backlog[0].value)} B values) produced")

        consume_rate = await raw_consume(broker.bootstrap, topic, BACKLOG)
        verify_rate, _ = raw_verify(exchange, backlog)
        sqlite_url = f"sqlite+aiosqlite:///{workdir / 'audit.db'}"
        sqlite_rate, sqlite_batch = await audit_throughput(settings, exchange, sqlite_url, BACKLOG)
        pg_url = await postgres_database()
        try:
            pg_rate, pg_batch = await audit_throughput(settings, exchange, pg_url, BACKLOG)
        finally:
            await drop_database(pg_url)

        half = LATENCY_RATE * LATENCY_SECONDS
        latencies = {}
        lat_sqlite = f"sqlite+aiosqlite:///{workdir / 'latency.db'}"
        latencies["SQLite"] = await latency(settings, lat_sqlite, steady[:half])
        pg_latency_url = await postgres_database()
        try:
            latencies["PostgreSQL"] = await latency(settings, pg_latency_url, steady[half:])
        finally:
            await drop_database(pg_latency_url)

    floor = min(consume_rate, verify_rate)
    table = Table(title=f"audit throughput, {BACKLOG} signed IncidentReports, one run")
    table.add_column("path")
    table.add_column("msg/s", justify="right")
    table.add_column("x lower floor", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    table.add_row("raw aiokafka consume (no decode, no store)", f"{consume_rate:,.0f}", "", "", "")
    table.add_row("raw Ed25519 verify, 1 thread", f"{verify_rate:,.0f}", "", "", "")
    for name, rate, batch, target in (
        ("audit -> SQLite (WAL, synchronous=FULL)", sqlite_rate, sqlite_batch, None),
        ("audit -> PostgreSQL (COPY)", pg_rate, pg_batch, 10_000),
    ):
        ratio = rate / floor
        met = ratio >= 0.5 and (target is None or rate >= target)
        goal = f">= 0.5x{' and 10,000/s' if target else ''}"
        table.add_row(
            f"{name}, mean batch {batch:,.0f}",
            f"{rate:,.0f}",
            f"{ratio:.2f}",
            goal,
            "[green]met[/]" if met else "[red]missed[/]",
        )
    console.print(table)
    lat = Table(
        title=f"produce -> durable row at a steady {LATENCY_RATE} msg/s for {LATENCY_SECONDS} s"
    )
    for column in ("store", "records", "p50 ms", "p99 ms", "target", ""):
        lat.add_column(column, justify="right" if column != "store" else "left")
    for name, (p50, p99, seen) in latencies.items():
        lat.add_row(
            name,
            str(seen),
            f"{p50:.1f}",
            f"{p99:.1f}",
            "p99 < 250",
            "[green]met[/]" if p99 < 250 else "[red]missed[/]",
        )
    console.print(lat)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
