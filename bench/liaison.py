"""Liaison benchmark: subscriber throughput beside the raw floors, and publish -> SSE latency.

In one run, on one embedded broker:

- raw consume: a plain aiokafka consumer reading a backlog of signed
  IncidentReports (released to Latvia), no decoding, no storing;
- raw verify: Ed25519 verification of the same values on one thread;
- liaison -> SQLite and liaison -> PostgreSQL: Latvia's subscriber from its
  first assignment until every report is committed (fetch, decode, verify in
  worker processes, check releasability, fold into events, change log, write);
- latency: a record produced at a steady 500 reports/s -> the event on the
  live stream (``GET /v1/stream``) of a running liaison service (SQLite), measured
  twice: the service as deployed (``oix liaison run`` in a process of its own; the
  target is judged on this row) and, for comparison, the service inside this
  process, where the benchmark's own producer and stream client share its event
  loop and its GIL.

Targets (issue 10): throughput at least 0.5 of the lower floor; p99 under 200 ms. Each
throughput row is judged against the lower floor with the raw verify measured just before and
just after it (the mean): on the shared 2-core machine its rate moved by half within minutes.
The backlog the benchmark holds is frozen out of the garbage collector's passes, as the
service freezes its own setup once it runs (``run_liaison``).
PostgreSQL is the server at OIX_BENCH_POSTGRES (default 127.0.0.1:5432, trust).

On a shared machine the rates move with the load; the CPU time per report
(this process's threads and its opening workers, from /proc; the broker's
and PostgreSQL's not counted) moves much less, and says what the same work
would reach with the machine's cores to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from common import (
    bench_settings,
    beside_floor,
    drop_database,
    postgres_database,
    produce,
    raw_consume,
    raw_verify,
    seal,
)
from httpx_sse import aconnect_sse
from rich.console import Console
from rich.table import Table

from services.bus import (
    EmbeddedBroker,
    Exchange,
    SealedReport,
    Settings,
    configure_logging,
    frozen_heap,
    start_producer,
)
from services.liaison import (
    EventQuery,
    LiaisonConsumer,
    LiaisonServer,
    LiaisonService,
    LiaisonSettings,
    LiaisonStore,
    ReportQuery,
    Views,
    Written,
    add_officer,
    migrate,
)

BACKLOG = int(os.environ.get("OIX_BENCH_RECORDS", "30000"))
LATENCY_RATE = 500
LATENCY_SECONDS = 10
AGENCY = "LV-VRS"
PASSWORD = "bench-password-0123"  # noqa: S105  # a throwaway officer of the benchmark

console = Console(width=None if sys.stdout.isatty() else 160)


def cpu_seconds() -> float:
    """CPU time so far of this process (every thread) and of its opening workers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            worker = (
                int(fields[1]) == me and b"spawn_main" in (stat.parent / "cmdline").read_bytes()
            )
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if worker:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def liaison_settings(workdir: Path, **overrides: object) -> LiaisonSettings:
    base: dict[str, object] = {
        "agency": AGENCY,
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "rebalance_timeout_ms": 2000,
        "metadata_max_age_ms": 1000,
        "officers_file": workdir / "officers.yaml",
        "webhooks_file": workdir / "none.yaml",
        "port": 0,
    }
    return LiaisonSettings(**{**base, **overrides})  # type: ignore[arg-type]


