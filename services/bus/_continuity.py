"""Following one partition's log, proving at every fetch that it is still the same log.

Pure decisions, no I/O: :class:`Continuity` is told the offsets (and, on
demand, digests) of the records a fetch returned and the broker's high
watermark, and answers which records to keep, where to seek, and what was
noticed. The :class:`~services.bus.Follower` does the I/O around it.

The caller's store, not Kafka's group offsets, says where a partition resumes
(a :class:`Position`), and offsets alone cannot tell a log that continues from
one that was replaced (a restarted memory broker, a recreated topic, an
unclean leader election): the new log may already be longer than the old one.
So every fetch *overlaps* the previous one by a record. After each slice of
records the partition is *anchored*: the follower seeks back to the last
record it admitted, and the next slice must begin with that very record
(compared by its digest) before anything after it is admitted. On assignment
the anchor is the caller's last stored record. An idle partition waits one
past its anchor; when records arrive there, they are refused and read again
from the anchor.

What does not fit is recorded as a :class:`LogEvent`, never skipped silently,
and handled by rules that cannot loop, whatever the broker serves:

- offsets that jump forward are read again once from the last admitted record
  (the local broker sometimes serves a fetch that skips a record it does
  hold); a jump seen twice at the same place is a gap (records removed before
  they were read), recorded and passed;
- an offset served again, or an earlier one, inside one fetch is recorded once
  (with both records' digests) and the first record kept: nothing is admitted
  twice in one epoch and no epoch begins for it;
- another record first at the anchor's offset is not yet a replaced log: a
  broker that handed out offsets twice holds two records at one offset and,
  read from that offset, serves the later one first. The follower reads again
  from where the anchor's own slice began and looks for the anchor among the
  records at its offset; found, the others there are repeated offsets;
- not found there, an earlier offset than asked for, or a log that ends before
  the anchor start a new *epoch*, read from the beginning of the new log; the
  same anomaly met again (the same record served at the same anchor) is
  recorded as a repeated offset instead, so no epoch is ever entered twice for
  one anomaly.

A high watermark at or below the anchor can be transient on Apache Kafka
while a new leader catches up, so it only counts as a reset once it has held
for ``confirm_reset_ms`` of fetch responses; one at or below a record the
broker has just served is the broker's error (the local broker, under load),
not a log that went backwards.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from aiokafka import TopicPartition

from services.bus._logging import get_logger

log = get_logger(__name__)

Digest = Callable[[], bytes]
"""The digest of one record, computed only when it is needed."""

RECENT = 512
"""Records admitted last whose digests stay at hand, to describe an offset served again."""


class LogEventKind(enum.StrEnum):
    """The kinds of discontinuity a broker log can show."""

    LOG_RESET = "log_reset"
    """The log went backwards (a restarted memory broker, a recreated topic, an unclean
    leader election): a new epoch of the partition begins at the start of the new log."""
    OFFSET_GAP = "offset_gap"
    """Offsets vanished from the broker before the consumer could read them (retention)."""
    OFFSET_REPEATED = "offset_repeated"
    """The broker served an offset again, or an earlier one, inside one fetch (the local
    broker has, after a restart under load): the first record at that offset was kept, the
    other is described (digests of both) and was not admitted."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One discontinuity of one partition's log.

    For :attr:`LogEventKind.LOG_RESET`, ``epoch`` is the new epoch and
    ``last_offset`` the last offset admitted in the one before; for
    :attr:`LogEventKind.OFFSET_GAP`, ``first_offset`` to ``last_offset`` are
    the offsets that were never seen, in ``epoch``; for
    :attr:`LogEventKind.OFFSET_REPEATED`, both are the offset served twice and
    ``detail`` names the digests of the record kept and of the one refused.
    """

    topic: str
    partition: int
    epoch: int
    kind: LogEventKind
    first_offset: int | None
    last_offset: int | None
    detail: str
    recorded_at: datetime

    @property
    def event_id(self) -> str:
        """A key that two consumers noticing the same discontinuity both compute."""
        first = "-" if self.first_offset is None else str(self.first_offset)
        return f"{self.kind}/{self.topic}/{self.partition}/{self.epoch}/{first}"

    def describe(self) -> str:
        """One line for a person."""
        where = f"{self.topic}[{self.partition}]"
        if self.kind is LogEventKind.LOG_RESET:
            before = "nothing" if self.last_offset is None else f"offset {self.last_offset}"
            return (
                f"{where}: the broker's log went backwards; epoch {self.epoch} begins "
                f"(epoch {self.epoch - 1} was stored up to {before}): {self.detail}"
            )
        if self.kind is LogEventKind.OFFSET_REPEATED:
            return (
                f"{where} epoch {self.epoch}: the broker served offset {self.first_offset} "
                f"more than once: {self.detail}"
            )
        return (
            f"{where} epoch {self.epoch}: offsets {self.first_offset}..{self.last_offset} "
            f"vanished from the broker before they were read: {self.detail}"
        )


@dataclass(frozen=True, slots=True)
class Position:
    """Where a consumer's own store stands on one partition: the follower resumes from here.

    ``next_offset`` is the first offset not stored yet in ``epoch`` (None:
    nothing stored in this epoch, read from the beginning of the log);
    ``anchor`` is the digest of the stored record at ``next_offset - 1``.
    Without an anchor the follower resumes at ``next_offset`` unverified: it
    still notices a log that ends before ``next_offset``, but not a replaced
    log that has already grown past it.
    """

    epoch: int = 0
    next_offset: int | None = None
    anchor: bytes | None = None

    @classmethod
    def start(cls, epoch: int = 0) -> Position:
        """Nothing stored in ``epoch``: from the beginning of the log."""
        return cls(epoch)

    @classmethod
    def at(cls, next_offset: int, epoch: int = 0) -> Position:
        """From ``next_offset``, with nothing to prove the log is the one read before."""
        return cls(epoch, next_offset)

    @classmethod
    def after(cls, offset: int, digest: bytes, epoch: int = 0) -> Position:
        """After the stored record at ``offset`` whose digest is ``digest``."""
        return cls(epoch, offset + 1, digest)


@dataclass(frozen=True, slots=True)
class Seek:
    """Where the follower must move the partition's fetch position."""

    offset: int | None
    """The offset, or None for the beginning of the log."""


