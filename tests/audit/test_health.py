"""/healthz of the audit consumer: not ok while a partition or the consume loop is stuck."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import TopicPartition

from services.audit import AuditMetrics, Health, MetricsServer
from services.bus import PartitionStatus, Position


class Following:
    """What Health asks of a follower: each partition's status, and the loop's idle time."""

    def __init__(self, stuck_ms: list[int], idle_ms: int = 0) -> None:
        self.stuck = stuck_ms
        self.idle = idle_ms

    def status(self) -> list[PartitionStatus]:
        return [
            PartitionStatus(TopicPartition("oix.LT-VSAT.incidents", p), 0, Position(), 9, 0, ms)
            for p, ms in enumerate(self.stuck)
        ]

    def idle_ms(self) -> int:
        return self.idle


def health(following: Following) -> Health:
    return Health(consuming=True, stuck_after_ms=5000, follower=following)  # type: ignore[arg-type]


def test_a_partition_stuck_beyond_the_limit_makes_the_consumer_unhealthy() -> None:
    assert health(Following([0, 4999])).report()[0]
    ok, body = health(Following([0, 5000])).report()
    assert not ok
    found = orjson.loads(body)
    assert found["status"] == "unavailable"
    assert found["stuck_partitions"] == ["oix.LT-VSAT.incidents[1]"]
    assert "oix.LT-VSAT.incidents[1]" in found["problem"]


def test_a_consume_loop_that_stopped_fetching_makes_the_consumer_unhealthy() -> None:
    ok, body = health(Following([0], idle_ms=6000)).report()
    assert not ok
    assert orjson.loads(body)["stuck_partitions"] == ["the consume loop (no fetch)"]


def test_a_store_outage_is_said_before_what_it_holds_up() -> None:
    outage = health(Following([9000]))
    outage.store_available = False
    outage.problem = "the audit store is unavailable: refused"
    ok, body = outage.report()
    assert not ok
    assert orjson.loads(body)["problem"] == "the audit store is unavailable: refused"


def test_epochs_begun_in_the_last_minute_are_shown_and_a_loop_is_unhealthy() -> None:
    # Issue 8: the consumer began 20-30 epochs a second and /healthz said ok throughout.
    now = [1000.0]
    checked = Health(
        consuming=True,
        follower=Following([0]),  # type: ignore[arg-type]
        max_epochs_per_minute=3,
        clock=lambda: now[0],
    )
    restart = "oix.LT-VSAT.incidents[0]"
    checked.epoch_started(restart)
    ok, body = checked.report()
    assert ok
    assert orjson.loads(body)["epochs_last_minute"] == {restart: 1}
    for _ in range(3):
        now[0] += 1
        checked.epoch_started("oix.LV-VRS.incidents[2]")
    assert checked.report()[0]  # three in a minute: still a restart's worth
    now[0] += 1
    checked.epoch_started("oix.LV-VRS.incidents[2]")
    ok, body = checked.report()
    assert not ok
    found = orjson.loads(body)
    assert found["epochs_last_minute"] == {restart: 1, "oix.LV-VRS.incidents[2]": 4}
    assert found["problem"] == (
        "more than 3 epochs begun in the last minute on oix.LV-VRS.incidents[2] (4): the "
        "broker keeps serving a log that looks replaced"
    )
    now[0] += 60
    ok, body = checked.report()
    assert ok
    assert orjson.loads(body)["epochs_last_minute"] == {}


async def test_a_scrape_shows_a_hung_loop_and_stuck_partitions_as_they_are_now() -> None:
    # The gauges were set after each fetch only: a loop that stopped fetching froze them.
    metrics = AuditMetrics()
    following = Following([0, 0])
    checked = Health(consuming=True, follower=following)  # type: ignore[arg-type]
    metrics.observe(following)  # type: ignore[arg-type]
    following.stuck, following.idle = [0, 7000], 9500
    server = MetricsServer(metrics, checked, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        text = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()
    assert "oix_audit_fetch_idle_seconds 9.5" in text
    stuck = 'oix_audit_partition_stuck_seconds{partition="1",topic="oix.LT-VSAT.incidents"} 7.0'
    assert stuck in text
