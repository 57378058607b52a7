"""What to replay: topics (or a party's, through the agreement), ranges and filters.

The same :class:`Selection` reads from Kafka and from the audit store. Ranges
on offsets and times are pushed down (seeks, SQL); the filters on decoded
content (message id, event id, report type, originator, signature status,
mode) are checked on every record, whichever the source, so both sources keep
exactly the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from services.bus import Exchange
from services.replay._errors import SelectionError
from services.replay._record import Replayed

if TYPE_CHECKING:
    from services.audit import ScanFilter


class PartyRole(StrEnum):
    """How a party relates to the topics selected for it."""

    ORIGINATOR = "originator"
    """Topics the party writes: its feeds and its bilateral channels."""
    READER = "reader"
    """Topics the agreement releases to the party."""
    ANY = "any"


def millis(moment: datetime) -> int:
    """Kafka timestamp (ms since 1970 UTC) of ``moment``; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def party_topics(exchange: Exchange, party: str, role: PartyRole) -> list[str]:
    """Every topic ``party`` writes or reads (per ``role``), as the agreement says.

    Raises:
        SelectionError: ``party`` is not a party to the agreement.
    """
    agreement = exchange.agreement
    if party not in agreement.parties:
        known = ", ".join(sorted(agreement.parties))
        raise SelectionError(f"--party: {party} is not a party to the agreement ({known})")
    router = exchange.router
    found: set[str] = set()
    if role in {PartyRole.ORIGINATOR, PartyRole.ANY}:
        prefix = exchange.naming.writer_prefix(party)
        found.update(t for t in router.all_topics() if t.startswith(prefix))
    if role in {PartyRole.READER, PartyRole.ANY}:
        found.update(router.readable_by(party))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records to replay; every given filter must hold.

    ``topics`` empty means every OIX topic of the agreement. Offsets are
    inclusive; ``since`` is inclusive and ``until`` exclusive, on the Kafka
    record timestamp (the time the broker or producer stamped).
    """

    topics: tuple[str, ...] = ()
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_id: str | None = None
    event_id: str | None = None
    report_type: str | None = None
    originator: str | None = None
    signature_status: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if (
            self.from_offset is not None
            and self.to_offset is not None
            and self.to_offset < self.from_offset
        ):
            raise SelectionError("--to-offset: lies before --from-offset")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise SelectionError("--until: must lie after --since")
        for name in ("from_offset", "to_offset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SelectionError(f"--{name.replace('_', '-')}: must be 0 or more")

    @property
    def since_ms(self) -> int | None:
        """``since`` in Kafka milliseconds."""
        return None if self.since is None else millis(self.since)

    @property
    def until_ms(self) -> int | None:
        """``until`` in Kafka milliseconds."""
        return None if self.until is None else millis(self.until)

    def in_range(self, offset: int, timestamp: int) -> bool:
        """Whether a record's coordinates fall inside the offset and time ranges."""
        if self.from_offset is not None and offset < self.from_offset:
            return False
        if self.to_offset is not None and offset > self.to_offset:
            return False
        since, until = self.since_ms, self.until_ms
        if since is not None and timestamp < since:
            return False
        return until is None or timestamp < until

    @property
    def needs_content(self) -> bool:
        """Whether a filter looks into the decoded report (event id, mode)."""
        return self.event_id is not None or self.mode is not None

    def keeps(self, record: Replayed) -> bool:
        """Whether ``record`` passes every filter (ranges included)."""
        if self.partition is not None and record.partition != self.partition:
            return False
        if not self.in_range(record.offset, record.timestamp):
            return False
        for wanted, found in (
            (self.message_id, record.message_id),
            (self.report_type, record.report_type),
            (self.originator, record.originator),
            (self.signature_status, record.signature_status),
        ):
            if wanted is not None and found != wanted:
                return False
        if self.event_id is not None and str(record.header_field("event_id")) != self.event_id:
            return False
        return self.mode is None or record.header_field("mode") == self.mode

    def scan_filter(self, topics: tuple[str, ...]) -> ScanFilter:
        """The part of this selection the audit store's database can filter."""
        from services.audit import ScanFilter  # noqa: PLC0415  # fast --help: SQLAlchemy

        return ScanFilter(
            topics=topics,
            partition=self.partition,
            from_offset=self.from_offset,
            to_offset=self.to_offset,
            since_ms=self.since_ms,
            until_ms=self.until_ms,
            message_id=self.message_id,
            report_type=self.report_type,
            originator=self.originator,
            # The stored status may differ from today's check: filtered on the record.
            contains=tuple(f'"{text}"' for text in (self.event_id, self.mode) if text),
        )
