"""Retention of the audit store: purge past retention, erase on request, legal holds.

A record's content may be kept until ``retain_until``: its Kafka timestamp
plus the signed header's ``retention_days``, or plus the agreement's default
(``defaults.retention_days``) when the report names none or did not decode.
Purging clears the content columns (``value``, ``decoded``; of
``decode_error`` only its kind stays, see :func:`purged_error`) and marks
the row (``purged_at``, ``purge_id``); the Kafka coordinates and facts,
message id, originator, report type, signature status, the content's
digests and the chain link stay, so ``oix audit verify`` still proves the
trail (chain version 2 covers the digests, not the content).

Every purge, erasure, hold and release is a retention event in the chained
retention log (:mod:`services.audit._retention_log`). A record under an
active hold is never purged nor erased. SQLite runs with ``secure_delete``,
and the write-ahead log is truncated after a purge, so purged bytes are
overwritten in the file (``docs/audit.md`` says what PostgreSQL needs).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit._errors import RetentionRefusedError, StoreError
from services.audit._query import to_millis
from services.audit._record import DAY_MS
from services.audit._retention_log import (
    RetentionEvent,
    RetentionKind,
    append_event,
    new_event_id,
    ranges_of,
    read_events,
)
from services.audit._store import _DRIVER_ERRORS, AuditStore, classify
from services.audit._tables import holds, records
from services.bus import OixError, SignatureStatus, get_logger, wait_set

log = get_logger(__name__)

_R = records.c
_H = holds.c
PURGE_BATCH = 5000
"""Rows purged per transaction (and per retention event)."""

Coordinates = tuple[str, int, int, int]
Due = tuple[str, int, int, int, str | None]
"""A record to purge: its coordinates and its decode error (see :func:`purged_error`)."""

PURGED_ERROR = "(content purged)"


def purged_error(error: str | None) -> str | None:
    """What a purge leaves of a decode error: its kind, never the text (which may quote content).

    The kind (``UnknownSchemaError``, ``CorruptMessageError``…) says the
    record proved no originator, so it stays untrusted and counted as such.
    """
    if error is None:
        return None
    return f"{error.split(':', 1)[0]}: {PURGED_ERROR}"


def rule_text(default_days: int) -> str:
    """The retention rule a purge applies, as its events record it."""
    return (
        "retention_days of the report's signed header, counted from its Kafka timestamp; "
        f"{default_days} days (the agreement's default) where the report names none"
    )


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: records it matches are never purged while it stands."""

    hold_id: str
    message_id: str | None
    event_id: str | None
    since: datetime | None
    until: datetime | None
    reason: str
    placed_by: str
    placed_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None

    @property
    def scope(self) -> str:
        """What the hold covers, in words."""
        if self.message_id is not None:
            return f"message id {self.message_id}"
        if self.event_id is not None:
            return f"event id {self.event_id}"
        assert self.since is not None
        assert self.until is not None
        return f"Kafka time {self.since.isoformat()} to {self.until.isoformat()}"


@dataclass(slots=True)
class PurgeOutcome:
    """What a purge or an erasure did (or, on a dry run, would do)."""

    dry_run: bool
    count: int = 0
    ranges: list[dict[str, Any]] = field(default_factory=list)
    events: list[RetentionEvent] = field(default_factory=list)
    held: int = 0
    """Records past retention that a hold keeps."""
    unchained: int = 0
    """Records past retention still on chain version 1: `oix audit migrate` first."""
    wal_truncated: bool | None = None
    """SQLite: whether the write-ahead log was truncated after the purge (None: not SQLite)."""


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _held() -> sa.Exists:
    """An active hold matches the record (correlated with ``audit_record``)."""
    return sa.exists().where(
        _H.released_at.is_(None),
        sa.or_(
            sa.and_(_H.message_id.is_not(None), _H.message_id == _R.message_id),
            sa.and_(_H.event_key.is_not(None), _H.event_key == _R.record_key),
            sa.and_(
                _H.since_ms.is_not(None),
                _R.kafka_timestamp >= _H.since_ms,
                _R.kafka_timestamp < _H.until_ms,
            ),
        ),
    )


def _past_retention(now_ms: int, default_days: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        _R.purged_at.is_(None),
        sa.or_(
            _R.retain_until <= now_ms,
            sa.and_(
                _R.retain_until.is_(None),
                _R.kafka_timestamp <= now_ms - default_days * DAY_MS,
            ),
        ),
    )


