"""The per-partition state machine: anchors, gaps and resets, without a broker."""

from __future__ import annotations

from store_contract import record

from services.audit import GENESIS, EventKind, PartitionHead
from services.audit._batch import Batch
from services.audit._tracker import Mode, PartitionTracker, Seek

T = 1_000_000  # wall clock, ms


def facts(tag: str):
    return tag.encode


def stored_up_to(offset: int, tag: str = "same") -> PartitionHead:
    return PartitionHead(epoch=0, last_offset=offset, last_facts=tag.encode(), chain=b"h" * 32)


def tracker(head: PartitionHead, confirm_ms: int = 1000) -> PartitionTracker:
    made = PartitionTracker("oix.LT-VSAT.incidents", 0, head, confirm_reset_ms=confirm_ms)
    made.seeked(T)
    return made


def offer(t: PartitionTracker, *records: tuple[int, str], now: int = T) -> list[int]:
    """Offer one slice as the consumer does; returns the offsets admitted."""
    admitted = []
    for offset, tag in records:
        if t.admit(offset, facts(tag), now):
            admitted.append(offset)
        elif t.pending_seek is not None:
            break
    t.end_slice()
    return admitted


def test_an_empty_partition_is_read_from_the_beginning_then_anchored() -> None:
    fresh = PartitionTracker("t", 0, PartitionHead(0, None, None, GENESIS), confirm_reset_ms=1000)
    assert (fresh.mode, fresh.pending_seek) == (Mode.FRESH, Seek(None))
    fresh.seeked(T)
    assert offer(fresh, (0, "a"), (1, "b")) == [0, 1]
    assert (fresh.mode, fresh.pending_seek) == (Mode.ANCHORED, Seek(1))
    fresh.seeked(T)
    assert offer(fresh, (1, "b"), (2, "c")) == [2]
    assert fresh.take_events() == []


def test_resuming_anchors_at_the_last_stored_record() -> None:
    resumed = PartitionTracker("t", 0, stored_up_to(41), confirm_reset_ms=1000)
    assert (resumed.mode, resumed.pending_seek) == (Mode.ANCHORED, Seek(41))
    resumed.seeked(T)
    assert offer(resumed, (41, "same"), (42, "next")) == [42]
    assert resumed.pending_seek == Seek(42)
    assert resumed.take_events() == []


def test_an_idle_partition_waits_past_its_anchor_and_rereads_what_arrives_there() -> None:
    idle = tracker(stored_up_to(41))
    assert offer(idle, (41, "same")) == []
    assert (idle.mode, idle.pending_seek) == (Mode.AHEAD, None)
    # Records that arrive without the anchor before them prove nothing: read them again.
    assert offer(idle, (42, "new"), (43, "newer")) == []
    assert (idle.mode, idle.pending_seek) == (Mode.ANCHORED, Seek(41))
    idle.seeked(T)
    assert offer(idle, (41, "same"), (42, "new"), (43, "newer")) == [42, 43]


def test_a_different_record_at_the_anchor_starts_a_new_epoch() -> None:
    # The memory broker restarted and its new log is already longer than the old one.
    replaced = tracker(stored_up_to(41))
    assert offer(replaced, (41, "other"), (42, "x")) == []
    assert (replaced.pending_seek, replaced.epoch) == (Seek(None), 1)
    (event,) = replaced.take_events()
    assert (event.kind, event.epoch, event.last_offset) == (EventKind.LOG_RESET, 1, 41)
    replaced.seeked(T + 1)
    assert offer(replaced, (0, "new log"), (1, "more")) == [0, 1]


def test_a_replaced_log_is_caught_at_the_next_fetch_even_mid_stream() -> None:
    following = tracker(stored_up_to(9))
    assert offer(following, (9, "same"), (10, "a"), (11, "b")) == [10, 11]
    following.seeked(T)
    assert offer(following, (11, "other log"), (12, "c")) == []
    assert following.epoch == 1