async def until(event: asyncio.Event, task: asyncio.Task[None], timeout: float) -> None:
    """Wait for ``event``; a consumer that stops first fails the benchmark with its error."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when="FIRST_COMPLETED")
    if waiter not in done:
        waiter.cancel()
        if task in done:
            task.result()
            raise RuntimeError("the liaison consumer stopped early")
        raise TimeoutError(f"waited {timeout:.0f} s")


async def throughput(
    settings: Settings, exchange: Exchange, url: str, workdir: Path, count: int
) -> tuple[float, float, float]:
    """Reports per second from the first assignment to the last commit, CPU µs per report, and
    the mean batch."""
    await migrate(url)
    store = await LiaisonStore.open(url)
    done = asyncio.Event()
    batches: list[int] = []

    def committed(written: Written) -> None:
        batches.append(len(written.stored))
        if consumer.stored >= count:
            done.set()

    assert settings.bootstrap is not None
    consumer = LiaisonConsumer(
        settings,
        liaison_settings(
            workdir, group_id=f"{settings.topic_prefix}.{AGENCY}.bench-{uuid.uuid4().hex[:6]}"
        ),
        exchange,
        AGENCY,
        settings.bootstrap,
        store=store,
        on_committed=committed,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await until(consumer.positioned, task, 60)
        started, cpu = time.perf_counter(), cpu_seconds()
        await until(done, task, 600)
        elapsed = time.perf_counter() - started
        cpu_us = (cpu_seconds() - cpu) / count * 1e6
    finally:
        stop.set()
        await task
        await store.close()
    mean_batch = statistics.mean(b for b in batches if b) if batches else 0.0
    return count / elapsed, cpu_us, mean_batch


async def console_queries(url: str) -> list[tuple[str, float]]:
    """Milliseconds per query the console makes, on the store the backlog filled."""
    store = await LiaisonStore.open(url)
    views = Views(store)
    found = []
    try:
        day = 86_400_000
        queries = {
            "events, first page of 50": lambda: views.events(AGENCY, EventQuery(), 0),
            "events of one partner, type and impact": lambda: views.events(
                AGENCY,
                EventQuery(partners=["LT-VSAT"], types=["IncidentReport"], impacts=["HIGH"]),
                0,
            ),
            "events matching free text": lambda: views.events(
                AGENCY, EventQuery(text="wetsuit"), 0
            ),
            "reports, next page": lambda: views.reports(AGENCY, ReportQuery(cursor=BACKLOG // 2)),
            "open requests": lambda: views.requests(AGENCY, "open", 0),
            "daily summary, 7 days": lambda: views.summary(
                AGENCY, int(time.time() * 1000) - 7 * day, int(time.time() * 1000) + day, []
            ),
        }
        for name, query in queries.items():
            await query()
            started = time.perf_counter()
            for _ in range(5):
                await query()
            found.append((name, (time.perf_counter() - started) / 5 * 1000))
    finally:
        await store.close()
    return found


async def create_topic(settings: Settings, topic: str) -> None:
    assert settings.bootstrap is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
    finally:
        await admin.close()


async def steady(
    producer: AIOKafkaProducer, topic: str, sealed: Sequence[SealedReport], sent: dict[str, float]
) -> None:
    """Produce ``sealed`` at :data:`LATENCY_RATE`, noting when each was sent."""
    started = time.perf_counter()
    for i, s in enumerate(sealed):
        due = started + i / LATENCY_RATE
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        sent[s.message_id] = time.perf_counter()
        await producer.send(topic, s.value, key=s.key, headers=s.headers)
    await producer.flush()


async def listen_while_producing(
    settings: Settings, topic: str, url: str, token: str, sealed: Sequence[SealedReport]
) -> tuple[float, float, int]:
    """Produce ``sealed`` at :data:`LATENCY_RATE` while reading the live stream at ``url``:
    p50 and p99 (ms) from produce to the event on the stream, and the count."""
    sent: dict[str, float] = {}
    delays: list[float] = []
    everything = asyncio.Event()
    connected = asyncio.Event()

    async def listen(http: httpx.AsyncClient) -> None:
        async with aconnect_sse(http, "GET", "/v1/stream") as source:
            connected.set()
            async for message in source.aiter_sse():
                if message.event != "report":
                    continue
                seen = time.perf_counter()
                data = orjson.loads(message.data)
                delays.append((seen - sent[data["report"]["message_id"]]) * 1000)
                if len(delays) == len(sealed):
                    everything.set()
                    return

    assert settings.bootstrap is not None
    producer = await start_producer(settings, settings.bootstrap, linger_ms=0)
    try:
        async with httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(30, read=None),
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            listening = asyncio.create_task(listen(http))
            await asyncio.wait_for(connected.wait(), 30)
            await steady(producer, topic, sealed, sent)
            await asyncio.wait_for(everything.wait(), 60)
            await listening
    finally:
        await producer.stop()
    ordered = sorted(delays)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99, len(ordered)


async def latency_settings(base: Settings, workdir: Path) -> tuple[Settings, str]:
    """Settings on a fresh topic prefix (an empty store, no backlog), and LT's feed in it;
    the benchmark's officer is added to ``workdir``'s officers file."""
    settings = base.model_copy(update={"topic_prefix": f"lat{uuid.uuid4().hex[:8]}"})
    topic = Exchange.from_settings(settings).naming.feed("LT-VSAT", "incidents")
    await create_topic(settings, topic)
    add_officer(workdir / "officers.yaml", AGENCY, "bench", PASSWORD)
    return settings, topic


async def sign_in(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        token = await http.post("/v1/tokens", json={"name": "bench", "password": PASSWORD})
        token.raise_for_status()
        return str(token.json()["token"])


async def latency_in_process(
    base: Settings, workdir: Path, sealed: Sequence[SealedReport]
) -> tuple[float, float, int]:
    """The service in this process, sharing its event loop with the producer and the client."""
    own = workdir / "latency-in-process"
    settings, topic = await latency_settings(base, own)
    service = LiaisonService(
        settings, liaison_settings(own), Exchange.from_settings(settings), migrate_first=True
    )
    await service.start()
    server = LiaisonServer(service, host="127.0.0.1", port=0)
    await server.start()
    try:
        await asyncio.wait_for(service.consumer.positioned.wait(), 60)
        return await listen_while_producing(
            settings, topic, server.url, await sign_in(server.url), sealed
        )
    finally:
        await server.stop()
        await service.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def logged(log: Path) -> str:
    """What the service logged (read once it failed: a few KB at most)."""
    return log.read_text()


async def ready(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    """Wait until ``url``/readyz answers 200 (joined, positioned, store answering)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"the liaison service exited:\n{logged(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the liaison service was not ready in 60 s:\n{logged(log)}")


