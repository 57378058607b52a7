"""The consume loop's batch: due by count, bytes or age; what is dropped is gone."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import TopicPartition

from services.bus import Batch, BatchLimits, LogEvent, LogEventKind, Position

TP = TopicPartition("oix.LT-VSAT.incidents", 0)
OTHER = TopicPartition("oix.LT-VSAT.incidents", 1)


def batch(max_records: int = 100, max_bytes: int = 10**9, max_ms: int = 10**6) -> Batch[bytes]:
    return Batch(BatchLimits(max_records, max_bytes, max_ms), weight=lambda item: len(item) + 256)


def test_a_batch_is_due_by_count_bytes_or_age() -> None:
    by_count = batch(max_records=2)
    by_count.add(TP, [b"0"])
    assert not by_count.due
    by_count.add(TP, [b"1"])
    assert by_count.due
    by_bytes = batch(max_bytes=300)
    by_bytes.add(TP, [b"x" * 50])
    assert by_bytes.due
    by_age = batch(max_ms=0)
    assert not by_age.due
    by_age.add(TP, [b"0"])
    assert by_age.due
    by_age.drop({TP})
    assert by_age.empty
    assert not by_age.due


def test_dropping_partitions_keeps_the_others_with_their_positions() -> None:
    reset = LogEvent(OTHER.topic, 1, 1, LogEventKind.LOG_RESET, None, 3, "x", datetime.now(UTC))
    mixed = batch()
    mixed.add(TP, [b"a", b"b"], position=Position.after(1, b"d"))
    mixed.add(OTHER, [], [reset], Position.start(1))
    mixed.add(TP, [b"c"], position=Position.after(2, b"e"))
    assert mixed.partitions() == {TP, OTHER}
    assert mixed.positions == {TP: Position.after(2, b"e"), OTHER: Position.start(1)}
    assert mixed.drop({OTHER}) == 0
    assert (mixed.items, mixed.events, mixed.positions) == (
        [b"a", b"b", b"c"],
        [],
        {TP: Position.after(2, b"e")},
    )
    assert mixed.drop({TP}) == 3
    assert mixed.empty
