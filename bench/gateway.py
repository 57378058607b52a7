"""Gateway benchmark: HTTP single and batch ingest, SDK publish, beside their floors.

In one run, on one embedded broker (or ``OIX_BOOTSTRAP``), with fresh
IncidentReports of LV-VRS (about 550 B encoded, one feed topic):

- floor, codec: validate+encode+sign of the report dict on one core (no I/O);
- floor, raw aiokafka: the same producer settings (acks=all) sending the same
  pre-encoded, pre-signed values and headers, as fast as it acknowledges;
- SDK: ``Publisher.publish`` from many concurrent tasks, and ``publish_many``;
- HTTP single: ``POST /v1/reports`` over keep-alive connections, as fast as it
  answers, and paced at 500 reports/s for the latency target;
- HTTP batch: ``POST /v1/reports:batch`` with JSON arrays.

Latency is from handing a report over to the broker's acknowledgement (SDK,
raw) or to the HTTP answer, which is sent after the ack. "CPU µs" is the CPU
time per report of the process doing the work (this one for the floors and
the SDK, the gateway process for HTTP; the broker is a process of its own):
on a shared machine it moves far less than reports/s. The gateway runs as
its own process (``oix gateway run``, INFO logs to /dev/null); the HTTP
client is a minimal keep-alive HTTP/1.1 client in this process, so that the
client costs as little as it can. This machine has 2 cores, shared by the
broker, the gateway and the client. Nothing here is asserted: it reports.

Targets (issue 3): SDK >= 0.7 x the lower floor; HTTP batch >= 10,000
reports/s; HTTP single >= 1,500 reports/s with p99 < 50 ms at 500 reports/s.

Run: ``make bench-gateway`` (or ``.venv/bin/python bench/gateway.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from services.bus import (
    EmbeddedBroker,
    Exchange,
    Settings,
    configure_logging,
    free_port,
    freshen,
    parse_report,
    start_producer,
)
from services.gateway import GatewaySettings, create_token, tokens_path
from services.gateway.sdk import Publisher

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "examples" / "02-lv-incident-ladders.json"
AGENCY = "LV-VRS"
SDK_RATIO_TARGET = 0.7
BATCH_TARGET = 10_000
SINGLE_TARGET = 1_500
SINGLE_P99_TARGET_MS = 50.0
PACED_RATE = 500
WINDOW = 1000

console = Console(width=140)


def reports(count: int) -> list[dict[str, Any]]:
    """``count`` copies of the example incident, each with its own message id."""
    # Moved to the present: the gateway refuses times more than a year old.
    fresh = freshen([parse_report(json.loads(EXAMPLE.read_text()))])[0]
    base = {**fresh.model_dump(mode="json"), "type": fresh.report_type}
    out = []
    for _ in range(count):
        report = json.loads(json.dumps(base))
        report["header"]["message_id"] = str(uuid.uuid4())
        out.append(report)
    return out


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    note: str = ""
    cpu: float | None = None
    """CPU seconds the working process spent, when measured."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_us(self) -> float | None:
        return None if self.cpu is None else self.cpu / self.count * 1e6

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def codec_floor(exchange: Exchange, data: list[dict[str, Any]], seconds: float) -> Result:
    sealer = exchange.sealer(AGENCY)
    for report in data[:200]:
        sealer.seal(parse_report(report))
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for report in data[:1000]:
            sealer.seal(parse_report(report))
        done += 1000
    name = "floor: codec validate+encode+sign (1 core)"
    return Result(name, done, time.perf_counter() - start, cpu=time.process_time() - cpu)


