"""The retention log: every purge, erasure, hold and release, chained like the records.

Each event's hash is ``SHA-256(previous event's hash || canonical encoding)``
in ``seq`` order, from :data:`~services.audit._chain.GENESIS`: an event
removed or altered breaks the chain, so a purge can never go unrecorded
without ``oix audit verify`` saying so. :func:`append_event` writes one, in
the caller's transaction (a synchronous connection: async callers go through
``run_sync``).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa

from services.audit._chain import GENESIS, micros
from services.audit._tables import retention_events

RETENTION_TAG = b"oix-audit-retention/1\n"

_INT = struct.Struct(">q")
_SHOWN_RANGES = 5
_LEN = struct.Struct(">I")


class RetentionKind(StrEnum):
    """What a retention event records."""

    PURGE = "purge"
    """Content of records past their retention removed (by the schedule or ``oix audit purge``)."""
    ERASURE = "erasure"
    """Content of one report removed before its retention ended, on its originator's request."""
    HOLD = "hold"
    """A legal hold placed: matching records are never purged while it stands."""
    RELEASE = "release"
    """A legal hold lifted: the next purge may take what it held."""
    RECHAIN = "rechain"
    """Rows chained with version 1 re-chained with version 2 (digests of content)."""


@dataclass(frozen=True, slots=True)
class RetentionEvent:
    """One stored retention event; ``detail`` is JSON (rule, coordinates, hold)."""

    seq: int
    event_id: str
    kind: RetentionKind
    recorded_at: datetime
    actor: str
    reason: str
    detail: str
    record_count: int
    row_hash: bytes = b""

    @property
    def details(self) -> dict[str, Any]:
        """``detail`` parsed."""
        parsed: dict[str, Any] = orjson.loads(self.detail)
        return parsed

    def describe(self) -> str:
        """One line for people: when, what, by whom, why, how many."""
        when = self.recorded_at.isoformat(timespec="seconds")
        text = f"{when} {self.kind} by {self.actor}"
        if self.kind in {RetentionKind.PURGE, RetentionKind.ERASURE}:
            text += f": {self.record_count} record(s)"
            ranges = self.details.get("ranges", [])
            if ranges:
                text += " at " + ", ".join(_range(r) for r in ranges[:_SHOWN_RANGES])
                if len(ranges) > _SHOWN_RANGES:
                    text += f" and {len(ranges) - _SHOWN_RANGES} more range(s)"
        elif self.kind is RetentionKind.HOLD or self.kind is RetentionKind.RELEASE:
            text += f": hold {self.details.get('hold_id')} ({self.details.get('scope')})"
        return f"{text}; {self.reason}"


def _range(item: dict[str, Any]) -> str:
    first, last = item["first_offset"], item["last_offset"]
    offsets = str(first) if first == last else f"{first}..{last}"
    epoch = f" epoch {item['epoch']}" if item["epoch"] else ""
    return f"{item['topic']}[{item['partition']}]{epoch} offset {offsets}"


def new_event_id() -> str:
    """A fresh event id."""
    return str(uuid.uuid4())


def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


def canonical_event(event: RetentionEvent) -> bytes:
    """The bytes of ``event`` its chain covers: every field but ``row_hash``, in order."""
    return b"".join(
        (
            RETENTION_TAG,
            _INT.pack(event.seq),
            _text(event.event_id),
            _text(str(event.kind)),
            _INT.pack(micros(event.recorded_at)),
            _text(event.actor),
            _text(event.reason),
            _text(event.detail),
            _INT.pack(event.record_count),
        ),
    )


def event_link(previous: bytes, event: RetentionEvent) -> bytes:
    """The hash of ``event`` following an event whose hash is ``previous``."""
    return hashlib.sha256(previous + canonical_event(event)).digest()


def chain_events(events: list[RetentionEvent]) -> list[int]:
    """The ``seq`` of every event whose hash does not follow, or whose ``seq`` skips."""
    broken = []
    previous = GENESIS
    for expected, event in enumerate(events, start=1):
        if event.seq != expected or event_link(previous, event) != event.row_hash:
            broken.append(event.seq)
        previous = event.row_hash
    return broken


def ranges_of(coordinates: list[tuple[str, int, int, int]]) -> list[dict[str, Any]]:
    """Sorted coordinates as contiguous offset ranges per topic, partition and epoch."""
    found: list[dict[str, Any]] = []
    for topic, partition, epoch, offset in sorted(coordinates):
        last = found[-1] if found else None
        if (
            last is not None
            and (last["topic"], last["partition"], last["epoch"]) == (topic, partition, epoch)
            and last["last_offset"] + 1 == offset
        ):
            last["last_offset"] = offset
            last["count"] += 1
            continue
        found.append(
            {
                "topic": topic,
                "partition": partition,
                "epoch": epoch,
                "first_offset": offset,
                "last_offset": offset,
                "count": 1,
            },
        )
    return found


_V = retention_events.c


def append_event(
    connection: sa.Connection,
    *,
    kind: RetentionKind,
    recorded_at: datetime,
    actor: str,
    reason: str,
    detail: dict[str, Any],
    record_count: int,
    event_id: str | None = None,
) -> RetentionEvent:
    """Chain and insert one retention event after the last one stored.

    Two writers at once on PostgreSQL: one commits, the other's ``seq``
    collides (a conflict to retry); SQLite writers queue on the write lock.
    """
    last = connection.execute(
        sa.select(_V.seq, _V.row_hash).order_by(_V.seq.desc()).limit(1),
    ).first()
    seq, previous = (1, GENESIS) if last is None else (last.seq + 1, bytes(last.row_hash))
    event = RetentionEvent(
        seq=seq,
        event_id=event_id or new_event_id(),
        kind=kind,
        recorded_at=recorded_at,
        actor=actor,
        reason=reason,
        detail=orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode(),
        record_count=record_count,
    )
    stored = _replace_hash(event, event_link(previous, event))
    connection.execute(
        retention_events.insert().values(
            seq=stored.seq,
            event_id=stored.event_id,
            kind=str(stored.kind),
            recorded_at=stored.recorded_at,
            actor=stored.actor,
            reason=stored.reason,
            detail=stored.detail,
            record_count=stored.record_count,
            row_hash=stored.row_hash,
        ),
    )
    return stored


def _replace_hash(event: RetentionEvent, row_hash: bytes) -> RetentionEvent:
    return RetentionEvent(
        event.seq,
        event.event_id,
        event.kind,
        event.recorded_at,
        event.actor,
        event.reason,
        event.detail,
        event.record_count,
        row_hash,
    )


def read_events(connection: sa.Connection) -> list[RetentionEvent]:
    """Every retention event, in ``seq`` order."""
    rows = connection.execute(sa.select(retention_events).order_by(_V.seq)).all()
    return [
        RetentionEvent(
            row.seq,
            row.event_id,
            RetentionKind(row.kind),
            _utc(row.recorded_at),
            row.actor,
            row.reason,
            row.detail,
            row.record_count,
            bytes(row.row_hash),
        )
        for row in rows
    ]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