class Mode(enum.Enum):
    """Where the partition's fetch position is, and what the next slice must show."""

    FRESH = "fresh"
    """Nothing admitted in this epoch: reading from the beginning of the log."""
    RESUMED = "resumed"
    """At a position without an anchor: the next slice must begin at that offset."""
    ANCHORED = "anchored"
    """At the anchor: the next slice must begin with the anchor record."""
    AHEAD = "ahead"
    """One past the anchor (the last slice only proved it): the next slice is read again."""
    PROBING = "probing"
    """Another record came first at the anchor's offset: reading again from an earlier offset,
    looking for the anchor among the records at its offset (a repeated offset), before calling
    the log replaced."""


@dataclass(slots=True)
class PartitionHistory:
    """What one partition's follower remembers across repositionings (and epochs).

    It is what makes the rules loop-free: anomalies already recorded, the
    anchor mismatches that already began an epoch, and progress for the
    "stuck" check.
    """

    created_ms: int
    noted: set[tuple[int, int]] = field(default_factory=set)
    """(epoch, offset) already recorded as served more than once."""
    others: set[tuple[int, bytes]] = field(default_factory=set)
    """(offset, digest) of records refused as a second record at their offset."""
    resets: set[tuple[int, bytes | None, bytes]] = field(default_factory=set)
    """(anchor offset, anchor digest, digest served instead) that began an epoch."""
    epochs_started: int = 0
    furthest: int = -1
    """The furthest position (next offset) reached, in any epoch."""
    progress_ms: int | None = None
    """When the position last went past :attr:`furthest` or caught up with the log end."""
    highwater: int | None = None

    def advanced(self, next_offset: int | None, now_ms: int) -> None:
        """The position is now ``next_offset``."""
        if next_offset is not None and next_offset > self.furthest:
            self.furthest = next_offset
            self.progress_ms = now_ms
        if self.highwater is not None and (next_offset or 0) >= self.highwater:
            self.progress_ms = now_ms

    def stuck_ms(self, next_offset: int | None, now_ms: int) -> int:
        """How long the position has not advanced while the broker's log held more; else 0.

        Re-reading what was read before (in another epoch) is not advancing:
        a follower looping over the same records is stuck.
        """
        highwater = self.highwater
        if highwater is None or (next_offset or 0) >= highwater:
            return 0
        since = self.created_ms if self.progress_ms is None else self.progress_ms
        return max(0, now_ms - since)


