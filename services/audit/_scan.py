"""A streamed, filtered read of the store for replay and export: any history, bounded memory.

:class:`RecordScan` pages through ``audit_record`` in chain order (topic,
partition, epoch, offset) with keyset pagination, so a scan of millions of
rows holds one page at a time and never skips or repeats a row. It has its
own read-only engine: it never writes, and never waits for the consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Self

import sqlalchemy as sa

from services.audit._chain import GENESIS
from services.audit._engine import create_engine, is_sqlite, sqlite_path
from services.audit._errors import StoreUnavailableError
from services.audit._migrate import check_revision
from services.audit._record import COLUMNS, AuditRecord
from services.audit._store import classify
from services.audit._tables import records

_R = records.c
_KEY = (_R.topic, _R.kafka_partition, _R.epoch, _R.kafka_offset)
_SELECT = sa.select(*[records.c[name] for name in COLUMNS])
_STORED_AT = COLUMNS.index("stored_at")

Coordinates = tuple[str, int, int, int]
"""(topic, partition, epoch, offset): a stored row's key and its place in its chain."""


@dataclass(frozen=True, slots=True)
class ScanFilter:
    """What a scan keeps; every given filter must hold. The database does the filtering.

    ``since_ms``/``until_ms`` bound the Kafka record timestamp (``until_ms``
    excluded); ``from_offset``/``to_offset`` bound the offset (both included).
    ``contains`` keeps rows whose decoded JSON holds every one of its strings
    (a coarse pre-filter: the caller checks the field it meant).
    """

    topics: tuple[str, ...] = ()
    partition: int | None = None
    epoch: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    message_id: str | None = None
    report_type: str | None = None
    originator: str | None = None
    signature_status: str | None = None
    contains: tuple[str, ...] = field(default=())

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses of this filter."""
        found: list[sa.ColumnElement[bool]] = []
        if self.topics:
            found.append(_R.topic.in_(self.topics))
        for column, value in (
            (_R.kafka_partition, self.partition),
            (_R.epoch, self.epoch),
            (_R.message_id, self.message_id),
            (_R.report_type, self.report_type),
            (_R.originator, self.originator),
            (_R.signature_status, self.signature_status),
        ):
            if value is not None:
                found.append(column == value)
        if self.from_offset is not None:
            found.append(_R.kafka_offset >= self.from_offset)
        if self.to_offset is not None:
            found.append(_R.kafka_offset <= self.to_offset)
        if self.since_ms is not None:
            found.append(_R.kafka_timestamp >= self.since_ms)
        if self.until_ms is not None:
            found.append(_R.kafka_timestamp < self.until_ms)
        found.extend(_R.decoded.contains(text, autoescape=True) for text in self.contains)
        return found


class RecordScan:
    """Streams stored records in chain order; use :meth:`open` and :meth:`close`."""

    def __init__(self, url: str, engine: Any) -> None:
        self.url = url
        self._engine = engine

    @classmethod
    async def open(cls, url: str) -> Self:
        """A scan of the store at ``url`` (checked to be at this release's schema revision).

        Raises:
            SchemaVersionError: the database is not migrated to this release's revision.
            StoreUnavailableError: the database cannot be reached.
        """
        path = sqlite_path(url) if is_sqlite(url) else None
        if path is not None and not path.is_file():
            # A reader must not create the store (SQLite would, empty).
            raise StoreUnavailableError(f"there is no audit store at {path}")
        engine = create_engine(url)
        try:
            await check_revision(engine)
        except (sa.exc.DBAPIError, OSError, TimeoutError) as exc:
            await engine.dispose()
            raise classify(exc) from exc
        except BaseException:
            await engine.dispose()
            raise
        return cls(url, engine)

    async def close(self) -> None:
        """Release every connection."""
        await self._engine.dispose()

    async def records(
        self, wanted: ScanFilter, *, page: int = 1000, start: Coordinates | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Every stored record ``wanted`` keeps, in chain order, ``page`` rows at a time.

        ``start`` skips the rows before those coordinates.
        """
        after: Coordinates | None = None
        conditions = wanted.conditions()
        if start is not None:
            conditions.append(sa.tuple_(*_KEY) >= sa.tuple_(*start))
        while True:
            statement = _SELECT.where(*conditions)
            if after is not None:
                statement = statement.where(sa.tuple_(*_KEY) > sa.tuple_(*after))
            statement = statement.order_by(*_KEY).limit(page)
            try:
                async with self._engine.connect() as connection:
                    rows = (await connection.execute(statement)).all()
            except (sa.exc.DBAPIError, OSError) as exc:
                raise classify(exc) from exc
            for row in rows:
                yield _record(row)
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last.topic, last.kafka_partition, last.epoch, last.kafka_offset)

    async def segment(
        self, topic: str, partition: int, first: tuple[int, int], last: tuple[int, int]
    ) -> AsyncIterator[AuditRecord]:
        """Every row of one partition from ``first`` to ``last`` (epoch, offset), both included.

        A contiguous piece of the partition's chain, whatever the rows hold.
        """
        wanted = ScanFilter(topics=(topic,), partition=partition)
        async for row in self.records(wanted, start=(topic, partition, *first)):
            if (row.epoch, row.kafka_offset) > last:
                return
            yield row

    async def previous_hash(self, topic: str, partition: int, epoch: int, offset: int) -> bytes:
        """The hash of the row stored before (topic, partition, epoch, offset): where it links.

        :data:`GENESIS` for a partition's first row.
        """
        statement = (
            sa.select(_R.row_hash)
            .where(
                _R.topic == topic,
                _R.kafka_partition == partition,
                sa.tuple_(_R.epoch, _R.kafka_offset) < sa.tuple_(epoch, offset),
            )
            .order_by(_R.epoch.desc(), _R.kafka_offset.desc())
            .limit(1)
        )
        async with self._engine.connect() as connection:
            found = (await connection.execute(statement)).scalar()
        return GENESIS if found is None else bytes(found)

    async def latest_epoch(self, topic: str, partition: int) -> int | None:
        """The newest epoch stored of one partition (the log the broker serves now), or None."""
        statement = sa.select(sa.func.max(_R.epoch)).where(
            _R.topic == topic, _R.kafka_partition == partition
        )
        async with self._engine.connect() as connection:
            found = (await connection.execute(statement)).scalar()
        return None if found is None else int(found)

    async def partitions(self, topics: tuple[str, ...] = ()) -> list[tuple[str, int]]:
        """Every (topic, partition) the store holds rows of, of ``topics`` if given."""
        statement = sa.select(_R.topic, _R.kafka_partition).distinct()
        if topics:
            statement = statement.where(_R.topic.in_(topics))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement.order_by(*_KEY[:2]))).all()
        return [(row.topic, row.kafka_partition) for row in rows]


def _record(row: Any) -> AuditRecord:
    values = list(row)
    stored_at = values[_STORED_AT]
    if stored_at.tzinfo is None:  # SQLite returns naive UTC
        values[_STORED_AT] = stored_at.replace(tzinfo=UTC)
    return AuditRecord(*values)
