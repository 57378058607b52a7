"""What the consumer noticed about a broker's log, stored beside the records it explains."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """The kinds of discontinuity a broker log can show."""

    LOG_RESET = "log_reset"
    """The log went backwards (a restarted memory broker, a recreated topic, an unclean
    leader election): a new epoch of the partition begins at the start of the new log."""
    OFFSET_GAP = "offset_gap"
    """Offsets vanished from the broker before the consumer could read them (retention)."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One discontinuity of one partition's log.

    For :attr:`EventKind.LOG_RESET`, ``epoch`` is the new epoch and
    ``last_offset`` the last offset stored in the one before; for
    :attr:`EventKind.OFFSET_GAP`, ``first_offset`` to ``last_offset`` are the
    offsets that were never seen, in ``epoch``.
    """

    topic: str
    partition: int
    epoch: int
    kind: EventKind
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
        if self.kind is EventKind.LOG_RESET:
            before = "nothing" if self.last_offset is None else f"offset {self.last_offset}"
            return (
                f"{where}: the broker's log went backwards; epoch {self.epoch} begins "
                f"(epoch {self.epoch - 1} was stored up to {before}): {self.detail}"
            )
        return (
            f"{where} epoch {self.epoch}: offsets {self.first_offset}..{self.last_offset} "
            f"vanished from the broker before they were read: {self.detail}"
        )
