"""The per-partition decisions of the follower: anchors, gaps, resets and repeats, without a broker.

The first tests take one slice at a time. The ones after "whatever the broker
serves" drive a :class:`Continuity` the way the follower does against a
simulated log that serves what the local broker has been seen to serve after a
restart under load (``0, 1, 2, 2, 3``, offsets going backwards, skipped
offsets), for many rounds, and check that it makes progress, stores no offset
twice in an epoch and enters no epoch twice for one anomaly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from services.bus import Continuity, LogEventKind, PartitionHistory, Position
from services.bus._continuity import RECENT, Mode, Seek, admit_slice

T = 1_000_000  # wall clock, ms


def facts(tag: str):
    return tag.encode


def stored_up_to(offset: int, tag: str = "same") -> Position:
    return Position.after(offset, tag.encode())


def fresh(position: Position, confirm_ms: int = 1000) -> Continuity:
    return Continuity(
        "oix.LT-VSAT.incidents",
        0,
        position,
        confirm_reset_ms=confirm_ms,
        history=PartitionHistory(T),
    )


def tracker(position: Position, confirm_ms: int = 1000) -> Continuity:
    made = fresh(position, confirm_ms)
    made.seeked(T)
    return made


def digests(records: Sequence[tuple[int, str]]) -> Callable[[int], Callable[[], bytes]]:
    """The digest of each of ``records`` by index, as :func:`admit_slice` asks for them."""
    return lambda i: facts(records[i][1])


def offer(t: Continuity, *records: tuple[int, str], now: int = T) -> list[int]:
    """Offer one slice as the follower does; returns the offsets admitted."""
    kept = admit_slice(t, [o for o, _ in records], digests(records), now)
    return [records[i][0] for i in kept]


def offer_one_by_one(t: Continuity, records: list[tuple[int, str]], now: int) -> list[int]:
    """Offer one slice record by record (what :func:`admit_slice` must agree with)."""
    kept = []
    for index, (offset, tag) in enumerate(records):
        if t.admit(offset, facts(tag), now):
            kept.append(index)
        elif t.pending_seek is not None:
            break
    t.end_slice()
    return kept


# -- one slice at a time (the audit tracker's tests, moved) ------------------------------------


def test_an_empty_partition_is_read_from_the_beginning_then_anchored() -> None:
    empty = fresh(Position.start())
    assert (empty.mode, empty.pending_seek) == (Mode.FRESH, Seek(None))
    empty.seeked(T)
    assert offer(empty, (0, "a"), (1, "b")) == [0, 1]
    assert (empty.mode, empty.pending_seek) == (Mode.ANCHORED, Seek(1))
    assert empty.position == Position.after(1, b"b")
    empty.seeked(T)
    assert offer(empty, (1, "b"), (2, "c")) == [2]
    assert empty.take_events() == []


def test_resuming_anchors_at_the_last_stored_record() -> None:
    resumed = fresh(stored_up_to(41))
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
    # First, read again from before the anchor: is it there, among records at its offset?
    assert (replaced.mode, replaced.pending_seek, replaced.epoch) == (Mode.PROBING, Seek(40), 0)
    replaced.seeked(T)
    assert offer(replaced, (40, "o"), (41, "other"), (42, "x")) == []
    assert (replaced.pending_seek, replaced.epoch) == (Seek(None), 1)
    (event,) = replaced.take_events()
    assert (event.kind, event.epoch, event.last_offset) == (LogEventKind.LOG_RESET, 1, 41)
    assert replaced.position == Position.start(1)
    replaced.seeked(T + 1)
    assert offer(replaced, (0, "new log"), (1, "more")) == [0, 1]


def test_a_replaced_log_is_caught_at_the_next_fetch_even_mid_stream() -> None:
    following = tracker(stored_up_to(9))
    assert offer(following, (9, "same"), (10, "a"), (11, "b")) == [10, 11]
    following.seeked(T)
    assert offer(following, (11, "other log"), (12, "c")) == []
    assert following.pending_seek == Seek(9)  # where the anchor's own slice began
    following.seeked(T)
    assert offer(following, (9, "x"), (10, "y"), (11, "other log"), (12, "c")) == []
    assert following.epoch == 1


def test_an_earlier_offset_than_asked_for_means_the_log_went_backwards() -> None:
    resumed = tracker(stored_up_to(41))
    assert offer(resumed, (0, "x")) == []
    assert resumed.epoch == 1
    assert resumed.take_events()[0].kind is LogEventKind.LOG_RESET


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


def test_offsets_that_jump_forward_twice_are_recorded_as_a_gap() -> None:
    following = tracker(stored_up_to(9))
    # The first time, the jump is read again from the last record admitted before it.
    assert offer(following, (9, "same"), (10, "a"), (14, "b")) == [10]
    assert (following.pending_seek, following.take_events()) == (Seek(10), [])
    following.seeked(T)
    assert offer(following, (10, "a"), (14, "b")) == [14]
    (gap,) = following.take_events()
    assert (gap.kind, gap.first_offset, gap.last_offset, gap.epoch) == (
        LogEventKind.OFFSET_GAP,
        11,
        13,
        0,
    )


def test_an_anchor_gone_from_the_log_start_is_no_loss_but_more_is() -> None:
    just_gone = tracker(stored_up_to(9))
    assert offer(just_gone, (10, "a")) == [10]
    assert just_gone.take_events() == []
    after_retention = tracker(stored_up_to(9))
    assert offer(after_retention, (15, "a")) == []
    after_retention.seeked(T)
    assert offer(after_retention, (15, "a")) == [15]
    (gap,) = after_retention.take_events()
    assert (gap.first_offset, gap.last_offset) == (10, 14)


def test_records_are_refused_while_a_seek_is_pending() -> None:
    resumed = fresh(stored_up_to(9))
    assert not resumed.admit(9, facts("same"), T)
    assert not resumed.admit(10, facts("x"), T)


def test_a_position_without_an_anchor_resumes_at_its_offset() -> None:
    unproven = fresh(Position.at(5))
    assert (unproven.mode, unproven.pending_seek) == (Mode.RESUMED, Seek(5))
    unproven.seeked(T)
    assert offer(unproven, (5, "a"), (6, "b")) == [5, 6]
    assert unproven.position == Position.after(6, b"b")
    short = tracker(Position.at(5), confirm_ms=0)
    short.observe_highwater(3, T + 1, T + 1)
    assert (short.epoch, short.pending_seek) == (1, Seek(None))
    (reset,) = short.take_events()
    assert (reset.kind, reset.last_offset) == (LogEventKind.LOG_RESET, 4)


# -- whatever the broker serves -----------------------------------------------------------------


@dataclass
class ServedLog:
    """What a broker serves, in order: (offset, tag) pairs, repeats and skips included.

    A fetch from an offset serves ``page`` entries from the first entry at or
    after that offset, as a Kafka client does (it drops records before the
    offset it asked for, only at the start of a response). ``skip_once``
    offsets are left out of the first response that would hold them.
    """

    entries: list[tuple[int, str]]
    page: int = 3
    skip_once: set[int] = field(default_factory=set)

    @property
    def highwater(self) -> int:
        return max(offset for offset, _ in self.entries) + 1

    def fetch(self, position: int | None) -> list[tuple[int, str]]:
        start = 0
        if position is not None:
            start = next(
                (i for i, (offset, _) in enumerate(self.entries) if offset >= position),
                len(self.entries),
            )
        served = []
        for offset, tag in self.entries[start:]:
            if offset in self.skip_once:
                self.skip_once.discard(offset)
                continue
            served.append((offset, tag))
            if len(served) == self.page:
                break
        return served


@dataclass
class Followed:
    """What a simulated follower did: every record admitted, every event."""

    admitted: list[tuple[int, int, str]] = field(default_factory=list)
    events: list = field(default_factory=list)

    def offsets(self, epoch: int) -> list[int]:
        return [offset for e, offset, _ in self.admitted if e == epoch]

    def of(self, kind: LogEventKind) -> list:
        return [e for e in self.events if e.kind is kind]


class Served(Protocol):
    @property
    def highwater(self) -> int: ...
    def fetch(self, position: int | None) -> list[tuple[int, str]]: ...


def follow(
    served: Served,
    start: Position,
    rounds: int = 200,
    grow: Callable[[int], None] | None = None,
    *,
    one_by_one: bool = False,
) -> tuple[Continuity, Followed]:
    """Drive a continuity over ``served`` for ``rounds`` fetches, as the follower does.

    ``one_by_one``: offer every record alone, never a consecutive run at once.
    """
    state = fresh(start, confirm_ms=0)
    done = Followed()
    position: int | None = None
    for step in range(rounds):
        now = T + step
        if grow is not None:
            grow(step)
        if state.pending_seek is not None:
            position = state.pending_seek.offset
            state.seeked(now)
        records = served.fetch(position)
        if one_by_one:
            kept = offer_one_by_one(state, records, now)
        else:
            kept = admit_slice(state, [o for o, _ in records], digests(records), now)
        done.admitted.extend((state.epoch, *records[i]) for i in kept)
        if records:
            position = records[-1][0] + 1
        state.observe_highwater(served.highwater, now, now)
        done.events.extend(state.take_events())
    return state, done


def _no_offset_twice_in_an_epoch(done: Followed) -> None:
    keys = [(epoch, offset) for epoch, offset, _ in done.admitted]
    assert len(keys) == len(set(keys)), "an offset was admitted twice in one epoch"


def test_an_offset_served_twice_in_one_fetch_is_noted_once_and_the_first_kept() -> None:
    served = ServedLog([(0, "a"), (1, "b"), (2, "c"), (2, "c2"), (3, "d"), (4, "e")], page=10)
    state, done = follow(served, Position.start())
    assert state.epoch == 0
    assert done.admitted == [(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (0, 3, "d"), (0, 4, "e")]
    (repeat,) = done.events
    assert (repeat.kind, repeat.epoch, repeat.first_offset, repeat.last_offset) == (
        LogEventKind.OFFSET_REPEATED,
        0,
        2,
        2,
    )
    assert b"c".hex() in repeat.detail
    assert b"c2".hex() in repeat.detail


def test_offsets_going_backwards_in_one_fetch_are_noted_and_passed() -> None:
    served = ServedLog(
        [(0, "a"), (1, "b"), (2, "c"), (1, "b"), (2, "c"), (3, "d"), (4, "e")], page=10
    )
    state, done = follow(served, Position.start())
    assert state.epoch == 0
    assert done.offsets(0) == [0, 1, 2, 3, 4]
    repeats = done.of(LogEventKind.OFFSET_REPEATED)
    assert [(e.first_offset, "nothing lost" in e.detail) for e in repeats] == [
        (1, True),
        (2, True),
    ]
    assert done.of(LogEventKind.LOG_RESET) == []


def test_a_repeat_at_the_end_of_a_fetch_begins_no_epoch() -> None:
    # Fetches end right after the first record at offset 2; read from 2, the broker
    # serves the other record at 2 first. Read again from before 2, the stored record
    # is there: a repeated offset, not a replaced log.
    entries = [(0, "a"), (1, "b"), (2, "c"), (2, "c2"), (3, "d"), (4, "e")]

    class OtherFirst(ServedLog):
        def fetch(self, position: int | None) -> list[tuple[int, str]]:
            if position == 2:  # the anomaly's offset
                return [(2, "c2"), (3, "d"), (4, "e")]
            return super().fetch(position)

    state, done = follow(OtherFirst(entries), Position.start())
    assert done.of(LogEventKind.LOG_RESET) == []
    assert state.epoch == 0
    assert done.offsets(0) == [0, 1, 2, 3, 4]
    assert [r[2] for r in done.admitted if r[1] == 2] == ["c"]  # the first kept
    (repeat,) = done.of(LogEventKind.OFFSET_REPEATED)
    assert (repeat.epoch, repeat.first_offset) == (0, 2)
    assert b"c2".hex() in repeat.detail
    _no_offset_twice_in_an_epoch(done)


def test_a_skipped_offset_is_read_again_not_called_a_gap() -> None:
    # The local broker has served 998, 1000 while it held 999: read again, 999 is there.
    served = ServedLog([(i, f"r{i}") for i in range(8)], page=10, skip_once={3})
    state, done = follow(served, Position.start())
    assert done.offsets(0) == list(range(8))
    assert done.events == []
    assert state.position.next_offset == 8


def test_an_offset_missing_at_every_read_is_one_gap() -> None:
    served = ServedLog([(0, "a"), (1, "b"), (2, "c"), (4, "e"), (5, "f")], page=10)
    state, done = follow(served, Position.start())
    assert done.offsets(0) == [0, 1, 2, 4, 5]
    (gap,) = done.events
    assert (gap.kind, gap.first_offset, gap.last_offset) == (LogEventKind.OFFSET_GAP, 3, 3)
    assert state.epoch == 0


def test_a_replaced_log_begins_one_epoch_and_is_then_followed() -> None:
    served = ServedLog([(i, f"new{i}") for i in range(60)], page=7)
    state, done = follow(served, stored_up_to(41, "old"))
    (reset,) = done.events
    assert (reset.kind, reset.epoch, reset.last_offset) == (LogEventKind.LOG_RESET, 1, 41)
    assert done.offsets(0) == []
    assert done.offsets(1) == list(range(60))
    assert state.epoch == 1


def test_a_log_ending_below_the_anchor_begins_one_epoch() -> None:
    served = ServedLog([(i, f"new{i}") for i in range(10)], page=4)
    state, done = follow(served, stored_up_to(41))
    assert [e.kind for e in done.events] == [LogEventKind.LOG_RESET]
    assert "below the stored offset" in done.events[0].detail
    assert done.offsets(1) == list(range(10))
    assert state.epoch == 1


def test_a_log_that_keeps_serving_the_same_anomaly_never_loops() -> None:
    # Every kind of trouble at once, served again at every fetch for 500 fetches.
    entries = [(0, "a"), (1, "b"), (2, "c"), (2, "c2"), (1, "b"), (3, "d"), (5, "f"), (6, "g")]
    state, done = follow(ServedLog(entries, page=4), Position.start(), rounds=500)
    assert state.epoch <= 1
    assert state.history.epochs_started == state.epoch
    _no_offset_twice_in_an_epoch(done)
    assert done.offsets(state.epoch)[-2:] == [5, 6]
    assert len(done.of(LogEventKind.OFFSET_GAP)) == 1
    kinds = [(e.kind, e.epoch, e.first_offset) for e in done.events]
    assert len(kinds) == len(set(kinds)), "an anomaly was recorded twice"


@dataclass
class BatchedLog:
    """A log of record batches kept in the order they were written, as the local broker keeps it.

    After a restart under load it has written batches whose header counts one
    record fewer than the batch holds, and given the next batch the offset of
    that last record again: two records at one offset. A fetch from an offset
    starts at the first batch whose header range holds it; the client then drops
    records before the offset it has reached, moving to each batch's header end
    after it, so both records at such an offset come out of a fetch from before
    it, and a fetch from that offset starts with the later one.
    """

    batches: list[tuple[int, int, list[tuple[int, str]]]] = field(default_factory=list)
    page: int = 4
    """Batches per fetch response."""
    end: int = 0

    def write(self, count: int, *, short_header: bool) -> None:
        base = self.end
        records = [(base + i, f"r{base + i}-{len(self.batches)}") for i in range(count)]
        header_end = base + count - (1 if short_header and count > 1 else 0)
        self.batches.append((base, header_end, records))
        self.end = header_end

    @property
    def highwater(self) -> int:
        return self.end

    def fetch(self, position: int | None) -> list[tuple[int, str]]:
        wanted = 0 if position is None else position
        first = next(
            (i for i, (base, end, _) in enumerate(self.batches) if base <= wanted < end),
            next((i for i, (base, _, _) in enumerate(self.batches) if base >= wanted), None),
        )
        if first is None:
            return []
        served, reached = [], wanted
        for _, header_end, records in self.batches[first : first + self.page]:
            for offset, tag in records:
                if offset >= reached:
                    served.append((offset, tag))
                    reached = offset + 1
            reached = header_end
        return served

    def first_records(self) -> dict[int, str]:
        """The record a reader from the start meets first at each offset."""
        kept: dict[int, str] = {}
        for offset, tag in self.fetch_all():
            kept.setdefault(offset, tag)
        return kept

    def fetch_all(self) -> list[tuple[int, str]]:
        page, self.page = self.page, len(self.batches)
        try:
            return self.fetch(None)
        finally:
            self.page = page


def test_offsets_handed_out_twice_while_the_log_grows_begin_no_epoch() -> None:
    # What the broker served after a restart under load: many offsets held twice,
    # written while the consumer reads. Every record a reader meets first is kept,
    # once; every other one is noted; no epoch begins.
    chance = random.Random(9)
    served = BatchedLog()

    def grow(step: int) -> None:
        if step < 150:
            for _ in range(2):
                served.write(chance.randint(1, 5), short_header=chance.random() < 0.3)

    state, done = follow(served, Position.start(), rounds=400, grow=grow)
    assert state.epoch == 0
    assert done.of(LogEventKind.LOG_RESET) == []
    _no_offset_twice_in_an_epoch(done)
    kept = served.first_records()
    assert {offset: tag for _, offset, tag in done.admitted} == kept
    assert state.position.next_offset == served.highwater
    twice = {o for o in kept if sum(1 for off, _ in served.fetch_all() if off == o) > 1}
    assert twice, "the simulated log holds no repeated offset"
    assert {e.first_offset for e in done.of(LogEventKind.OFFSET_REPEATED)} == twice


def test_a_replaced_log_is_still_one_epoch_when_offsets_are_held_twice() -> None:
    served = BatchedLog()
    for i in range(30):
        served.write(3, short_header=i % 3 == 0)
    state, done = follow(served, stored_up_to(40, "the old log"), rounds=200)
    assert state.epoch == 1
    assert len(done.of(LogEventKind.LOG_RESET)) == 1
    assert {offset: tag for e, offset, tag in done.admitted if e == 1} == served.first_records()


# -- progress ---------------------------------------------------------------------------------


def test_a_partition_not_advancing_while_the_log_grows_is_stuck() -> None:
    history = PartitionHistory(T)
    history.highwater = 10
    history.advanced(3, T + 100)
    assert history.stuck_ms(3, T + 5100) == 5000
    # Reading the same records again (in another epoch) is no progress.
    history.advanced(2, T + 6000)
    assert history.stuck_ms(2, T + 7100) == 7000
    history.advanced(4, T + 8000)
    assert history.stuck_ms(4, T + 8000) == 0
    # Caught up with the log is never stuck, however long it idles.
    history.advanced(10, T + 9000)
    assert history.stuck_ms(10, T + 99_000) == 0


def test_the_history_counts_epochs_started() -> None:
    state, _ = follow(ServedLog([(0, "x")], page=2), stored_up_to(41))
    assert state.history.epochs_started == 1


def test_a_record_served_past_the_high_watermark_begins_no_epoch() -> None:
    # The last batch's header ends before its last record: the broker's high watermark
    # says the log ends before a record it served. Not a log that went backwards.
    served = BatchedLog()
    for _ in range(5):
        served.write(4, short_header=False)
    served.write(4, short_header=True)
    state, done = follow(served, Position.start(), rounds=300)
    assert (state.epoch, done.events) == (0, [])
    assert done.offsets(0) == list(range(24))
    assert state.position.next_offset == served.highwater + 1


def test_a_probe_that_skips_the_anchors_offset_reads_once_more() -> None:
    probing = tracker(stored_up_to(41))
    assert offer(probing, (41, "other"), (42, "x")) == []
    assert probing.pending_seek == Seek(40)
    probing.seeked(T)
    # This read skipped offset 41 altogether: no verdict yet.
    assert offer(probing, (40, "o"), (42, "x")) == []
    assert (probing.pending_seek, probing.epoch) == (Seek(40), 0)
    probing.seeked(T)
    assert offer(probing, (40, "o"), (41, "other"), (41, "same"), (42, "x")) == [42]
    assert probing.epoch == 0
    (repeat,) = probing.take_events()
    assert (repeat.kind, repeat.first_offset) == (LogEventKind.OFFSET_REPEATED, 41)
    assert b"other".hex() in repeat.detail
    assert b"same".hex() in repeat.detail


def test_a_replaced_log_exactly_as_long_as_the_stored_one_is_settled_by_its_end() -> None:
    # A restarted memory broker whose new log ends right after the anchor's offset: no later
    # record will come to settle the probe, the high watermark must.
    replaced = tracker(stored_up_to(1))
    assert offer(replaced, (1, "other")) == []
    assert replaced.pending_seek == Seek(0)
    replaced.seeked(T)
    assert offer(replaced, (0, "o"), (1, "other")) == []
    assert (replaced.mode, replaced.epoch) == (Mode.PROBING, 0)
    replaced.observe_highwater(2, T + 1, T + 1)
    assert (replaced.pending_seek, replaced.epoch) == (Seek(None), 1)
    replaced.seeked(T + 2)
    assert offer(replaced, (0, "o"), (1, "other")) == [0, 1]


# -- a consecutive run admitted at once --------------------------------------------------------


def test_a_run_is_admitted_at_once_only_right_after_a_kept_record() -> None:
    state = tracker(Position.start())
    assert not state.admit_run(0, 3, lambda i: facts(f"x{i}"), T)  # nothing kept yet
    assert state.admit(0, facts("a"), T)
    assert not state.admit_run(2, 3, lambda i: facts(f"x{i}"), T)  # not the next offset
    assert state.admit_run(1, 3, lambda i: facts(f"r{1 + i}"), T)
    state.end_slice()
    assert state.position == Position.after(3, b"r3")


def test_a_run_keeps_the_digests_a_repeated_offset_is_described_with() -> None:
    count = RECENT + 100
    records = [(offset, f"r{offset}") for offset in range(count)]
    state = tracker(Position.start())
    assert offer(state, *records) == list(range(count))
    assert state.position == Position.after(count - 1, f"r{count - 1}".encode())
    state.seeked(T)
    # The next fetch: the anchor, then two offsets of the run again with other content,
    # one just before the anchor, one far back in the run.
    again = [(count - 1, f"r{count - 1}"), (count - 2, "changed"), (3, "other"), (count, "new")]
    assert offer(state, *again) == [count]
    repeats = state.take_events()
    assert [(e.kind, e.first_offset) for e in repeats] == [
        (LogEventKind.OFFSET_REPEATED, count - 2),
        (LogEventKind.OFFSET_REPEATED, 3),
    ]
    assert f"r{count - 2}".encode().hex() in repeats[0].detail
    assert b"r3".hex() in repeats[1].detail
    assert b"other".hex() in repeats[1].detail


@pytest.mark.parametrize("seed", range(40))
def test_runs_at_once_decide_exactly_as_one_record_at_a_time(seed: int) -> None:
    # Logs that repeat, skip, go backwards and get replaced, served in pages of many
    # sizes: admitting consecutive runs at once must keep, note and begin the same.
    chance = random.Random(seed)
    entries: list[tuple[int, str]] = []
    offset = 0
    while len(entries) < 60:
        entries.append((offset, f"t{offset}"))
        roll = chance.random()
        if roll < 0.05:
            entries.append((offset, f"other{offset}"))  # the same offset twice
        elif roll < 0.08:
            offset += 2  # a skipped offset
            continue
        elif roll < 0.10 and offset > 3:
            offset -= 3  # backwards
            continue
        offset += 1
    page = chance.choice([1, 2, 5, 17, 100])
    start = chance.choice([Position.start(), stored_up_to(chance.randrange(40), "t?")])
    skips = {o for o, _ in entries if chance.random() < 0.05}
    results = []
    for one_by_one in (True, False):
        served = ServedLog(list(entries), page=page, skip_once=set(skips))
        state, done = follow(served, start, rounds=150, one_by_one=one_by_one)
        events = [(e.kind, e.epoch, e.first_offset, e.last_offset, e.detail) for e in done.events]
        results.append((done.admitted, events, state.position, state.epoch))
    assert results[0] == results[1]