def test_an_earlier_offset_than_asked_for_means_the_log_went_backwards() -> None:
    resumed = tracker(stored_up_to(41))
    assert offer(resumed, (0, "x")) == []
    assert resumed.epoch == 1
    assert resumed.take_events()[0].kind is EventKind.LOG_RESET


def test_a_short_log_is_a_reset_only_after_the_confirmation_time() -> None:
    resumed = tracker(stored_up_to(41), confirm_ms=1000)
    resumed.observe_highwater(10, T + 100, T + 100)
    resumed.observe_highwater(10, T + 900, T + 900)
    assert (resumed.epoch, resumed.pending_seek) == (0, None)
    resumed.observe_highwater(10, T + 1100, T + 1100)
    assert (resumed.epoch, resumed.pending_seek) == (1, Seek(None))


def test_a_high_watermark_that_recovers_is_no_reset() -> None:
    # Apache Kafka: a new leader's high watermark can lag for a moment.
    resumed = tracker(stored_up_to(41), confirm_ms=1000)
    resumed.observe_highwater(30, T + 100, T + 100)
    resumed.observe_highwater(42, T + 600, T + 600)
    resumed.observe_highwater(30, T + 1200, T + 1200)
    assert resumed.epoch == 0
    assert offer(resumed, (41, "same"), (42, "n"), now=T + 1300) == [42]
    assert resumed.take_events() == []


def test_a_log_ending_before_an_idle_anchor_is_read_again_from_it() -> None:
    idle = tracker(stored_up_to(41), confirm_ms=1000)
    offer(idle, (41, "same"))
    idle.observe_highwater(42, T + 10, T + 10)
    assert idle.mode is Mode.AHEAD
    idle.observe_highwater(5, T + 20, T + 20)
    assert (idle.mode, idle.pending_seek) == (Mode.ANCHORED, Seek(41))


def test_answers_older_than_the_seek_are_ignored() -> None:
    resumed = tracker(stored_up_to(41), confirm_ms=0)
    resumed.observe_highwater(5, T - 1, T + 5000)
    assert resumed.epoch == 0


def test_offsets_that_jump_forward_are_recorded_as_a_gap() -> None:
    following = tracker(stored_up_to(9))
    assert offer(following, (9, "same"), (10, "a"), (14, "b")) == [10, 14]
    (gap,) = following.take_events()
    assert (gap.kind, gap.first_offset, gap.last_offset, gap.epoch) == (
        EventKind.OFFSET_GAP,
        11,
        13,
        0,
    )


def test_an_anchor_gone_from_the_log_start_is_no_loss_but_more_is() -> None:
    just_gone = tracker(stored_up_to(9))
    assert offer(just_gone, (10, "a")) == [10]
    assert just_gone.take_events() == []
    after_retention = tracker(stored_up_to(9))
    assert offer(after_retention, (15, "a")) == [15]
    (gap,) = after_retention.take_events()
    assert (gap.first_offset, gap.last_offset) == (10, 14)


def test_records_are_refused_while_a_seek_is_pending() -> None:
    resumed = PartitionTracker("t", 0, stored_up_to(9), confirm_reset_ms=1000)
    assert not resumed.admit(9, facts("same"), T)
    assert not resumed.admit(10, facts("x"), T)


def test_a_batch_is_due_by_count_bytes_or_age() -> None:
    by_count = Batch(max_records=2, max_bytes=10**9, max_ms=10**6)
    by_count.add([record(0)])
    assert not by_count.due
    by_count.add([record(1)])
    assert by_count.due
    by_bytes = Batch(max_records=100, max_bytes=300, max_ms=10**6)
    by_bytes.add([record(0)])
    assert by_bytes.due
    by_age = Batch(max_records=100, max_bytes=10**9, max_ms=0)
    assert not by_age.due
    by_age.add([record(0)])
    assert by_age.due
    by_age.drop({(record(0).topic, 0)})
    assert by_age.empty
    assert not by_age.due