_PURGE = (
    records.update()
    .where(
        _R.topic == sa.bindparam("b_topic"),
        _R.kafka_partition == sa.bindparam("b_partition"),
        _R.epoch == sa.bindparam("b_epoch"),
        _R.kafka_offset == sa.bindparam("b_offset"),
        _R.purged_at.is_(None),
    )
    .values(
        value=None,
        decoded=None,
        decode_error=sa.bindparam("b_decode_error"),
        purged_at=sa.bindparam("b_purged_at"),
        purge_id=sa.bindparam("b_purge_id"),
    )
)


class Retention:
    """Purges, erasures and holds on one :class:`~services.audit.AuditStore`.

    ``clock`` gives the current time (tests inject one instead of waiting).
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = PURGE_BATCH,
    ) -> None:
        self.store = store
        self.clock = clock
        self.batch = batch

    # -- purge -----------------------------------------------------------------------------

    async def purge(
        self,
        default_days: int,
        *,
        actor: str = "schedule",
        dry_run: bool = False,
    ) -> PurgeOutcome:
        """Purge the content of every record past its retention that no hold keeps.

        Raises:
            StoreUnavailableError: the database cannot be reached (retry).
            StoreError: the database refused (e.g. a role without the purge grant).
        """
        now = self.clock()
        now_ms = to_millis(now)
        due = _past_retention(now_ms, default_days)
        outcome = PurgeOutcome(dry_run=dry_run)
        try:
            async with self.store.reader.connect() as connection:
                outcome.held = await _count(connection, due, _held())
                outcome.unchained = await _count(connection, due, _R.opened_digest.is_(None))
                if dry_run:
                    found = await _coordinates(connection, due, None)
                    outcome.count = len(found)
                    outcome.ranges = ranges_of([d[:4] for d in found])
                    return outcome
            while True:
                async with self.store.writer.begin() as connection:
                    found = await _coordinates(connection, due, self.batch)
                    if not found:
                        break
                    event = await self._purge_rows(
                        connection,
                        found,
                        kind=RetentionKind.PURGE,
                        now=now,
                        actor=actor,
                        reason=rule_text(default_days),
                        detail={"rule": "retention", "default_days": default_days},
                    )
                outcome.count += len(found)
                outcome.ranges += ranges_of([d[:4] for d in found])
                outcome.events.append(event)
                if len(found) < self.batch:
                    break
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        if outcome.count:
            outcome.wal_truncated = await self._truncate_wal()
            log.info(
                "audit_purged",
                records=outcome.count,
                held=outcome.held,
                events=[e.event_id for e in outcome.events],
            )
        return outcome

    async def _purge_rows(
        self,
        connection: AsyncConnection,
        found: list[Due],
        *,
        kind: RetentionKind,
        now: datetime,
        actor: str,
        reason: str,
        detail: dict[str, Any],
    ) -> RetentionEvent:
        event_id = new_event_id()
        ranges = ranges_of([d[:4] for d in found])
        result = await connection.execute(
            _PURGE,
            [
                {
                    "b_topic": t,
                    "b_partition": p,
                    "b_epoch": e,
                    "b_offset": o,
                    "b_purged_at": now,
                    "b_purge_id": event_id,
                    "b_decode_error": purged_error(error),
                }
                for t, p, e, o, error in found
            ],
        )
        if result.rowcount not in (-1, len(found)):
            raise StoreError(
                f"purged {result.rowcount} of {len(found)} records: another purge ran at once; "
                "nothing was changed, run it again",
            )
        return await connection.run_sync(
            lambda sync: append_event(
                sync,
                kind=kind,
                recorded_at=now,
                actor=actor,
                reason=reason,
                detail={**detail, "ranges": ranges},
                record_count=len(found),
                event_id=event_id,
            ),
        )

    async def _truncate_wal(self) -> bool | None:
        """SQLite: fold the write-ahead log into the file and truncate it (purged pages go)."""
        if self.store.dialect != "sqlite":
            return None
        async with self.store.writer.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy, _, _ = await cursor.fetchone()
            await cursor.close()
        truncated: bool = busy == 0
        if not truncated:
            log.warning("audit_wal_not_truncated", reason="a reader or writer held the log")
        return truncated

    # -- erasure ---------------------------------------------------------------------------

    async def erase(
        self,
        message_id: str,
        *,
        requested_by: str,
        request_ref: str,
        reason: str,
        actor: str,
    ) -> PurgeOutcome:
        """Purge now the records of ``message_id`` from ``requested_by``, its proven originator.

        Raises:
            RetentionRefusedError: no such message; ``requested_by`` is not its
                proven originator; or a hold covers it.
        """
        if not request_ref.strip() or not reason.strip():
            raise RetentionRefusedError("an erasure needs the request's reference and its reason")
        now = self.clock()
        outcome = PurgeOutcome(dry_run=False)
        try:
            async with self.store.writer.begin() as connection:
                rows = (
                    await connection.execute(
                        sa.select(
                            _R.topic,
                            _R.kafka_partition,
                            _R.epoch,
                            _R.kafka_offset,
                            _R.originator,
                            _R.signature_status,
                            _R.decode_error,
                            _R.purged_at,
                            _R.opened_digest,
                            _held().label("held"),
                        ).where(_R.message_id == message_id),
                    )
                ).all()
                if not rows:
                    raise RetentionRefusedError(f"message id {message_id}: no record of it")
                proven = {
                    r.originator
                    for r in rows
                    if r.signature_status == SignatureStatus.VALID and r.decode_error is None
                }
                if requested_by not in proven:
                    named = ", ".join(sorted(o for o in proven if o)) or "none proven"
                    raise RetentionRefusedError(
                        f"message id {message_id}: {requested_by} is not its proven originator "
                        f"({named}); only the originator may ask for an erasure",
                    )
                mine = [r for r in rows if r.originator == requested_by]
                if any(r.held for r in mine):
                    raise RetentionRefusedError(
                        f"message id {message_id} is under a legal hold "
                        "(`oix audit holds`): it is erased once the hold is released",
                    )
                if any(r.opened_digest is None for r in mine):
                    raise RetentionRefusedError(
                        f"message id {message_id} is stored with chain version 1: run "
                        "`oix audit migrate` first",
                    )
                found: list[Due] = [
                    (r.topic, r.kafka_partition, r.epoch, r.kafka_offset, r.decode_error)
                    for r in mine
                    if r.purged_at is None
                ]
                if found:
                    event = await self._purge_rows(
                        connection,
                        sorted(found),
                        kind=RetentionKind.ERASURE,
                        now=now,
                        actor=actor,
                        reason=reason,
                        detail={
                            "message_id": message_id,
                            "requested_by": requested_by,
                            "request_ref": request_ref,
                        },
                    )
                    outcome.events.append(event)
                    outcome.count = len(found)
                    outcome.ranges = ranges_of([d[:4] for d in found])
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        if outcome.count:
            outcome.wal_truncated = await self._truncate_wal()
            log.info("audit_erased", message_id=message_id, records=outcome.count)
        return outcome

    # -- holds -----------------------------------------------------------------------------

    async def hold(
        self,
        *,
        reason: str,
        actor: str,
        message_id: str | None = None,
        event_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Hold:
        """Place a legal hold on a message id, an event id or a Kafka time range [since, until).

        Raises:
            RetentionRefusedError: not exactly one scope, an empty reason, or a bad range.
        """
        scopes = (message_id is not None) + (event_id is not None) + (since is not None)
        if scopes != 1 or (since is None) != (until is None):
            raise RetentionRefusedError(
                "a hold covers exactly one of: a message id, an event id, or a time range "
                "(since and until)",
            )
        if since is not None and until is not None and until <= since:
            raise RetentionRefusedError("hold: until must be after since")
        if not reason.strip():
            raise RetentionRefusedError("hold: the reason is required")
        if event_id is not None:
            try:
                event_id = str(uuid.UUID(event_id))
            except ValueError:
                raise RetentionRefusedError(f"hold: event id {event_id!r} is not a UUID") from None
        now = self.clock()
        placed = Hold(
            hold_id=new_event_id(),
            message_id=message_id,
            event_id=event_id,
            since=since,
            until=until,
            reason=reason,
            placed_by=actor,
            placed_at=now,
        )
        try:
            async with self.store.writer.begin() as connection:
                await connection.execute(
                    holds.insert().values(
                        hold_id=placed.hold_id,
                        message_id=message_id,
                        event_key=event_id.encode() if event_id is not None else None,
                        since_ms=to_millis(since) if since is not None else None,
                        until_ms=to_millis(until) if until is not None else None,
                        reason=reason,
                        placed_by=actor,
                        placed_at=now,
                    ),
                )
                await connection.run_sync(
                    lambda sync: append_event(
                        sync,
                        kind=RetentionKind.HOLD,
                        recorded_at=now,
                        actor=actor,
                        reason=reason,
                        detail={"hold_id": placed.hold_id, "scope": placed.scope},
                        record_count=0,
                    ),
                )
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        return placed

    async def release(self, hold_id: str, *, reason: str, actor: str) -> Hold:
        """Lift a hold: the next purge may take what it kept.

        Raises:
            RetentionRefusedError: no such hold, or it was released already.
        """
        if not reason.strip():
            raise RetentionRefusedError("release-hold: the reason is required")
        now = self.clock()
        try:
            async with self.store.writer.begin() as connection:
                found = [h for h in await _holds(connection) if h.hold_id == hold_id]
                if not found:
                    raise RetentionRefusedError(f"no hold {hold_id} (`oix audit holds`)")
                if found[0].released_at is not None:
                    raise RetentionRefusedError(f"hold {hold_id} was released already")
                await connection.execute(
                    holds.update()
                    .where(_H.hold_id == hold_id)
                    .values(released_at=now, released_by=actor),
                )
                await connection.run_sync(
                    lambda sync: append_event(
                        sync,
                        kind=RetentionKind.RELEASE,
                        recorded_at=now,
                        actor=actor,
                        reason=reason,
                        detail={"hold_id": hold_id, "scope": found[0].scope},
                        record_count=0,
                    ),
                )
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        held = found[0]
        return Hold(
            held.hold_id,
            held.message_id,
            held.event_id,
            held.since,
            held.until,
            held.reason,
            held.placed_by,
            held.placed_at,
            now,
            actor,
        )

    async def holds(self, *, active_only: bool = True) -> list[Hold]:
        """The holds, oldest first (only those standing unless ``active_only`` is False)."""
        async with self.store.reader.connect() as connection:
            found = await _holds(connection)
        return [h for h in found if h.released_at is None or not active_only]

    async def events(self) -> list[RetentionEvent]:
        """Every retention event, in order."""
        return await retention_events(self.store)


async def retention_events(store: AuditStore) -> list[RetentionEvent]:
    """Every retention event of ``store``, in order."""
    async with store.reader.connect() as connection:
        return await connection.run_sync(read_events)


async def _count(
    connection: AsyncConnection, due: sa.ColumnElement[bool], extra: sa.ColumnElement[bool]
) -> int:
    statement = sa.select(sa.func.count()).select_from(records).where(due, extra)
    return int((await connection.execute(statement)).scalar() or 0)


async def _coordinates(
    connection: AsyncConnection, due: sa.ColumnElement[bool], limit: int | None
) -> list[Due]:
    statement = (
        sa.select(_R.topic, _R.kafka_partition, _R.epoch, _R.kafka_offset, _R.decode_error)
        .where(due, _R.opened_digest.is_not(None), ~_held())
        .order_by(_R.topic, _R.kafka_partition, _R.epoch, _R.kafka_offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    return [tuple(row) for row in await connection.execute(statement)]


async def _holds(connection: AsyncConnection) -> list[Hold]:
    rows = await connection.execute(sa.select(holds).order_by(_H.placed_at, _H.hold_id))
    return [
        Hold(
            hold_id=row.hold_id,
            message_id=row.message_id,
            event_id=bytes(row.event_key).decode() if row.event_key is not None else None,
            since=_from_millis(row.since_ms),
            until=_from_millis(row.until_ms),
            reason=row.reason,
            placed_by=row.placed_by,
            placed_at=_utc(row.placed_at) or row.placed_at,
            released_at=_utc(row.released_at),
            released_by=row.released_by,
        )
        for row in rows
    ]


def _from_millis(millis: int | None) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC)


async def run_purge_schedule(
    store: AuditStore,
    default_days: int,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Purge at start and then every ``interval_s`` seconds until ``stop`` is set.

    A failed round is logged and tried again at the next one: the consumer
    goes on storing meanwhile.
    """
    retention = Retention(store)
    while not stop.is_set():
        try:
            await retention.purge(default_days, actor="schedule (oix audit run)")
        except OixError as exc:
            log.warning("audit_purge_failed", error=str(exc))
        await wait_set(stop, interval_s)
