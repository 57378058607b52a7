"""/healthz of the audit consumer: not ok while a partition or the consume loop is stuck."""

from __future__ import annotations

import orjson
from aiokafka import TopicPartition

from services.audit import Health
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
