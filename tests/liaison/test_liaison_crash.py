"""``oix liaison run`` killed with SIGKILL mid-stream loses nothing and stores nothing twice;
a broker that restarts (the memory broker forgets everything) is noticed and said.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from liaison_support import liaison_settings, lt_incident, produce_raw, running_liaison, signed_in
from polling import eventually

from services.bus import EmbeddedBroker, Exchange, SealedReport, Settings, ensure_topics, free_port
from services.liaison import LiaisonStore
from services.liaison._views import EventQuery, Views

LV = "LV-VRS"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]
OIX = Path(sys.executable).parent / "oix"
TOTAL = 1500
KILLS = 3


def _environment(settings: Settings, tmp_path: Path, port: int) -> dict[str, str]:
    assert settings.bootstrap is not None
    return {
        **os.environ,
        "OIX_BOOTSTRAP": settings.bootstrap,
        "OIX_TOPIC_PREFIX": settings.topic_prefix,
        "OIX_DATA_DIR": str(tmp_path),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_LIAISON_PORT": str(port),
        "OIX_LIAISON_SESSION_TIMEOUT_MS": "2000",
        "OIX_LIAISON_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_LIAISON_REBALANCE_TIMEOUT_MS": "2000",
        "OIX_LIAISON_METADATA_MAX_AGE_MS": "500",
        "OIX_LIAISON_BATCH_MAX_RECORDS": "100",
        "OIX_LIAISON_OPEN_PROCESSES": "1",
    }


@pytest.mark.slow
async def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    port = free_port()
    env = _environment(settings, tmp_path, port)
    sealer = exchange.sealer("LT-VSAT")
    sealed: list[SealedReport] = [sealer.seal(lt_incident(ALL_READERS)) for _ in range(TOTAL)]
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    log = tmp_path / "liaison.log"

    async def start() -> asyncio.subprocess.Process:
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                str(OIX),
                "liaison",
                "run",
                "--as",
                LV,
                "--migrate",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

        async def ready() -> bool:
            assert process.returncode is None, log.read_text()[-3000:]
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(
            ready, lambda: f"the liaison to be ready:\n{log.read_text()[-3000:]}", timeout=60
        )
        return process

    url = f"sqlite+aiosqlite:///{tmp_path / 'liaison' / f'liaison-{LV}.db'}"
    # As provisioning does: the group's first assignment then holds the topic's partitions.
    await ensure_topics(settings, settings.bootstrap or "", exchange.router.readable_by(LV))
    process = await start()
    chunk = TOTAL // (KILLS + 1)
    try:
        for kill in range(KILLS):
            # Counted before the chunk is written: the liaison may store all of it before
            # a count taken after could see it grow.
            store = await LiaisonStore.open(url)
            try:
                before = await Views(store).message_count(LV)
                await produce_raw(
                    settings.bootstrap or "", topic, sealed[kill * chunk : (kill + 1) * chunk]
                )
                # Kill it while it is still storing what was just written.
                await eventually(
                    functools.partial(_count_above, store, before),
                    "the liaison to store some",
                    timeout=60,
                )
            finally:
                await store.close()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            process = await start()
        await produce_raw(settings.bootstrap or "", topic, sealed[KILLS * chunk :])
        store = await LiaisonStore.open(url)
        try:
            views = Views(store)

            async def everything() -> bool:
                return await views.message_count(LV) == TOTAL

            await eventually(everything, "every report stored", timeout=90)
            changes = await views.changes(LV, 0, 10 * TOTAL)
            events = await views.events(LV, EventQuery(limit=500), 0)
        finally:
            await store.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0, log.read_text()[-3000:]
    assert [c.seq for c in changes] == list(range(1, TOTAL + 1))
    assert sorted(c.message_id for c in changes) == sorted(s.message_id for s in sealed)
    assert len(events.items) == 500  # one event per report (a page of them)


async def _count_above(store: LiaisonStore, before: int) -> bool:
    return await Views(store).message_count(LV) > before


async def test_a_restarted_broker_is_noticed_and_said(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    port = free_port()
    own = settings.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    sealer = exchange.sealer("LT-VSAT")
    before = [sealer.seal(lt_incident(ALL_READERS)) for _ in range(5)]
    after = [sealer.seal(lt_incident(ALL_READERS)) for _ in range(8)]
    broker = EmbeddedBroker(port=port)
    await broker.start()
    await ensure_topics(own, own.bootstrap or "", [topic])
    try:
        async with (
            running_liaison(own, liaison_settings(tmp_path, LV), exchange) as lv,
            signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
        ):
            # All on partition 0, and none there after the restart: its new log is
            # shorter than the position kept (a log that went backwards, whatever the
            # timing); a replaced log of the very same length is only found by its anchor
            # once more records come.
            await produce_raw(own.bootstrap or "", topic, before, partitions=[0])

            async def stored(count: int) -> bool:
                page = (await client.get("/v1/reports", params={"limit": "100"})).json()
                return len(page["items"]) == count

            await eventually(lambda: stored(5), "the first five")
            await broker.stop()
            broker = EmbeddedBroker(port=port)
            await broker.start()
            # Writes to a topic the restarted broker is still re-creating can be acknowledged
            # and then lost (DESIGN.md, "Known limits"): create it first.
            await ensure_topics(own, own.bootstrap or "", [topic])
            await produce_raw(own.bootstrap or "", topic, after, partitions=[1, 2, 3])
            await eventually(
                lambda: stored(13),
                lambda: f"the eight after the restart; {lv.service.consumer.follower.status()}",
                timeout=90,
            )

            async def said() -> list[dict]:
                alerts = (await client.get("/v1/alerts")).json()["items"]
                return [a for a in alerts if a["kind"] == "log_reset"]

            resets = await eventually(said, "a log_reset alert")
            assert "went backwards" in resets[0]["detail"]

            async def new_epoch() -> bool:
                status = (await client.get("/v1/status")).json()
                return status["log_resets"] >= 1 and any(
                    p["epoch"] >= 1 for p in status["partitions"]
                )

            # (Eventually: the restarted broker makes the group rebalance once more.)
            await eventually(new_epoch, "the status to show the new epoch")
    finally:
        await broker.stop()
