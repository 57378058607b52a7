"""What an auditor can ask the store for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX_LIMIT = 100_000


def to_millis(moment: datetime) -> int:
    """Kafka timestamp (milliseconds since 1970 UTC) of ``moment``; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Filters on stored records; every given filter must hold.

    ``since`` and ``until`` bound the Kafka record timestamp (``until``
    excluded); ``from_offset`` and ``to_offset`` bound the offset (both
    included). Results come in Kafka timestamp order, or in offset order when
    a topic is given.
    """

    message_id: str | None = None
    originator: str | None = None
    report_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    topic: str | None = None
    partition: int | None = None
    epoch: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    signature_status: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if (self.partition is not None or self.from_offset is not None) and self.topic is None:
            raise ValueError("a partition or offset range needs a topic")
