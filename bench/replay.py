"""Replay benchmark: export throughput from Kafka and from the store beside the raw floors.

In one run, on one embedded broker and one backlog of signed IncidentReports:

- raw read: a plain aiokafka consumer reading the backlog, no decoding (the floor of a
  replay from Kafka);
- raw verify: Ed25519 verification of the same values on one thread (the floor of a
  replay with signature checks);
- Kafka -> Avro file and Kafka -> JSON lines, with and without signature checks;
- store -> Avro file and store -> JSON lines (SQLite, filled by the audit consumer), with
  and without signature checks.

Targets (issue 12): Kafka -> Avro without checks at least 0.5 of the raw read; with
checks at least 0.7 of the raw verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from common import bench_settings, produce, raw_consume, raw_verify, seal
from rich.console import Console
from rich.table import Table

from services.audit import AuditConsumer, AuditSettings, AuditStore, RecordScan, migrate
from services.bus import (
    EmbeddedBroker,
    Exchange,
    Settings,
    configure_logging,
)
from services.replay import Format, Replayed, Selection, open_writer, read_kafka, read_store

BACKLOG = int(os.environ.get("OIX_BENCH_RECORDS", "50000"))

console = Console(width=None if sys.stdout.isatty() else 120)  # a log keeps whole rows


async def export(
    records: Callable[[], AsyncGenerator[Replayed]],
    kind: Format,
    path: Path,
    exchange: Exchange,
    count: int,
) -> float:
    writer = open_writer(kind, path, exchange.codec)
    seen = 0
    started = time.perf_counter()
    try:
        async with contextlib.aclosing(records()) as stream:
            async for record in stream:
                writer.write(record)
                seen += 1
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    assert seen == count, f"exported {seen} of {count}"
    return count / elapsed


async def fill_store(settings: Settings, exchange: Exchange, url: str, count: int) -> None:
    await migrate(url)
    store = await AuditStore.open(url)
    assert settings.bootstrap is not None
    audit = AuditSettings(metrics_port=0, fetch_max_wait_ms=20, batch_max_ms=20)
    consumer = AuditConsumer(settings, audit, exchange, settings.bootstrap, store=store)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        while consumer.stored < count:
            if task.done():
                await task
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
        await store.close()


async def main() -> None:
    configure_logging("json", "ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="oix-bench-replay-"))
    rows: list[tuple[str, float, str, float | None]] = []
    async with EmbeddedBroker() as broker:
        settings = bench_settings(broker.bootstrap, workdir)
        exchange = Exchange.from_settings(settings)
        console.print(f"signing {BACKLOG} IncidentReports")
        sealed = seal(exchange, BACKLOG)
        topic = exchange.naming.feed("LT-VSAT", "incidents")
        await produce(settings, topic, sealed)
        console.print(f"backlog of {BACKLOG} records ({len(sealed[0].value)} B values) produced")
        read_rate = await raw_consume(broker.bootstrap, topic, BACKLOG)
        verify_rate, _ = raw_verify(exchange, sealed)
        selection = Selection(topics=(topic,))
        bootstrap = broker.bootstrap

        for checks in (False, True):
            for kind in (Format.AVRO, Format.JSONL):

                def from_kafka(checks: bool = checks) -> AsyncGenerator[Replayed]:
                    return read_kafka(settings, bootstrap, exchange, selection, checks=checks)

                rate = await export(from_kafka, kind, workdir / f"k.{kind}", exchange, BACKLOG)
                floor_name, floor = (
                    ("raw verify", verify_rate) if checks else ("raw read", read_rate)
                )
                target = (0.7 if checks else 0.5) if kind is Format.AVRO else None
                label = f"Kafka -> {kind} {'with' if checks else 'without'} checks"
                rows.append((label, rate, floor_name, target))
                rows[-1] = (label, rate, f"{rate / floor:.2f} x {floor_name}", target)

        url = f"sqlite+aiosqlite:///{workdir / 'audit.db'}"
        await fill_store(settings, exchange, url, BACKLOG)
        scan = await RecordScan.open(url)
        try:
            for checks in (False, True):
                for kind in (Format.AVRO, Format.JSONL):

                    def from_store(checks: bool = checks) -> AsyncGenerator[Replayed]:
                        return read_store(scan, exchange, selection, checks=checks)

                    rate = await export(from_store, kind, workdir / f"s.{kind}", exchange, BACKLOG)
                    floor_name, floor = (
                        ("raw verify", verify_rate) if checks else ("raw read", read_rate)
                    )
                    label = f"store (SQLite) -> {kind} {'with' if checks else 'without'} checks"
                    rows.append((label, rate, f"{rate / floor:.2f} x {floor_name}", None))
        finally:
            await scan.close()

    table = Table(title=f"replay throughput, {BACKLOG} signed IncidentReports, one run")
    table.add_column("path")
    table.add_column("records/s", justify="right")
    table.add_column("ratio to its floor", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    table.add_row("raw aiokafka read (no decode)", f"{read_rate:,.0f}", "floor", "", "")
    table.add_row("raw Ed25519 verify, 1 thread", f"{verify_rate:,.0f}", "floor", "", "")
    for label, rate, ratio, target in rows:
        if target is None:
            table.add_row(label, f"{rate:,.0f}", ratio, "", "")
            continue
        met = float(ratio.split(" ")[0]) >= target
        table.add_row(
            label,
            f"{rate:,.0f}",
            ratio,
            f">= {target}x",
            "[green]met[/]" if met else "[red]missed[/]",
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