class Continuity:
    """Decides, record by record, what the follower does with one partition.

    For each slice of records a fetch returned, call :meth:`admit` for every
    record in order (stop at the first refusal that leaves a
    :attr:`pending_seek`), then :meth:`end_slice`; apply :attr:`pending_seek`
    and report it with :meth:`seeked`. :meth:`observe_highwater` takes in each
    fetch response's high watermark; :meth:`take_events` hands over what was
    noticed. A new :class:`Continuity` for the same partition (a repositioning)
    takes the old one's :class:`PartitionHistory`.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        position: Position,
        *,
        confirm_reset_ms: int,
        history: PartitionHistory,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.epoch = position.epoch
        self.confirm_reset_ms = confirm_reset_ms
        self.history = history
        self.mode = Mode.FRESH
        self.pending_seek: Seek | None = None
        self._events: list[LogEvent] = []
        self._anchor: int | None = None
        self._anchor_digest: bytes | None = None
        self._resume = 0
        self._next: int | None = None
        self._last: tuple[int, Digest] | None = None
        self._recent: OrderedDict[int, Digest] = OrderedDict()
        self._run: tuple[int, int, Callable[[int], Digest]] | None = None
        """The last run admitted at once: its first offset, length and digests, by index."""
        self._suspect: tuple[int, int] | None = None
        self._slice_from: int | None = None
        self._anchor_from: int | None = None
        self._others_at_anchor: list[bytes] = []
        self._probe_start = 0
        self._probe_seen = False
        self._probe_retried = False
        self._served_anchor = False
        self._past_highwater: int | None = None
        self._seeked_at_ms: int | None = None
        self._clock_ms = history.created_ms
        self._low_since_ms: int | None = None
        if position.next_offset is None:
            self._start_fresh()
        elif position.anchor is None or position.next_offset == 0:
            self._resume_at(position.next_offset)
        else:
            self._anchor_at(position.next_offset - 1, position.anchor)

    @property
    def where(self) -> str:
        """``topic[partition]`` for messages."""
        return f"{self.topic}[{self.partition}]"

    @property
    def position(self) -> Position:
        """The position after every record admitted so far (what the caller stores with them).

        Call it after :meth:`end_slice`.
        """
        if self._anchor is not None:
            return Position(self.epoch, self._anchor + 1, self._anchor_digest)
        if self.mode is Mode.RESUMED:
            return Position(self.epoch, self._resume)
        return Position(self.epoch)

    def reseek(self) -> None:
        """The fetch position was lost (a new assignment): seek to where the next slice begins."""
        self._reanchor()

    def take_events(self) -> list[LogEvent]:
        """The events noticed since the last call."""
        events, self._events = self._events, []
        return events

    def seeked(self, now_ms: int, offset: int | None = None) -> None:
        """The follower applied :attr:`pending_seek` at ``now_ms`` (wall clock, ms).

        ``offset`` is where it went (the log start when the seek asked for it).
        """
        if offset is None and self.pending_seek is not None:
            offset = self.pending_seek.offset
        self._slice_from = offset
        self.pending_seek = None
        self._seeked_at_ms = now_ms
        self._low_since_ms = None
        self._next = None
        self._last = None

    def admit(self, offset: int, digest: Digest, now_ms: int) -> bool:
        """Whether to keep the record at ``offset``; ``digest`` computes its digest on demand.

        After a False answer with a :attr:`pending_seek`, drop the rest of the slice.
        """
        self._clock_ms = now_ms
        if self.pending_seek is not None:
            return False
        if self.mode is Mode.AHEAD:
            # Nothing proves these follow the anchor: read them again with it.
            self._reanchor()
            return False
        if self.mode is Mode.PROBING:
            return self._probe(offset, digest, now_ms)
        expected = self._next
        if expected is None:
            if self.mode is Mode.ANCHORED:
                return self._admit_first(offset, digest, now_ms)
            if self.mode is Mode.RESUMED:
                expected = self._resume
                if offset < expected:
                    self._earlier(offset, expected, digest, now_ms)
                    return False
            else:
                expected = offset  # FRESH: the log starts where it starts
        if offset == expected:
            self._accept(offset, digest)
            return True
        if offset < expected:
            self._repeated(offset, digest, now_ms)
            return False
        return self._jump(expected, offset, digest, now_ms, "the broker served a later offset next")

    def admit_run(
        self, first: int, count: int, digest_at: Callable[[int], Digest], now_ms: int
    ) -> bool:
        """Admit offsets ``first`` … ``first + count - 1`` at once, if :meth:`admit` would.

        Only where :meth:`admit` one record at a time would keep every one
        with nothing else to do: a record of this slice was admitted already
        and ``first`` is the next offset. The caller guarantees the run is
        consecutive. ``digest_at(i)``: the run's ``i``-th record's digest, asked
        for only when an offset of the run is served again (kept until the next
        run). False, having changed nothing, otherwise (offer the records one by
        one).
        """
        if (
            count <= 0
            or self._next != first
            or self.pending_seek is not None
            or self.mode in (Mode.AHEAD, Mode.PROBING)
        ):
            return False
        self._clock_ms = now_ms
        self._run = (first, count, digest_at)
        last = first + count - 1
        self._next = last + 1
        self._last = (last, digest_at(count - 1))
        return True

    def end_slice(self) -> None:
        """The records of one fetch for this partition have all been offered."""
        if self.pending_seek is None:
            if self._last is not None:
                offset, digest = self._last
                self._anchor_at(offset, digest())
                self._anchor_from = self._slice_from
                self._served_anchor = True
                self.history.advanced(offset + 1, self._clock_ms)
            elif self.mode is Mode.ANCHORED and self._next is not None:
                # Only the anchor came: wait one past it rather than fetch it again and again.
                self.mode = Mode.AHEAD
        self._next = None
        self._last = None

    def observe_highwater(
        self, highwater: int | None, fetched_at_ms: int | None, now_ms: int
    ) -> None:
        """Take in the high watermark of the latest fetch response (``None`` when unknown)."""
        if highwater is None or fetched_at_ms is None:
            return
        if self._seeked_at_ms is not None and fetched_at_ms < self._seeked_at_ms:
            return
        self.history.highwater = highwater
        self.history.advanced(self.position.next_offset, now_ms)
        # The last offset the log must still hold: the anchor, or the one before the resume point.
        held = self._anchor if self._anchor is not None else self._resume - 1
        if self._served_anchor:
            self._served_anchor = False
            self._check_served(highwater, held)
        if self.pending_seek is not None or self.mode is Mode.FRESH:
            return
        if self.mode is Mode.PROBING:
            self._probe_ended(highwater, now_ms)
            return
        if self._past_highwater is not None and highwater >= self._past_highwater:
            self._low_since_ms = None
        elif self.mode is Mode.AHEAD and highwater <= held:
            log.warning(
                "the broker's log ends before a record already read; reading from the anchor",
                partition=self.where,
                highwater=highwater,
                anchor=held,
            )
            self._reanchor()
        elif self.mode is not Mode.AHEAD:
            self._confirm_short_log(highwater, held, fetched_at_ms, now_ms)

    def _check_served(self, highwater: int, held: int) -> None:
        """The anchor was just served: a high watermark at or below it is the broker's error."""
        if self._anchor is None or highwater > held or highwater == self._past_highwater:
            return
        self._past_highwater = highwater
        log.warning(
            "the broker served a record at or past its high watermark; that high watermark "
            "is not taken for the end of its log",
            partition=self.where,
            offset=held,
            highwater=highwater,
        )

    def _confirm_short_log(
        self, highwater: int, held: int, fetched_at_ms: int, now_ms: int
    ) -> None:
        """A log ending at or before the anchor for ``confirm_reset_ms`` went backwards."""
        if highwater > held:
            self._low_since_ms = None
            return
        if self._low_since_ms is None:
            self._low_since_ms = fetched_at_ms
        if now_ms - self._low_since_ms >= self.confirm_reset_ms:
            self._reset(
                f"the broker's log ends at offset {highwater}, below the stored offset "
                f"{held}, for {now_ms - self._low_since_ms} ms",
                now_ms,
            )

    # -- transitions -----------------------------------------------------------------------

    def _admit_first(self, offset: int, digest: Digest, now_ms: int) -> bool:
        anchor = self._anchor
        assert anchor is not None
        if offset == anchor:
            served = digest()
            if served == self._anchor_digest:
                self._next = anchor + 1
                self._served_anchor = True
                return False
            history = self.history
            if (anchor, served) in history.others or (
                anchor,
                self._anchor_digest,
                served,
            ) in history.resets:
                # This very anomaly was met before: it is a second record at the anchor's
                # offset, not a new log. Keep the stored one and go on after it.
                self._note_repeated(anchor, self._anchor_digest, served, now_ms)
                self._next = anchor + 1
                return False
            self._start_probe(served, now_ms)
            return False
        if offset < anchor:
            self._earlier(offset, anchor, digest, now_ms)
            return False
        if offset > anchor + 1:
            return self._jump(anchor + 1, offset, digest, now_ms, "the log now starts after them")
        log.info(
            "the anchor record is no longer on the broker; continuing with the next",
            partition=self.where,
            offset=anchor,
        )
        self._accept(offset, digest)
        return True

    def _start_probe(self, served: bytes, now_ms: int) -> None:
        """Read again from where the anchor's own slice began, to look for it at its offset.

        A broker that handed out offsets twice holds two records at one offset;
        read from that offset it serves the later one first, read from before
        it the earlier one, as the anchor's own slice did.
        """
        anchor = self._anchor
        assert anchor is not None
        start = self._anchor_from
        if start is None or start >= anchor:
            start = anchor - 1
        if start < 0:
            self._replaced(served, now_ms)
            return
        log.warning(
            "another record at the anchor's offset: reading again from an earlier offset to "
            "tell a repeated offset from a replaced log",
            partition=self.where,
            anchor=anchor,
            start=start,
        )
        self.mode = Mode.PROBING
        self._others_at_anchor = [served]
        self._probe_start = start
        self._probe_seen = False
        self._probe_retried = False
        self.pending_seek = Seek(start)

    def _probe(self, offset: int, digest: Digest, now_ms: int) -> bool:
        """One record read while probing: nothing before the anchor is admitted again."""
        anchor = self._anchor
        assert anchor is not None
        if offset < anchor:
            return False
        served = digest()
        if offset == anchor:
            self._probe_seen = True
            if served != self._anchor_digest:
                self._others_at_anchor.append(served)
                return False
            # The anchor is there: the same log, with other records at its offset.
            self.mode = Mode.ANCHORED
            self._next = anchor + 1
            self._served_anchor = True
            for other in dict.fromkeys(self._others_at_anchor):
                self._note_repeated(anchor, self._anchor_digest, other, now_ms)
            self._others_at_anchor = []
            return False
        if not self._probe_seen and not self._probe_retried:
            # This read skipped the anchor's offset altogether: read once more.
            self._probe_retried = True
            self.pending_seek = Seek(self._probe_start)
            return False
        self._replaced(self._others_at_anchor[0], now_ms)
        return False

    def _probe_ended(self, highwater: int, now_ms: int) -> None:
        """Settle a probe that the log's end leaves open: the log was replaced.

        The probe read the anchor's offset and found only other records there,
        and the log holds nothing after it: no later record will ever come to
        settle it (the probe would wait, silently, for the next record).
        """
        anchor = self._anchor
        if anchor is None or not self._probe_seen or highwater > anchor + 1:
            return
        self._replaced(self._others_at_anchor[0], now_ms)

    def _replaced(self, served: bytes, now_ms: int) -> None:
        """The anchor record is not where it was: the log was replaced."""
        anchor = self._anchor
        assert anchor is not None
        self._others_at_anchor = []
        self.history.resets.add((anchor, self._anchor_digest, served))
        self._reset(f"the record at offset {anchor} is not the one stored", now_ms)

    def _earlier(self, offset: int, asked: int, digest: Digest, now_ms: int) -> None:
        """The slice began before the offset asked for: the log went backwards, once."""
        served = digest()
        signature = (offset, self._anchor_digest, served)
        if signature in self.history.resets:
            return  # met before, and an epoch began for it then: read on to the offset asked
        self.history.resets.add(signature)
        self._reset(f"the broker served offset {offset} when asked for offset {asked}", now_ms)

    def _accept(self, offset: int, digest: Digest) -> None:
        self._next = offset + 1
        self._last = (offset, digest)
        recent = self._recent
        recent[offset] = digest
        if len(recent) > RECENT:
            recent.popitem(last=False)

    def _jump(self, first: int, offset: int, digest: Digest, now_ms: int, reason: str) -> bool:
        """Offsets ``first`` .. ``offset - 1`` were skipped: read again once, then a gap."""
        if self._suspect == (self.epoch, first):
            self._suspect = None
            self._gap(first, offset - 1, now_ms, f"{reason} (seen twice)")
            self._accept(offset, digest)
            return True
        self._suspect = (self.epoch, first)
        log.warning(
            "the broker skipped offsets in a fetch; reading them again before calling it a gap",
            partition=self.where,
            first=first,
            last=offset - 1,
        )
        if self._last is not None:
            last, last_digest = self._last
            self._anchor_at(last, last_digest())
            self._anchor_from = self._slice_from
        else:
            self._reanchor()
        self._next = None
        self._last = None
        return False

    def _repeated(self, offset: int, digest: Digest, now_ms: int) -> None:
        """An offset already admitted (or passed) came again in this slice: keep the first."""
        kept = self._recent.get(offset)
        run = self._run
        if kept is None and run is not None and run[0] <= offset < run[0] + run[1]:
            kept = run[2](offset - run[0])  # offsets are admitted once an epoch: no older entry
        if kept is None and offset == self._anchor and self._next is not None:
            kept_digest: bytes | None = self._anchor_digest
        else:
            kept_digest = None if kept is None else kept()
        self._note_repeated(offset, kept_digest, digest(), now_ms)

    def _note_repeated(self, offset: int, kept: bytes | None, served: bytes, now_ms: int) -> None:
        history = self.history
        history.others.add((offset, served))
        if (self.epoch, offset) in history.noted:
            return
        history.noted.add((self.epoch, offset))
        first = "one read earlier" if kept is None else f"digest {kept.hex()}"
        if kept == served:
            what = f"the same record again (digest {served.hex()}): nothing lost"
        else:
            what = (
                f"kept the first record ({first}); not admitted: the record with digest "
                f"{served.hex()}"
            )
        log.error(
            "the broker served an offset more than once; keeping the first record",
            partition=self.where,
            epoch=self.epoch,
            offset=offset,
            kept=None if kept is None else kept.hex(),
            refused=served.hex(),
        )
        self._events.append(
            LogEvent(
                self.topic,
                self.partition,
                self.epoch,
                LogEventKind.OFFSET_REPEATED,
                offset,
                offset,
                what,
                _at(now_ms),
            ),
        )

    def _start_fresh(self) -> None:
        self._past_highwater = None
        self.mode = Mode.FRESH
        self._anchor_from = None
        self._anchor = None
        self._anchor_digest = None
        self._resume = 0
        self.pending_seek = Seek(None)

    def _resume_at(self, offset: int) -> None:
        self.mode = Mode.RESUMED
        self._anchor_from = None
        self._anchor = None
        self._anchor_digest = None
        self._resume = offset
        self.pending_seek = Seek(offset)

    def _anchor_at(self, offset: int, digest: bytes) -> None:
        if offset != self._anchor:
            self._past_highwater = None
        self.mode = Mode.ANCHORED
        self._anchor = offset
        self._anchor_digest = digest
        self._resume = offset + 1
        self.pending_seek = Seek(offset)

    def _reanchor(self) -> None:
        """Read again from where this slice had to begin."""
        if self._anchor is not None:
            assert self._anchor_digest is not None
            self._anchor_at(self._anchor, self._anchor_digest)
        elif self.mode is Mode.RESUMED:
            self._resume_at(self._resume)
        else:
            self._start_fresh()

    def _gap(self, first: int, last: int, now_ms: int, reason: str) -> None:
        log.error("offsets missing from the broker", partition=self.where, first=first, last=last)
        self._events.append(
            LogEvent(
                self.topic,
                self.partition,
                self.epoch,
                LogEventKind.OFFSET_GAP,
                first,
                last,
                reason,
                _at(now_ms),
            ),
        )

    def _reset(self, reason: str, now_ms: int) -> None:
        last = self._last[0] if self._last is not None else self._anchor
        if last is None and self.mode is Mode.RESUMED and self._resume > 0:
            last = self._resume - 1
        event = LogEvent(
            self.topic,
            self.partition,
            self.epoch + 1,
            LogEventKind.LOG_RESET,
            None,
            last,
            reason,
            _at(now_ms),
        )
        log.error(
            "the broker's log went backwards: a new epoch begins at the start of the new log",
            partition=self.where,
            epoch=event.epoch,
            reason=reason,
        )
        self._events.append(event)
        self.epoch += 1
        self.history.epochs_started += 1
        self._next = None
        self._last = None
        self._recent.clear()
        self._run = None
        self._suspect = None
        self._start_fresh()