async def workers(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """``concurrency`` tasks calling ``one(i)`` for i in range(count); (seconds, latencies)."""
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            began = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


async def raw_floor(
    settings: Settings, exchange: Exchange, bootstrap: str, data: list[dict[str, Any]]
) -> Result:
    sealer = exchange.sealer(AGENCY)
    sealed = [sealer.seal(parse_report(r)) for r in data]
    topic = exchange.router.naming.feed(AGENCY, "incidents")
    producer = await start_producer(settings, bootstrap)
    latencies: list[float] = []

    def acked(began: float, _: object) -> None:
        latencies.append(time.perf_counter() - began)

    try:
        await producer.send_and_wait(topic, sealed[0].value, key=sealed[0].key)
        # As fast as aiokafka goes: send without waiting, at most WINDOW unacknowledged.
        pending: deque[asyncio.Future[object]] = deque()
        start, cpu = time.perf_counter(), time.process_time()
        for s in sealed:
            future = await producer.send(topic, s.value, key=s.key, headers=s.headers)
            future.add_done_callback(functools.partial(acked, time.perf_counter()))
            pending.append(future)
            if len(pending) >= WINDOW:
                await pending.popleft()
        await asyncio.gather(*pending)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await producer.stop()
    note = f"{WINDOW} in flight"
    return Result("floor: raw aiokafka, pre-encoded", len(sealed), seconds, latencies, note, cpu)


async def sdk_publish(
    settings: Settings,
    gateway: GatewaySettings,
    exchange: Exchange,
    data: list[dict[str, Any]],
    many: list[dict[str, Any]],
) -> tuple[Result, Result]:
    async with Publisher(AGENCY, settings, gateway=gateway, exchange=exchange) as pub:
        await pub.publish(reports(1)[0])

        async def one(i: int) -> None:
            await pub.publish(data[i])

        cpu = time.process_time()
        seconds, latencies = await workers(len(data), WINDOW, one)
        cpu = time.process_time() - cpu
        note = f"{WINDOW} concurrent"
        single = Result("SDK publish", len(data), seconds, latencies, note, cpu)
        start, cpu = time.perf_counter(), time.process_time()
        accepted = 0
        for offset in range(0, len(many), 1000):
            outcomes = await pub.publish_many(many[offset : offset + 1000])
            accepted += sum(1 for o in outcomes if not isinstance(o, Exception))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        batch = Result("SDK publish_many (1000 a call)", accepted, seconds, cpu=cpu)
    return single, batch


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client connection: only what the benchmark needs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(
        self, path: str, body: bytes, token: str, content_type: str
    ) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in {b"\r\n", b""}:
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def gateway_process(
    settings: Settings, bootstrap: str
) -> AsyncIterator[tuple[int, str, int]]:
    # The file the gateway process will read: it inherits OIX_GATEWAY_TOKENS_FILE.
    token = create_token(tokens_path(settings, GatewaySettings()), AGENCY, "bench")
    port = free_port()
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": bootstrap,
        "OIX_DATA_DIR": str(settings.data_dir),
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "INFO",
        "OIX_GATEWAY_AGENCY": AGENCY,
        "OIX_GATEWAY_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "services.cli", "gateway", "run"],
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = await HttpConnection.open(port)
            except OSError:
                if time.monotonic() > deadline or process.returncode is not None:
                    raise RuntimeError("the gateway did not start") from None
                await asyncio.sleep(0.1)
            else:
                await connection.close()
                break
        yield port, token, process.pid
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def http_single(port: int, token: str, bodies: list[bytes], connections: int) -> Result:
    pool = [await HttpConnection.open(port) for _ in range(connections)]
    latencies: list[float] = []
    failures = 0
    queue = iter(bodies)

    async def worker(connection: HttpConnection) -> None:
        nonlocal failures
        for body in queue:
            began = time.perf_counter()
            status, _ = await connection.post("/v1/reports", body, token, "application/json")
            latencies.append(time.perf_counter() - began)
            failures += status != 201

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    seconds = time.perf_counter() - start
    for connection in pool:
        await connection.close()
    note = f"{connections} connections" + (f", {failures} not 201" if failures else "")
    return Result(
        "HTTP single, as fast as answered", len(bodies) - failures, seconds, latencies, note
    )


async def http_paced(port: int, token: str, bodies: list[bytes], rate: int) -> Result:
    """Open loop: a report every 1/rate s; latency counts from when it was due."""
    pool = [await HttpConnection.open(port) for _ in range(32)]
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for connection in pool:
        idle.put_nowait(connection)
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()

    async def send(index: int, body: bytes) -> None:
        nonlocal failures
        due = start + index / rate
        connection = await idle.get()
        status, _ = await connection.post("/v1/reports", body, token, "application/json")
        latencies.append(time.perf_counter() - due)
        failures += status != 201
        idle.put_nowait(connection)

    tasks = []
    for index, body in enumerate(bodies):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index, body)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    for connection in pool:
        await connection.close()
    note = f"paced at {rate}/s" + (f", {failures} not 201" if failures else "")
    return Result(
        f"HTTP single at {rate} reports/s", len(bodies) - failures, seconds, latencies, note
    )


async def http_batch(
    port: int, token: str, data: list[dict[str, Any]], size: int, connections: int
) -> Result:
    batches = [orjson.dumps(data[i : i + size]) for i in range(0, len(data), size)]
    pool = [await HttpConnection.open(port) for _ in range(connections)]
    queue = iter(batches)
    accepted = 0
    latencies: list[float] = []

    async def worker(connection: HttpConnection) -> None:
        nonlocal accepted
        for body in queue:
            began = time.perf_counter()
            status, payload = await connection.post(
                "/v1/reports:batch", body, token, "application/json"
            )
            latencies.append(time.perf_counter() - began)
            if status == 200:
                accepted += orjson.loads(payload)["accepted"]

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    seconds = time.perf_counter() - start
    for connection in pool:
        await connection.close()
    note = f"{size} a request, {connections} connections; latency per request"
    return Result("HTTP batch (JSON array)", accepted, seconds, latencies, note)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(pid: int, run: Awaitable[Result]) -> Result:
    """``run``'s result with the CPU time process ``pid`` spent meanwhile."""
    before = process_cpu(pid)
    result = await run
    after = process_cpu(pid)
    if before is not None and after is not None:
        result.cpu = after - before
    return result


