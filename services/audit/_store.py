"""The audit store: one interface over SQLite (embedded) and PostgreSQL (production).

SQLAlchemy Core (async) does every query; PostgreSQL bulk inserts go through
asyncpg's binary COPY inside the same transaction, several times faster than
multi-row INSERT. The store only ever INSERTs and SELECTs, except for
retention (``_retention.py``), which clears the content columns of a row
past its retention and records that it did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; errors only
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audit._chain import GENESIS, facts_of
from services.audit._engine import create_engine, is_sqlite
from services.audit._errors import StoreConflictError, StoreError, StoreUnavailableError
from services.audit._events import EventKind, LogEvent
from services.audit._migrate import check_revision
from services.audit._query import RecordQuery, to_millis
from services.audit._record import COLUMNS, AuditRecord
from services.audit._tables import UNTRUSTED, events, records
from services.bus import SignatureStatus

Partition = tuple[str, int]

_R = records.c
_E = events.c
_ORDER = (_R.topic, _R.kafka_partition, _R.epoch, _R.kafka_offset)
_SELECT_RECORDS = sa.select(*[records.c[name] for name in COLUMNS])
_PLACEHOLDERS = ", ".join("?" * len(COLUMNS))
_INSERT = f"INSERT INTO {records.name} ({', '.join(COLUMNS)}) VALUES ({_PLACEHOLDERS})"  # noqa: S608  # no input


@dataclass(frozen=True, slots=True)
class PartitionHead:
    """Where the store stands on one partition: the consumer resumes from here.

    ``last_offset`` and ``last_facts`` describe the last row of the current
    epoch (None when the epoch has no row yet); ``chain`` is the hash of the
    partition's last row in any epoch.
    """

    epoch: int
    last_offset: int | None
    last_facts: bytes | None
    chain: bytes

    @property
    def next_offset(self) -> int | None:
        """The first offset not stored yet in the current epoch."""
        return None if self.last_offset is None else self.last_offset + 1


@dataclass(frozen=True, slots=True)
class PartitionExtent:
    """What the store holds of one epoch of one partition."""

    topic: str
    partition: int
    epoch: int
    first_offset: int
    last_offset: int
    count: int


_PROVEN = (
    _R.signature_status == str(SignatureStatus.VALID),
    _R.decode_error.is_(None),
    _R.message_id.is_not(None),
)
"""A record that proves its originator (see :attr:`AuditRecord.trusted`)."""


def _reused_ids() -> sa.Select[tuple[str]]:
    """Message ids stored under more than one proven originator."""
    return (
        sa.select(_R.message_id)
        .where(*_PROVEN)
        .group_by(_R.message_id)
        .having(sa.func.count(sa.distinct(_R.originator)) > 1)
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


_STORED_AT = COLUMNS.index("stored_at")
_PURGED_AT = COLUMNS.index("purged_at")


def _record(row: Sequence[Any]) -> AuditRecord:
    values = list(row)
    values[_STORED_AT] = _utc(values[_STORED_AT])
    if values[_PURGED_AT] is not None:
        values[_PURGED_AT] = _utc(values[_PURGED_AT])
    return AuditRecord(*values)


def _event(row: Any) -> LogEvent:
    return LogEvent(
        topic=row.topic,
        partition=row.kafka_partition,
        epoch=row.epoch,
        kind=EventKind(row.kind),
        first_offset=row.first_offset,
        last_offset=row.last_offset,
        detail=row.detail,
        recorded_at=_utc(row.recorded_at),
    )


def classify(error: BaseException) -> StoreError:
    """The store error a driver or connection error means: conflict, unavailable or permanent.

    Errors come wrapped by SQLAlchemy, or straight from asyncpg for COPY.
    """
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    if isinstance(error, sa_exc.IntegrityError) or isinstance(
        cause, asyncpg.IntegrityConstraintViolationError
    ):
        return StoreConflictError(f"another writer stored these offsets first: {cause}")
    if isinstance(error, sa_exc.ProgrammingError) or isinstance(
        cause, asyncpg.SyntaxOrAccessError | asyncpg.DataError
    ):
        return StoreError(f"the audit store refused the operation: {cause}")
    return StoreUnavailableError(f"the audit store is unavailable: {cause!r}")


_DRIVER_ERRORS = (
    sa_exc.DBAPIError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class AuditStore:
    """Append-only storage of audit records and log events, with the queries auditors need.

    Use :meth:`open` (it checks the schema revision) and :meth:`close`.
    """

    def __init__(self, url: str, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self.url = url
        self.dialect = "sqlite" if is_sqlite(url) else "postgresql"
        self._engine = engine
        self._reader = reader
        # SQLAlchemy's own conversion of stored_at, applied once per batch on the fast path.
        dialect = engine.dialect
        self._store_time = _R.stored_at.type.dialect_impl(dialect).bind_processor(dialect)

    @classmethod
    async def open(cls, url: str, *, check_schema: bool = True) -> AuditStore:
        """Connect to the store at ``url`` (an async SQLAlchemy URL).

        Raises:
            SchemaVersionError: the database is not migrated to this release's revision.
            StoreUnavailableError: the database cannot be reached.
        """
        engine = create_engine(url, writer=True)
        reader = create_engine(url) if is_sqlite(url) else engine
        store = cls(url, engine, reader)
        if check_schema:
            try:
                await check_revision(reader)
            except _DRIVER_ERRORS as exc:
                await store.close()
                raise classify(exc) from exc
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        """Release every connection."""
        await self._engine.dispose()
        if self._reader is not self._engine:
            await self._reader.dispose()

    @property
    def writer(self) -> AsyncEngine:
        """The engine that writes (SQLite: takes the write lock at BEGIN)."""
        return self._engine

    @property
    def reader(self) -> AsyncEngine:
        """The engine that reads."""
        return self._reader

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # -- the consumer's side ---------------------------------------------------------------

    async def heads(self, partitions: Iterable[Partition]) -> dict[Partition, PartitionHead]:
        """Where the store stands on each of ``partitions``.

        Raises:
            StoreUnavailableError: the database cannot be reached (retry).
        """
        try:
            async with self._reader.connect() as connection:
                return {p: await self._head(connection, p) for p in partitions}
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    @staticmethod
    async def _last_row(connection: AsyncConnection, partition: Partition) -> Any:
        topic, number = partition
        query = (
            sa.select(
                _R.epoch,
                _R.kafka_offset,
                _R.kafka_timestamp,
                _R.timestamp_type,
                _R.record_key,
                _R.headers,
                _R.value_digest,
                _R.row_hash,
            )
            .where(_R.topic == topic, _R.kafka_partition == number)
            .order_by(_R.epoch.desc(), _R.kafka_offset.desc())
            .limit(1)
        )
        return (await connection.execute(query)).first()

    async def _head(self, connection: AsyncConnection, partition: Partition) -> PartitionHead:
        topic, number = partition
        last = await self._last_row(connection, partition)
        reset_epoch = (
            await connection.execute(
                sa.select(sa.func.max(_E.epoch)).where(
                    _E.topic == topic,
                    _E.kafka_partition == number,
                    _E.kind == str(EventKind.LOG_RESET),
                ),
            )
        ).scalar()
        if last is None:
            return PartitionHead(reset_epoch or 0, None, None, GENESIS)
        if reset_epoch is not None and reset_epoch > last.epoch:
            return PartitionHead(reset_epoch, None, None, last.row_hash)
        return PartitionHead(last.epoch, last.kafka_offset, facts_of(last), last.row_hash)

    async def append(
        self,
        batch: Sequence[AuditRecord],
        log_events: Sequence[LogEvent],
        expected: dict[Partition, bytes],
    ) -> None:
        """Write ``batch`` and ``log_events`` in one transaction, or nothing.

        ``expected`` holds, for every partition the batch touches, the hash of
        the last row the batch was chained to: the store's position. If the
        store has moved on (another consumer, or an earlier attempt that did
        commit), nothing is written.

        Raises:
            StoreConflictError: the store's position is not ``expected``.
            StoreUnavailableError: the database cannot be reached (retry).
            StoreError: the database refused (permissions, schema): retrying will not help.
        """
        try:
            async with self._engine.begin() as connection:
                for partition, chain in expected.items():
                    last = await self._last_row(connection, partition)
                    found = GENESIS if last is None else last.row_hash
                    if found != chain:
                        raise StoreConflictError(
                            f"{partition[0]}[{partition[1]}]: the store has moved past the "
                            "position this batch was built on",
                        )
                if log_events:
                    await connection.execute(
                        events.insert(), [_event_row(event) for event in log_events]
                    )
                if batch:
                    await self._insert(connection, batch)
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    async def _insert(self, connection: AsyncConnection, batch: Sequence[AuditRecord]) -> None:
        if self.dialect == "postgresql":
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            # COPY must run inside the transaction the position check opened.
            assert driver.is_in_transaction()
            await driver.copy_records_to_table(records.name, records=batch, columns=COLUMNS)
        else:
            # Plain executemany of tuples: SQLAlchemy's per-row parameter processing
            # costs more than the insert itself.
            convert = self._store_time
            times: dict[datetime, Any] = {}
            rows = []
            for r in batch:
                stored_at = times.get(r.stored_at)
                if stored_at is None:
                    stored_at = convert(r.stored_at) if convert else r.stored_at
                    times[r.stored_at] = stored_at
                rows.append((*r[:_STORED_AT], stored_at, *r[_STORED_AT + 1 :]))
            await connection.exec_driver_sql(_INSERT, rows)

    # -- the auditor's side ----------------------------------------------------------------

    async def query(self, query: RecordQuery, *, more: int = 0) -> list[AuditRecord]:
        """Stored records matching every filter of ``query`` (``more`` beyond its limit)."""
        statement = _SELECT_RECORDS
        conditions: list[sa.ColumnElement[bool]] = []
        for column, value in (
            (_R.message_id, query.message_id),
            (_R.originator, query.originator),
            (_R.report_type, query.report_type),
            (_R.topic, query.topic),
            (_R.kafka_partition, query.partition),
            (_R.epoch, query.epoch),
            (_R.signature_status, query.signature_status),
        ):
            if value is not None:
                conditions.append(column == value)
        if query.proven_originator_only:
            conditions.append(_R.signature_status == str(SignatureStatus.VALID))
        if query.reused:
            conditions += [*_PROVEN, _R.message_id.in_(_reused_ids())]
        if query.since is not None:
            conditions.append(_R.kafka_timestamp >= to_millis(query.since))
        if query.until is not None:
            conditions.append(_R.kafka_timestamp < to_millis(query.until))
        if query.from_offset is not None:
            conditions.append(_R.kafka_offset >= query.from_offset)
        if query.to_offset is not None:
            conditions.append(_R.kafka_offset <= query.to_offset)
        order = _ORDER if query.topic is not None else (_R.kafka_timestamp, *_ORDER)
        if query.reused:
            order = (_R.message_id, *order)
        statement = statement.where(*conditions).order_by(*order).limit(query.limit + more)
        async with self._reader.connect() as connection:
            result = await connection.execute(statement)
            return [_record(row) for row in result]

    async def query_page(self, query: RecordQuery) -> tuple[list[AuditRecord], bool]:
        """Like :meth:`query`, and whether ``query.limit`` cut the result short."""
        found = await self.query(query, more=1)
        return found[: query.limit], len(found) > query.limit

    async def reused_message_ids(self) -> list[AuditRecord]:
        """The proven records of every message id stored under more than one proven originator.

        A message is (originator, message id): the same id from two parties
        names two different messages, which consumers that deduplicate by id
        alone would confuse. Ordered by message id, then Kafka timestamp.
        """
        statement = _SELECT_RECORDS.where(*_PROVEN, _R.message_id.in_(_reused_ids())).order_by(
            _R.message_id, _R.kafka_timestamp, *_ORDER
        )
        async with self._reader.connect() as connection:
            return [_record(row) for row in await connection.execute(statement)]

    async def scan(
        self, topic: str, partition: int, after: tuple[int, int] | None, limit: int
    ) -> list[AuditRecord]:
        """Up to ``limit`` rows of one partition in (epoch, offset) order, after ``after``."""
        statement = _SELECT_RECORDS.where(_R.topic == topic, _R.kafka_partition == partition)
        if after is not None:
            epoch, offset = after
            statement = statement.where(
                sa.or_(_R.epoch > epoch, sa.and_(_R.epoch == epoch, _R.kafka_offset > offset)),
            )
        statement = statement.order_by(_R.epoch, _R.kafka_offset).limit(limit)
        async with self._reader.connect() as connection:
            result = await connection.execute(statement)
            return [_record(row) for row in result]

    async def extents(self) -> list[PartitionExtent]:
        """What the store holds, per topic, partition and epoch."""
        statement = (
            sa.select(
                _R.topic,
                _R.kafka_partition,
                _R.epoch,
                sa.func.min(_R.kafka_offset),
                sa.func.max(_R.kafka_offset),
                sa.func.count(),
            )
            .group_by(_R.topic, _R.kafka_partition, _R.epoch)
            .order_by(_R.topic, _R.kafka_partition, _R.epoch)
        )
        async with self._reader.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [PartitionExtent(*row) for row in rows]

    async def log_events(self) -> list[LogEvent]:
        """Every discontinuity the consumers noticed, oldest first."""
        statement = sa.select(events).order_by(
            _E.topic, _E.kafka_partition, _E.epoch, _E.recorded_at
        )
        async with self._reader.connect() as connection:
            return [_event(row) for row in await connection.execute(statement)]

    # -- the quarantine's side ---------------------------------------------------------------

    async def untrusted(self, partitions: Iterable[Partition]) -> list[AuditRecord]:
        """Every stored record of ``partitions`` that cannot be trusted, in (epoch, offset) order.

        Raises:
            StoreUnavailableError: the database cannot be reached (retry).
        """
        by_topic: dict[str, list[int]] = {}
        for topic, number in partitions:
            by_topic.setdefault(topic, []).append(number)
        found: list[AuditRecord] = []
        try:
            async with self._reader.connect() as connection:
                for topic, numbers in sorted(by_topic.items()):
                    statement = _SELECT_RECORDS.where(
                        _R.topic == topic,
                        _R.kafka_partition.in_(sorted(numbers)),
                        sa.text(f"({UNTRUSTED})"),
                    ).order_by(*_ORDER)
                    found.extend(_record(row) for row in await connection.execute(statement))
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        return found

    async def keys(self, topic: str) -> set[bytes]:
        """The key of every record stored from ``topic``, in every epoch.

        Raises:
            StoreUnavailableError: the database cannot be reached (retry).
        """
        statement = sa.select(_R.record_key).where(_R.topic == topic, _R.record_key.is_not(None))
        try:
            async with self._reader.connect() as connection:
                return {bytes(key) for key in (await connection.execute(statement)).scalars()}
        except _DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    async def count(self) -> int:
        """How many records the store holds."""
        async with self._reader.connect() as connection:
            total = (
                await connection.execute(sa.select(sa.func.count()).select_from(records))
            ).scalar()
        return int(total or 0)


def _event_row(event: LogEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "topic": event.topic,
        "kafka_partition": event.partition,
        "epoch": event.epoch,
        "kind": str(event.kind),
        "first_offset": event.first_offset,
        "last_offset": event.last_offset,
        "detail": event.detail,
        "recorded_at": event.recorded_at,
    }
