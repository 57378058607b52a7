"""What an auditor can ask the store for, and what stored records show when read again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.audit._record import AuditRecord, Opening, open_value
from services.bus import Opener

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

    ``originator`` matches only records whose originator is proven (status
    ``valid``: decoded, and signed by that originator's own key), unless
    ``unproven`` is set or a ``signature_status`` is asked for: a header's or an
    unverified content's claim is never presented as the sender.

    ``reused`` keeps only proven records whose message id is also stored
    under another proven originator (ordered by message id): one id naming two
    different messages, since a message is (originator, message id).
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
    unproven: bool = False
    reused: bool = False
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if (self.partition is not None or self.from_offset is not None) and self.topic is None:
            raise ValueError("a partition or offset range needs a topic")

    @property
    def proven_originator_only(self) -> bool:
        """Whether the originator filter keeps only records that prove their originator."""
        return self.originator is not None and self.signature_status is None and not self.unproven


def reopen(opener: Opener, records: Sequence[AuditRecord]) -> list[Opening | None]:
    """What decoding and verifying each undecoded stored record finds today.

    Aligned with ``records``: None for records that decoded when stored. The
    store is append-only: a record stored raw (its writer schema not yet
    released, say) keeps what was found then; read again with today's released
    schemas and keys it may decode now. Never raises for bad input.
    """
    return [
        open_value(opener, record.value, record.header_pairs())
        if record.decoded is None and record.value is not None
        else None
        for record in records
    ]