async def latency_own_process(
    base: Settings, workdir: Path, sealed: Sequence[SealedReport]
) -> tuple[float, float, int]:
    """The service as deployed: ``oix liaison run`` in a process of its own."""
    own = workdir / "latency-own-process"
    settings, topic = await latency_settings(base, own)
    port = free_port()
    fixed = liaison_settings(own)
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": str(settings.bootstrap),
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_DATA_DIR": str(own),
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "ERROR",
        "OIX_LIAISON_AGENCY": AGENCY,
        "OIX_LIAISON_PORT": str(port),
        "OIX_LIAISON_OFFICERS_FILE": str(fixed.officers_file),
        "OIX_LIAISON_WEBHOOKS_FILE": str(fixed.webhooks_file),
        "OIX_LIAISON_SESSION_TIMEOUT_MS": str(fixed.session_timeout_ms),
        "OIX_LIAISON_HEARTBEAT_INTERVAL_MS": str(fixed.heartbeat_interval_ms),
        "OIX_LIAISON_REBALANCE_TIMEOUT_MS": str(fixed.rebalance_timeout_ms),
        "OIX_LIAISON_METADATA_MAX_AGE_MS": str(fixed.metadata_max_age_ms),
    }
    log = own / "service.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "liaison",
            "run",
            "--migrate",
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await ready(process, url, log)
        return await listen_while_producing(settings, topic, url, await sign_in(url), sealed)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def main() -> None:
    configure_logging("json", "ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="oix-bench-liaison-"))
    async with EmbeddedBroker() as broker:
        settings = bench_settings(broker.bootstrap, workdir)
        exchange = Exchange.from_settings(settings)
        steady_count = LATENCY_RATE * LATENCY_SECONDS
        console.print(f"signing {BACKLOG} IncidentReports ({2 * steady_count} more)")
        sealed = seal(exchange, BACKLOG + 2 * steady_count, to_partners=True)
        backlog, steady = sealed[:BACKLOG], sealed[BACKLOG:]
        topic = exchange.naming.feed("LT-VSAT", "incidents")
        await produce(settings, topic, backlog)
        console.print(f"backlog of {BACKLOG} records ({len(backlog[0].value)} B values) produced")

        # The backlog held for the floors is no service's to collect: frozen, as a service
        # freezes its setup once it runs.
        with frozen_heap():
            consume_rate = await raw_consume(broker.bootstrap, topic, BACKLOG)
            verify_rate, verify_cpu = raw_verify(exchange, backlog)

            async def verify_floor() -> float:
                return raw_verify(exchange, backlog)[0]

            async def judged(
                measured: Coroutine[Any, Any, tuple[float, float, float]],
            ) -> tuple[float, float, float, float]:
                """A throughput row and its verify floor measured beside it."""
                (rate, cpu_us, batch), floor = await beside_floor(verify_floor, measured)
                return rate, cpu_us, batch, floor

            sqlite_url = f"sqlite+aiosqlite:///{workdir / 'liaison.db'}"
            sqlite = await judged(throughput(settings, exchange, sqlite_url, workdir, BACKLOG))
            queries = await console_queries(sqlite_url)
            pg_url = await postgres_database()
            try:
                postgres = await judged(throughput(settings, exchange, pg_url, workdir, BACKLOG))
            finally:
                await drop_database(pg_url)
            deployed = await latency_own_process(settings, workdir, steady[:steady_count])
            shared = await latency_in_process(settings, workdir, steady[steady_count:])

    print_tables(
        (consume_rate, verify_rate, verify_cpu),
        [("liaison -> SQLite", *sqlite), ("liaison -> PostgreSQL", *postgres)],
        [
            ("own process (oix liaison run, as deployed)", *deployed),
            ("in this benchmark's process (shares its loop with producer and client)", *shared),
        ],
        queries,
    )


def print_tables(
    floors: tuple[float, float, float],
    rates: list[tuple[str, float, float, float, float]],
    latencies: list[tuple[str, float, float, int]],
    queries: list[tuple[str, float]],
) -> None:
    consume_rate, verify_rate, verify_cpu = floors
    cores = os.cpu_count() or 1
    table = Table(title=f"liaison subscriber throughput, {BACKLOG} signed IncidentReports, one run")
    bound = f"x floor, CPU-bound on {cores} idle cores (at most)"
    for column in ("path", "msg/s", "x lower floor", "target", "", "CPU µs/msg", bound):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("raw aiokafka consume (no decode, no store)", f"{consume_rate:,.0f}")
    table.add_row(
        "raw Ed25519 verify, 1 thread", f"{verify_rate:,.0f}", "", "", "", f"{verify_cpu:.0f}"
    )
    for name, rate, cpu_us, batch, verify_beside in rates:
        ratio = rate / min(consume_rate, verify_beside)
        table.add_row(
            f"{name}, mean batch {batch:,.0f}",
            f"{rate:,.0f}",
            f"{ratio:.2f} (verify {verify_beside:,.0f}/s beside it)",
            ">= 0.5x",
            "[green]met[/]" if ratio >= 0.5 else "[red]missed[/]",
            f"{cpu_us:.0f}",
            f"{cores * verify_cpu / cpu_us:.2f}",
        )
    console.print(table)
    lat = Table(
        title=f"publish -> event on the live stream at {LATENCY_RATE} reports/s for "
        f"{LATENCY_SECONDS} s (SQLite; the producer and the stream's client are this process)"
    )
    for column in ("liaison service", "reports", "p50 ms", "p99 ms", "target", ""):
        lat.add_column(column, justify="left" if column == "liaison service" else "right")
    for where, p50, p99, seen in latencies:
        judged = where.startswith("own process")
        lat.add_row(
            where,
            str(seen),
            f"{p50:.1f}",
            f"{p99:.1f}",
            "p99 < 200" if judged else "(comparison)",
            ("[green]met[/]" if p99 < 200 else "[red]missed[/]") if judged else "",
        )
    console.print(lat)
    console_table = Table(title=f"console queries on SQLite holding {BACKLOG} events")
    console_table.add_column("query")
    console_table.add_column("ms", justify="right")
    for name, ms in queries:
        console_table.add_row(name, f"{ms:.1f}")
    console.print(console_table)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
