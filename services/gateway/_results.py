"""What publishing a report gives back: where it went, after the broker acknowledged it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.gateway._errors import GatewayError


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record on the bus: a report travels to one topic, or one per bilateral channel."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """A report the broker acknowledged (acks=all) and the gateway recorded."""

    message_id: str
    report_type: str
    event_id: str
    key: str
    deliveries: tuple[Delivery, ...]
    releasable_to: tuple[str, ...]
    accepted_at: datetime
    trace_id: str | None
    replayed: bool = False
    """True when this is the first answer again, for a retry of the same message."""

    @property
    def topic(self) -> str:
        """The first (for a feed report, the only) topic."""
        return self.deliveries[0].topic

    @property
    def partition(self) -> int:
        """Partition of the first delivery."""
        return self.deliveries[0].partition

    @property
    def offset(self) -> int:
        """Offset of the first delivery."""
        return self.deliveries[0].offset

    def as_json(self) -> dict[str, Any]:
        """The 201 answer body."""
        return {
            "message_id": self.message_id,
            "report_type": self.report_type,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "deliveries": [
                {"topic": d.topic, "partition": d.partition, "offset": d.offset}
                for d in self.deliveries
            ],
            "key": self.key,
            "accepted_at": self.accepted_at.isoformat(),
            "trace_id": self.trace_id,
            "replayed": self.replayed,
        }


Outcome = Accepted | GatewayError
"""Per report of a batch: accepted, or refused with the reason."""
