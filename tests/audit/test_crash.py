"""Crash safety: ``oix audit run`` killed with SIGKILL at random moments while 50,000 records flow.

Every record must end up in the store exactly once, with no gap and every
hash chain intact, on SQLite and on PostgreSQL (there as a role that may only
INSERT and SELECT). The seed of the random kill moments is in the failure
message; set ``OIX_TEST_SEED`` to replay a run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sys
import time
from pathlib import Path

import pytest
from audit_support import incident, produce, producer_for, sealed_incidents
from kafka_support import read_topics
from polling import eventually
from postgres_support import as_role

from services.audit import AuditStore, Verifier, grant, migrate, read_broker_view
from services.bus import Exchange, SealedReport, Settings

TOTAL = 50_000
KILLS_MID_STREAM = 5
KILLS_AT_START = 2
OIX = Path(sys.executable).parent / "oix"


@functools.cache
def _sealed(exchange_key: str) -> list[SealedReport]:
    # Signing 50,000 reports takes seconds; both backends replay the same ones.
    del exchange_key
    return sealed_incidents(Exchange.from_settings(Settings()), TOTAL, keys=64)


def _environment(settings: Settings, url: str, tmp_path: Path) -> dict[str, str]:
    assert settings.bootstrap is not None
    return {
        **os.environ,
        "OIX_BOOTSTRAP": settings.bootstrap,
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_AGREEMENT": str(settings.agreement),
        "OIX_KEYS_DIR": str(settings.keys_dir),
        "OIX_SCHEMAS_DIR": str(settings.schemas_dir),
        "OIX_DATA_DIR": str(tmp_path),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_AUDIT_DATABASE_URL": url,
        "OIX_AUDIT_METRICS_PORT": "0",
        "OIX_AUDIT_SESSION_TIMEOUT_MS": "2000",
        "OIX_AUDIT_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_AUDIT_REBALANCE_TIMEOUT_MS": "2000",
        "OIX_AUDIT_METADATA_MAX_AGE_MS": "500",
        "OIX_AUDIT_BATCH_MAX_RECORDS": "500",
    }


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class AuditProcess:
    """``oix audit run`` as a real process of its own."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.runs = 0
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.runs += 1
        log = (self.logs / f"audit-{self.runs}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            str(OIX),
            "audit",
            "run",
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def log_tail(self) -> str:
        return (self.logs / f"audit-{self.runs}.log").read_text(errors="replace")[-3000:]

    async def kill(self) -> None:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"the audit process had exited by itself:\n{self.log_tail()}")
        workers = _children(self.process.pid)
        self.process.kill()
        assert await self.process.wait() == -9
        # Its worker processes notice that their parent is gone and exit too.
        await eventually(
            lambda: not any(_running(pid) for pid in workers),
            lambda: f"worker processes {[p for p in workers if _running(p)]} to exit",
            timeout=10,
        )

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


@pytest.mark.slow
async def test_kill_9_on_sqlite_loses_nothing_and_stores_nothing_twice(
    settings: Settings, exchange: Exchange, sqlite_url: str, tmp_path: Path
) -> None:
    await migrate(sqlite_url)
    await _crash_again_and_again(settings, exchange, sqlite_url, sqlite_url, tmp_path)


@pytest.mark.slow
async def test_kill_9_on_postgresql_loses_nothing_and_stores_nothing_twice(
    settings: Settings, exchange: Exchange, pg_url: str, pg_role: str, tmp_path: Path
) -> None:
    await migrate(pg_url)
    await grant(pg_url, pg_role)
    service_url = as_role(pg_url, pg_role)
    await _crash_again_and_again(settings, exchange, pg_url, service_url, tmp_path)


async def _crash_again_and_again(
    settings: Settings, exchange: Exchange, url: str, service_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("OIX_TEST_SEED", str(time.time_ns())))
    rng = random.Random(seed)
    replay = f"(replay with OIX_TEST_SEED={seed})"
    sealed = _sealed("default")
    _, topic = incident(exchange)
    store = await AuditStore.open(url)
    audit = AuditProcess(_environment(settings, service_url, tmp_path), tmp_path)
    producer = await producer_for(settings)

    async def feed() -> None:
        # A steady stream of about 5,000 records a second, for ten seconds.
        for start in range(0, TOTAL, 500):
            await produce(producer, topic, sealed[start : start + 500])
            await asyncio.sleep(0.1)

    feeding = asyncio.create_task(feed())
    try:
        moments = ["start"] * KILLS_AT_START + ["mid-stream"] * KILLS_MID_STREAM
        rng.shuffle(moments)
        for moment in moments:
            await audit.start()
            if moment == "start":
                # Any instant of the start: imports, schema check, group join, first seeks.
                await asyncio.sleep(rng.uniform(0.0, 2.5))
            else:
                await _until_it_stores(store, audit, replay)
                # Somewhere inside the stream of batches: fetching, opening, writing, committing.
                await asyncio.sleep(rng.uniform(0.0, 0.6))
            await audit.kill()
        await feeding
        await audit.start()
        stored = [0]

        async def all_stored() -> bool:
            stored[0] = await store.count()
            return stored[0] >= TOTAL

        await eventually(
            all_stored, lambda: f"all records stored (stuck at {stored[0]}) {replay}", timeout=180
        )
        assert await audit.terminate() == 0, audit.log_tail()
        await _everything_exactly_once(settings, exchange, store, topic, sealed, replay=replay)
    finally:
        if not feeding.done():
            feeding.cancel()
        await producer.stop()
        if audit.process is not None and audit.process.returncode is None:
            audit.process.kill()
            await audit.process.wait()
        await store.close()


async def _until_it_stores(store: AuditStore, audit: AuditProcess, replay: str) -> None:
    before = await store.count()
    await eventually(
        lambda: _count_at_least(store, before + 1),
        lambda: f"progress {replay}\n{audit.log_tail()}",
        timeout=60,
        interval=0.02,
    )


async def _count_at_least(store: AuditStore, count: int) -> bool:
    return await store.count() >= count


async def _everything_exactly_once(
    settings: Settings,
    exchange: Exchange,
    store: AuditStore,
    topic: str,
    sealed: list[SealedReport],
    *,
    replay: str,
) -> None:
    assert settings.bootstrap is not None
    broker = await read_broker_view(
        settings, settings.bootstrap, exchange.naming, f"{settings.topic_prefix}.audit"
    )
    report = await Verifier(store, None).run(broker)
    assert report.ok, f"{report.findings[:5]} {replay}"
    assert report.lag == 0, replay
    on_broker = await read_topics(settings.bootstrap, [topic], expected=TOTAL)
    stored = {}
    for partition in sorted(number for (_, number) in broker):
        after = None
        while chunk := await store.scan(topic, partition, after, 10_000):
            stored.update({(r.kafka_partition, r.kafka_offset): r for r in chunk})
            after = (chunk[-1].epoch, chunk[-1].kafka_offset)
    assert report.rows == len(on_broker) == len(stored), replay
    assert {(r.partition, r.offset): r.value for r in on_broker} == {
        where: r.value for where, r in stored.items()
    }, replay
    assert {r.message_id for r in stored.values()} == {s.message_id for s in sealed}, replay
    assert {r.epoch for r in stored.values()} == {0}, replay
