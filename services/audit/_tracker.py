"""Following one partition's log, proving at every fetch that it is still the same log.

The store, not Kafka's group offsets, says where the consumer resumes, and
offsets alone cannot tell a log that continues from one that was replaced (a
restarted memory broker, a recreated topic, an unclean leader election): the
new log may already be longer than the old one. So every fetch *overlaps* the
previous one by a record. After each slice of records the partition is
*anchored*: the consumer seeks back to the last record it admitted, and the
next slice must begin with that very record (compared by a digest of its
Kafka facts) before anything after it is admitted. On assignment the anchor
is the last stored record. An idle partition waits one past its anchor; when
records arrive there, they are refused and read again from the anchor.

What does not fit is recorded as a :class:`~services.audit._events.LogEvent`,
never skipped silently:

- offsets that jump forward are a gap (records removed before they were read);
- a different record at the anchor, an earlier offset than asked for, or a log
  that ends before the anchor start a new *epoch*, read from the beginning of
  the new log.

A high watermark at or below the anchor can be transient on Apache Kafka
while a new leader catches up, so it only counts as a reset once it has held
for ``confirm_reset_ms`` of fetch responses.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.audit._events import EventKind, LogEvent
from services.audit._store import PartitionHead
from services.bus import get_logger

log = get_logger(__name__)

Facts = Callable[[], bytes]


class Mode(enum.Enum):
    """Where the partition's fetch position is, and what the next slice must show."""

    FRESH = "fresh"
    """Nothing stored in this epoch: reading from the beginning of the log."""
    ANCHORED = "anchored"
    """At the anchor: the next slice must begin with the anchor record."""
    AHEAD = "ahead"
    """One past the anchor (the last slice only proved it): the next slice is read again."""


@dataclass(frozen=True, slots=True)
class Seek:
    """Where the consumer must move the partition's fetch position."""

    offset: int | None
    """The offset, or None for the beginning of the log."""