def show(results: dict[str, Result]) -> None:
    codec = results["codec"].rate
    raw = results["raw"].rate
    lower = min(codec, raw)
    table = Table(title="gateway: IncidentReport of LV-VRS, acks=all, 2 cores shared")
    columns = (
        "measure",
        "reports/s",
        "CPU µs",
        "p50 ms",
        "p99 ms",
        "vs codec",
        "vs raw",
        "target",
        "met",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in {"measure", "target"} else "right")

    def add(key: str, target: str = "", met: bool | None = None) -> None:
        result = results[key]
        p50, p99 = result.percentile(0.5), result.percentile(0.99)
        table.add_row(
            result.name + (f" [dim]({result.note})[/]" if result.note else ""),
            f"{result.rate:,.0f}",
            f"{result.cpu_us:.0f}" if result.cpu_us is not None else "",
            f"{p50:.1f}" if p50 is not None else "",
            f"{p99:.1f}" if p99 is not None else "",
            f"{result.rate / codec:.2f}",
            f"{result.rate / raw:.2f}",
            target,
            "" if met is None else ("yes" if met else "NO"),
        )

    add("codec")
    add("raw")
    sdk_target = SDK_RATIO_TARGET * lower
    add(
        "sdk",
        f">= {SDK_RATIO_TARGET} x lower floor ({lower:,.0f})",
        results["sdk"].rate >= sdk_target,
    )
    add("sdk_many", f">= {SDK_RATIO_TARGET} x lower floor", results["sdk_many"].rate >= sdk_target)
    add("single", f">= {SINGLE_TARGET:,}/s", results["single"].rate >= SINGLE_TARGET)
    paced = results["paced"]
    p99 = paced.percentile(0.99) or 0.0
    add("paced", f"p99 < {SINGLE_P99_TARGET_MS:.0f} ms", p99 < SINGLE_P99_TARGET_MS)
    add("batch", f">= {BATCH_TARGET:,}/s", results["batch"].rate >= BATCH_TARGET)
    console.print(table)


async def run(args: argparse.Namespace) -> None:
    configure_logging("json", "WARNING")
    with tempfile.TemporaryDirectory(prefix="oix-bench-") as scratch:
        broker: EmbeddedBroker | None = None
        bootstrap = os.environ.get("OIX_BOOTSTRAP")
        if not bootstrap:
            broker = EmbeddedBroker()
            await broker.start()
            bootstrap = broker.bootstrap
        try:
            settings = Settings(
                bootstrap=bootstrap,
                topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
                data_dir=Path(scratch),
                log_format="json",
                log_level="WARNING",
            )
            exchange = Exchange.from_settings(settings)
            gateway = GatewaySettings(agency=AGENCY, track_acknowledgements=False)
            n = args.reports
            # Every input is made first and frozen: the client's data must not
            # slow the measured code's garbage collections.
            inputs = {
                "codec": reports(1000),
                "raw": reports(n),
                "sdk": reports(n),
                "sdk_many": reports(n),
                "warm": [orjson.dumps(r) for r in reports(500)],
                "single": [orjson.dumps(r) for r in reports(args.http_reports)],
                "paced": [orjson.dumps(r) for r in reports(PACED_RATE * args.paced_seconds)],
                "batch": reports(n),
            }
            gc.collect()
            gc.freeze()
            results: dict[str, Result] = {}
            console.print("codec floor ...")
            results["codec"] = codec_floor(exchange, inputs["codec"], args.seconds)
            console.print("raw aiokafka floor ...")
            results["raw"] = await raw_floor(settings, exchange, bootstrap, inputs["raw"])
            console.print("SDK ...")
            results["sdk"], results["sdk_many"] = await sdk_publish(
                settings, gateway, exchange, inputs["sdk"], inputs["sdk_many"]
            )
            async with gateway_process(settings, bootstrap) as (port, token, pid):
                console.print("HTTP single ...")
                await http_single(port, token, inputs["warm"], args.connections)
                results["single"] = await measured(
                    pid, http_single(port, token, inputs["single"], args.connections)
                )
                console.print(f"HTTP single at {PACED_RATE}/s ...")
                results["paced"] = await measured(
                    pid, http_paced(port, token, inputs["paced"], PACED_RATE)
                )
                console.print("HTTP batch ...")
                results["batch"] = await measured(
                    pid,
                    http_batch(
                        port, token, inputs["batch"], args.batch_size, args.batch_connections
                    ),
                )
            show(results)
        finally:
            if broker is not None:
                await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20_000, help="per SDK/raw/batch run")
    parser.add_argument("--http-reports", type=int, default=6_000, help="HTTP single run")
    parser.add_argument("--connections", type=int, default=32, help="HTTP single connections")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-connections", type=int, default=2)
    parser.add_argument("--paced-seconds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0, help="codec floor duration")
    args = parser.parse_args()
    if args.reports % 1000:
        parser.error("--reports must be a multiple of 1000")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