def _shifted(digest_at: Callable[[int], Digest], by: int, index: int) -> Digest:
    return digest_at(by + index)


def admit_slice(
    state: Continuity, offsets: Sequence[int], digest_at: Callable[[int], Digest], now_ms: int
) -> list[int]:
    """Offer one fetch's records of ``state``'s partition in order, then end the slice.

    ``offsets``: the records' offsets; ``digest_at(i)``: the ``i``-th record's
    digest. Returns the indexes of the records kept. Records are offered one by
    one until one is kept; when the rest follows it consecutively (the usual
    case) it is admitted at once (:meth:`Continuity.admit_run`), ~2 µs a record
    less than offering each.
    """
    kept: list[int] = []
    tried = False
    for index, offset in enumerate(offsets):
        if state.admit(offset, digest_at(index), now_ms):
            kept.append(index)
            if tried:
                continue
            tried = True
            after = index + 1
            count = len(offsets) - after
            if (
                count > 0
                and offsets[-1] == offset + count
                and offsets[after:] == list(range(offset + 1, offset + 1 + count))
                and state.admit_run(offset + 1, count, partial(_shifted, digest_at, after), now_ms)
            ):
                kept.extend(range(after, len(offsets)))
                break
        elif state.pending_seek is not None:
            break
    state.end_slice()
    return kept


class KafkaRecord(Protocol):
    """What a fetched Kafka record offers (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def timestamp_type(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


Admitted = tuple[KafkaRecord, int]
"""A record the follower admitted, with the epoch it was admitted in."""


@dataclass(frozen=True, slots=True)
class Slice:
    """What one fetch brought for one partition: the records admitted, and what was noticed.

    ``records`` continue what the caller stored (or the previous slice), in
    offset order, none twice in ``epoch``. ``position`` is the partition's
    position after them: store it in the same transaction as what you make
    of the records (and of ``events``). A slice of a partition that was
    revoked or repositioned since is stale: check :meth:`Follower.follows`.
    """

    partition: TopicPartition
    epoch: int
    records: list[KafkaRecord]
    events: list[LogEvent]
    position: Position
    token: object


def _at(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, UTC)