class PartitionTracker:
    """Decides, record by record, what the audit consumer does with one partition.

    For each slice of records a fetch returned, call :meth:`admit` for every
    record in order (stop at the first refusal that leaves a
    :attr:`pending_seek`), then :meth:`end_slice`; apply :attr:`pending_seek`
    and report it with :meth:`seeked`.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        head: PartitionHead,
        *,
        confirm_reset_ms: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.epoch = head.epoch
        self.confirm_reset_ms = confirm_reset_ms
        self.mode = Mode.FRESH
        self.pending_seek: Seek | None = None
        self._events: list[LogEvent] = []
        self._anchor: int | None = None
        self._anchor_facts: bytes | None = None
        self._next: int | None = None
        self._last: tuple[int, Facts] | None = None
        self._seeked_at_ms: int | None = None
        self._low_since_ms: int | None = None
        if head.last_offset is None or head.last_facts is None:
            self._start_fresh()
        else:
            self._anchor_at(head.last_offset, head.last_facts)

    @property
    def where(self) -> str:
        """``topic[partition]`` for messages."""
        return f"{self.topic}[{self.partition}]"

    def take_events(self) -> list[LogEvent]:
        """The events noticed since the last call."""
        events, self._events = self._events, []
        return events

    def seeked(self, now_ms: int) -> None:
        """The consumer applied :attr:`pending_seek` at ``now_ms`` (wall clock, ms)."""
        self.pending_seek = None
        self._seeked_at_ms = now_ms
        self._low_since_ms = None
        self._next = None
        self._last = None

    def admit(self, offset: int, facts: Facts, now_ms: int) -> bool:
        """Whether to store the record at ``offset``; ``facts`` digests it on demand.

        After a False answer with a :attr:`pending_seek`, drop the rest of the slice.
        """
        if self.pending_seek is not None:
            return False
        if self.mode is Mode.AHEAD:
            # Nothing proves these follow the anchor: read them again with it.
            assert self._anchor is not None
            assert self._anchor_facts is not None
            self._anchor_at(self._anchor, self._anchor_facts)
            return False
        if self.mode is Mode.ANCHORED and self._next is None:
            return self._admit_first(offset, facts, now_ms)
        if self._next is not None and offset != self._next:
            if offset < self._next:
                self._reset(f"offset {offset} came after {self._next - 1}", now_ms)
                return False
            self._gap(self._next, offset - 1, now_ms, "the broker served a later offset next")
        self._accept(offset, facts)
        return True

    def end_slice(self) -> None:
        """The records of one fetch for this partition have all been offered."""
        if self.pending_seek is None:
            if self._last is not None:
                offset, facts = self._last
                self._anchor_at(offset, facts())
            elif self.mode is Mode.ANCHORED and self._next is not None:
                # Only the anchor came: wait one past it rather than fetch it again and again.
                self.mode = Mode.AHEAD
        self._next = None
        self._last = None

    def observe_highwater(
        self, highwater: int | None, fetched_at_ms: int | None, now_ms: int
    ) -> None:
        """Take in the high watermark of the latest fetch response (``None`` when unknown)."""
        if highwater is None or fetched_at_ms is None or self.pending_seek is not None:
            return
        if self._seeked_at_ms is not None and fetched_at_ms < self._seeked_at_ms:
            return
        anchor = self._anchor
        if anchor is None:
            return
        if self.mode is Mode.AHEAD and highwater <= anchor:
            log.warning(
                "the broker's log ends before a record already read; reading from the anchor",
                partition=self.where,
                highwater=highwater,
                anchor=anchor,
            )
            assert self._anchor_facts is not None
            self._anchor_at(anchor, self._anchor_facts)
        elif self.mode is Mode.ANCHORED:
            if highwater > anchor:
                self._low_since_ms = None
                return
            if self._low_since_ms is None:
                self._low_since_ms = fetched_at_ms
            if now_ms - self._low_since_ms >= self.confirm_reset_ms:
                self._reset(
                    f"the broker's log ends at offset {highwater}, below the stored offset "
                    f"{anchor}, for {now_ms - self._low_since_ms} ms",
                    now_ms,
                )

    # -- transitions -----------------------------------------------------------------------

    def _admit_first(self, offset: int, facts: Facts, now_ms: int) -> bool:
        anchor = self._anchor
        assert anchor is not None
        if offset == anchor:
            if facts() == self._anchor_facts:
                self._next = anchor + 1
                return False
            self._reset(f"the record at offset {offset} is not the one stored", now_ms)
            return False
        if offset < anchor:
            self._reset(f"the broker served offset {offset} when asked for offset {anchor}", now_ms)
            return False
        if offset > anchor + 1:
            self._gap(anchor + 1, offset - 1, now_ms, "the log now starts after them")
        else:
            log.info(
                "the anchor record is no longer on the broker; continuing with the next",
                partition=self.where,
                offset=anchor,
            )
        self._accept(offset, facts)
        return True

    def _accept(self, offset: int, facts: Facts) -> None:
        self._next = offset + 1
        self._last = (offset, facts)

    def _start_fresh(self) -> None:
        self.mode = Mode.FRESH
        self._anchor = None
        self._anchor_facts = None
        self.pending_seek = Seek(None)

    def _anchor_at(self, offset: int, facts: bytes) -> None:
        self.mode = Mode.ANCHORED
        self._anchor = offset
        self._anchor_facts = facts
        self.pending_seek = Seek(offset)

    def _gap(self, first: int, last: int, now_ms: int, reason: str) -> None:
        log.error("offsets missing from the broker", partition=self.where, first=first, last=last)
        self._events.append(
            LogEvent(
                self.topic,
                self.partition,
                self.epoch,
                EventKind.OFFSET_GAP,
                first,
                last,
                reason,
                _at(now_ms),
            ),
        )

    def _reset(self, reason: str, now_ms: int) -> None:
        last = self._last[0] if self._last is not None else self._anchor
        event = LogEvent(
            self.topic,
            self.partition,
            self.epoch + 1,
            EventKind.LOG_RESET,
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
        self._next = None
        self._last = None
        self._start_fresh()


def _at(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, UTC)
