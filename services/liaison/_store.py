"""The liaison store: one interface over SQLite (embedded) and PostgreSQL (production).

The consumer writes each batch in one transaction: the position check, the
new reports folded into their events, the change log, alerts, webhook
deliveries (the outbox) and the new positions, or nothing. The officer's
side reads it; every method takes the agency and every query names it, so
one agency's officers never reach another's rows, whatever they ask for.

Within a transaction the agency's ``liaison_cursor`` row is locked first
(``FOR UPDATE``; SQLite's writers queue at ``BEGIN IMMEDIATE``): writers of
one agency take turns, so the change log's ``seq`` grows in commit order and
a live stream resuming after ``seq`` misses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]  # no stubs; errors only
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.bus import Position
from services.liaison._engine import create_engine, create_sqlite_writer, is_sqlite
from services.liaison._errors import StoreConflictError, StoreError, StoreUnavailableError
from services.liaison._events import (
    WITHDRAWN,
    EventState,
    add_report,
    cancel,
    new_event,
)
from services.liaison._migrate import check_revision
from services.liaison._received import Facts
from services.liaison._tables import (
    alerts,
    changes,
    cursors,
    events,
    links,
    messages,
    outbox,
    outgoing,
    positions,
    sessions,
)

Partition = tuple[str, int]
DAY_MS = 86_400_000

_M = messages.c
_E = events.c
_C = changes.c
_A = alerts.c
_L = links.c
_O = outbox.c
_G = outgoing.c
_S = sessions.c
_IN_CHUNK = 500
T = TypeVar("T")

Step = tuple[Any, Any]
"""A statement and its parameters (a list of rows: executed for each; a dict or None: once).

A ``str`` statement is the driver's own SQL (see :func:`_bulk_insert`)."""
Steps = Generator[Step, Sequence[Any], T]
"""Work on one transaction, as the statements it runs: each gets back its rows.

The consumer's write is written once this way and run by either driver:
:func:`_run` on an async connection (PostgreSQL), or whole in the writer
thread of a SQLite store (:class:`_SqliteWriter`).
"""


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A trusted report released to the agency, with where it was read."""

    facts: Facts
    topic: str
    partition: int
    offset: int
    epoch: int
    signature_status: str
    key_id: str | None
    value_sha256: str


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """Something an officer must know that is not a report."""

    alert_id: str
    kind: str
    detail: str
    topic: str | None = None
    partition: int | None = None
    epoch: int | None = None
    offset: int | None = None
    message_id: str | None = None
    originator: str | None = None
    report_type: str | None = None
    signature_status: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook delivery to queue: endpoint, its id (the receiver's dedupe key), the body."""

    endpoint: str
    delivery_id: str
    payload: str


Deliveries = Callable[[Facts, str], list[Delivery]]
"""The webhook deliveries of a new report, given its event's status."""


@dataclass(slots=True)
class WriteBatch:
    """What one consumer batch writes, in one transaction."""

    reports: list[Incoming] = field(default_factory=list)
    alerts: list[AlertDraft] = field(default_factory=list)
    positions: dict[Partition, Position] = field(default_factory=dict)
    expected: dict[Partition, Position | None] = field(default_factory=dict)
    """The stored position each partition's batch was read from (None: no row)."""


class Row:
    """A row written, its columns read as attributes (as a result row's are).

    Plain instance attributes: the live stream reads some fifty per change, and a
    dict answering through ``__getattr__`` (a failed lookup first) cost it a third
    of its time.
    """

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.__dict__.update(columns)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)  # for mypy: columns are set per instance


class BatchRows:
    """The rows one batch wrote, shared by its changes; looked up only if a stream sends them."""

    def __init__(
        self,
        messages: list[dict[str, Any]],
        events: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
        marks: list[dict[str, Any]],
    ) -> None:
        self._rows = (messages, events, alerts, marks)
        self._found: dict[str, dict[Any, Row]] | None = None

    @property
    def found(self) -> dict[str, dict[Any, Row]]:
        """The rows by key, as a stream would read them after the commit.

        ``events`` by (originator, event id), ``messages`` by (originator,
        message id), ``alerts`` by alert id.
        """
        if self._found is None:
            messages, events, alerts, marks = self._rows
            by_message = {(r["originator"], r["message_id"]): Row(r) for r in messages}
            for mark in marks:
                row = by_message.get((mark["b_originator"], mark["b_message_id"]))
                if row is not None:
                    vars(row).update({k: v for k, v in mark.items() if not k.startswith("b_")})
            self._found = {
                "events": {(r["originator"], r["event_id"]): Row(r) for r in events},
                "messages": by_message,
                "alerts": {r["alert_id"]: Row(r) for r in alerts},
            }
        return self._found


@dataclass(slots=True)
class Logged:
    """One change of the log as its batch committed it, for the live streams."""

    change: dict[str, Any]
    rows: BatchRows
    text: str | None = None
    """The SSE text once a stream rendered it (None: not for this agency's officers)."""
    rendered: bool = False

    @property
    def seq(self) -> int:
        """The change's seq."""
        seq: int = self.change["seq"]
        return seq


@dataclass(slots=True)
class Written:
    """What a committed batch did."""

    stored: list[tuple[int, Incoming]] = field(default_factory=list)
    duplicates: int = 0
    alerts: list[AlertDraft] = field(default_factory=list)
    deliveries: int = 0
    last_seq: int = 0
    changes: list[Logged] = field(default_factory=list)
    """The batch's changes with their rows (the live streams send them without a query)."""


def classify(error: BaseException) -> StoreError:
    """The store error a driver or connection error means: conflict, unavailable or permanent."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    if isinstance(error, sa_exc.IntegrityError) or isinstance(
        cause, asyncpg.IntegrityConstraintViolationError
    ):
        return StoreConflictError(f"another writer stored these first: {cause}")
    if isinstance(error, sa_exc.ProgrammingError) or isinstance(
        cause, asyncpg.SyntaxOrAccessError | asyncpg.DataError
    ):
        return StoreError(f"the liaison store refused the operation: {cause}")
    return StoreUnavailableError(f"the liaison store is unavailable: {cause!r}")


DRIVER_ERRORS = (
    sa_exc.DBAPIError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


async def _run(connection: AsyncConnection, steps: Steps[T]) -> T:
    """Run ``steps`` on an async connection, statement by statement."""
    try:
        statement, params = next(steps)
        while True:
            result = await (
                connection.exec_driver_sql(statement, params)
                if isinstance(statement, str)
                else connection.execute(statement, params)
            )
            statement, params = steps.send(result.all() if result.returns_rows else [])
    except StopIteration as done:
        value: T = done.value
        return value


def _run_blocking(connection: sa.Connection, steps: Steps[T]) -> T:
    """Run ``steps`` on a blocking connection (in a thread of its own)."""
    try:
        statement, params = next(steps)
        while True:
            result = (
                connection.exec_driver_sql(statement, params)
                if isinstance(statement, str)
                else connection.execute(statement, params)
            )
            statement, params = steps.send(result.all() if result.returns_rows else [])
    except StopIteration as done:
        value: T = done.value
        return value


def _save_cursor(agency: str, last_seq: int) -> Steps[None]:
    yield _SAVE_CURSOR, {"b_agency": agency, "v_last_seq": last_seq}


_SAVE_CURSOR = (
    sa.update(cursors)
    .where(cursors.c.agency == sa.bindparam("b_agency"))
    .values(last_seq=sa.bindparam("v_last_seq"))
)


class _SqliteWriter:
    """Runs a SQLite store's batch transactions whole, one at a time, in one thread.

    One hop to the thread per batch instead of several per statement
    (aiosqlite): the event loop stays free for fetching and the live streams,
    and the write lock is held for the statements only.
    """

    def __init__(self, url: str) -> None:
        self._engine = create_sqlite_writer(url)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="oix-liaison-writer")

    async def run(self, steps: Steps[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, steps)

    def _transaction(self, steps: Steps[T]) -> T:
        with self._engine.begin() as connection:
            return _run_blocking(connection, steps)

    async def close(self) -> None:
        # After the transaction in progress, if any: the thread takes work in order.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


def _chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@cache
def _bulk_sql(dialect: str, table: sa.Table) -> tuple[str, Callable[[Any], tuple[Any, ...]]]:
    names = [c.name for c in table.columns]
    if dialect == "postgresql":
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    else:
        marks = ", ".join("?" * len(names))
    # Names from this module's own tables; every value is a parameter.
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})"  # noqa: S608
    return sql, itemgetter(*names)


def _bulk_insert(dialect: str, table: sa.Table, rows: list[dict[str, Any]]) -> Steps[None]:
    """Insert ``rows`` (every column of ``table``): one executemany of tuples.

    It skips SQLAlchemy's per-row parameter processing, which cost as much
    as the database's own work (asyncpg pipelines the rows; sqlite3 binds
    them in C).
    """
    sql, values = _bulk_sql(dialect, table)
    yield sql, [values(row) for row in rows]


def _among(dialect: str, column: sa.ColumnElement[Any], name: str) -> Any:
    """``column IN :name`` (a list); on PostgreSQL ``= ANY(array)``: one statement, any size."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.Text)))
    return column.in_(sa.bindparam(name, expanding=True))


@dataclass(frozen=True, slots=True)
class _Queries:
    """The write path's statements, built once per dialect.

    Built per batch, they cost the writer more than SQLite's own work on a
    small batch (expressions, then their cache keys); built once, their cache
    keys are kept. Parameters: ``agency``, ``ids`` (a list), ``originator``,
    ``topics`` (a list).
    """

    lock: Any
    positions: Any
    stored: Any
    referenced: Any
    events: Any
    alerts: Any
    save_positions: Any
    """An upsert of rows of ``liaison_position`` (executed for each row)."""


@cache
def _queries(dialect: str) -> _Queries:
    agency: sa.BindParameter[str] = sa.bindparam("agency")
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(positions)
    upsert = upsert.on_conflict_do_update(
        index_elements=["agency", "topic", "kafka_partition"],
        set_={
            "epoch": upsert.excluded.epoch,
            "next_offset": upsert.excluded.next_offset,
            "anchor": upsert.excluded.anchor,
        },
    )
    lock = sa.select(cursors.c.last_seq).where(cursors.c.agency == agency)
    if dialect == "postgresql":
        lock = lock.with_for_update()
    return _Queries(
        lock=lock,
        positions=sa.select(positions).where(
            positions.c.agency == agency, _among(dialect, positions.c.topic, "topics")
        ),
        stored=sa.select(_M.originator, _M.message_id, _M.value_sha256).where(
            _M.agency == agency, _among(dialect, _M.message_id, "ids")
        ),
        referenced=sa.select(_M.originator, _M.message_id, _M.event_id, _M.report_type).where(
            _M.agency == agency, _among(dialect, _M.message_id, "ids")
        ),
        events=sa.select(events).where(
            _E.agency == agency,
            _E.originator == sa.bindparam("originator"),
            _among(dialect, _E.event_id, "ids"),
        ),
        alerts=sa.select(_A.alert_id).where(
            _A.agency == agency, _among(dialect, _A.alert_id, "ids")
        ),
        save_positions=upsert,
    )


def _event_row(agency: str, event: EventState) -> dict[str, Any]:
    return {
        "agency": agency,
        "originator": event.originator,
        "event_id": event.event_id,
        "seq": event.seq,
        "first_seq": event.first_seq,
        "report_type": event.report_type,
        "title": event.title,
        "status": event.status,
        "withdrawn_reason": event.withdrawn_reason,
        "first_message_id": event.first_message_id,
        "current_message_id": event.current_message_id,
        "reports": event.reports,
        "versions": event.versions,
        "mode": event.mode,
        "impact": event.impact,
        "tlp": event.tlp,
        "priority": event.priority,
        "border_section": event.border_section,
        "releasable_to": event.releasable_to,
        "first_reported_at": event.first_reported_at,
        "last_reported_at": event.last_reported_at,
        "detected_at": event.detected_at,
        "late": event.late,
        "request_kind": event.request_kind,
        "due_at": event.due_at,
        "answered_at": event.answered_at,
        "search": event.search,
    }


_EVENT_FIELDS = [c.name for c in events.columns if c.name != "agency"]


def _state(row: Any) -> EventState:
    values = {name: getattr(row, name) for name in _EVENT_FIELDS}
    values["late"] = bool(values["late"])
    return EventState(**values)


@dataclass(slots=True)
class _Known:
    """A message the batch refers to: its event and where it stands."""

    event_id: str | None
    report_type: str


class LiaisonStore:
    """The liaison service's storage. Use :meth:`open` (it checks the schema) and :meth:`close`."""

    def __init__(self, url: str, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self.url = url
        self.dialect = "sqlite" if is_sqlite(url) else "postgresql"
        self._engine = engine
        self._reader = reader
        self._sqlite_writer = _SqliteWriter(url) if self.dialect == "sqlite" else None

    @classmethod
    async def open(cls, url: str, *, check_schema: bool = True) -> LiaisonStore:
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
            except DRIVER_ERRORS as exc:
                await store.close()
                raise classify(exc) from exc
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        """Release every connection."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self._engine.dispose()
        if self._reader is not self._engine:
            await self._reader.dispose()

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries; driver errors become store errors."""
        try:
            async with self._reader.connect() as connection:
                yield connection
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    @asynccontextmanager
    async def writing(self, agency: str) -> AsyncIterator[tuple[AsyncConnection, list[int]]]:
        """A transaction holding ``agency``'s change-log lock; yields it and its last seq.

        Set the list's one value to the new last seq before leaving; it is
        written back when the transaction commits.
        """
        try:
            async with self._engine.begin() as connection:
                last = await _run(connection, self._lock(agency))
                holder = [last]
                yield connection, holder
                if holder[0] != last:
                    await _run(connection, _save_cursor(agency, holder[0]))
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    def _insert(self) -> Any:
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    def _lock(self, agency: str) -> Steps[int]:
        query = _queries(self.dialect).lock
        rows = yield query, {"agency": agency}
        if rows:
            return int(rows[0].last_seq)
        # The agency's first write: its cursor row, then its lock (another writer may race).
        yield (
            self._insert()(cursors).values(agency=agency, last_seq=0).on_conflict_do_nothing(),
            None,
        )
        rows = yield query, {"agency": agency}
        return int(rows[0].last_seq)

    # -- the consumer's side ---------------------------------------------------------------

    async def positions(
        self, agency: str, partitions: Iterable[Partition]
    ) -> dict[Partition, Position | None]:
        """The stored position of each partition (None: nothing stored).

        Raises:
            StoreUnavailableError: the database cannot be reached (retry).
        """
        wanted = set(partitions)
        found: dict[Partition, Position | None] = dict.fromkeys(wanted)
        async with self.reading() as connection:
            rows = await connection.execute(
                sa.select(positions).where(positions.c.agency == agency)
            )
            for row in rows:
                where = (row.topic, row.kafka_partition)
                if where in wanted:
                    found[where] = Position(row.epoch, row.next_offset, row.anchor)
        return found

    async def write(self, agency: str, batch: WriteBatch, deliveries: Deliveries) -> Written:
        """Store one consumer batch in one transaction, or nothing.

        Raises:
            StoreConflictError: a partition's stored position is not the batch's.
            StoreUnavailableError: the database cannot be reached (retry).
            StoreError: the database refused (permissions, schema).
        """
        steps = self._write_steps(agency, batch, deliveries)
        try:
            if self._sqlite_writer is not None:
                return await self._sqlite_writer.run(steps)
            async with self._engine.begin() as connection:
                return await _run(connection, steps)
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    def _write_steps(
        self, agency: str, batch: WriteBatch, deliveries: Deliveries
    ) -> Steps[Written]:
        last = yield from self._lock(agency)
        yield from self._check_positions(agency, batch.expected)
        holder = [last]
        written = yield from _BatchWriter(self, agency, deliveries).write(batch, holder)
        yield from self._save_positions(agency, batch.positions)
        if holder[0] != last:
            yield from _save_cursor(agency, holder[0])
        return written

    def _check_positions(
        self, agency: str, expected: Mapping[Partition, Position | None]
    ) -> Steps[None]:
        if not expected:
            return
        rows = yield (
            _queries(self.dialect).positions,
            {"agency": agency, "topics": sorted({t for t, _ in expected})},
        )
        stored: dict[Partition, Position] = {
            (r.topic, r.kafka_partition): Position(r.epoch, r.next_offset, r.anchor) for r in rows
        }
        for where, position in expected.items():
            if stored.get(where) != position:
                raise StoreConflictError(
                    f"{where[0]}[{where[1]}]: the store's position moved (another replica "
                    "stored these records)"
                )

    def _save_positions(self, agency: str, moved: Mapping[Partition, Position]) -> Steps[None]:
        if not moved:
            return
        rows = [
            {
                "agency": agency,
                "topic": topic,
                "kafka_partition": number,
                "epoch": p.epoch,
                "next_offset": p.next_offset,
                "anchor": p.anchor,
            }
            for (topic, number), p in moved.items()
        ]
        yield _queries(self.dialect).save_positions, rows

    # -- officers' actions -----------------------------------------------------------------

    async def record_outgoing(
        self,
        agency: str,
        row: Mapping[str, Any],
        event: tuple[str, str] | None,
        *,
        answered: bool,
    ) -> int:
        """Record an acknowledgement or answer published through the gateway; returns its seq.

        ``event`` is the (originator, event id) it concerns; an answer marks
        that event answered.
        """
        at = int(row["created_at"])
        async with self.writing(agency) as (connection, last):
            seq = last[0] + 1
            last[0] = seq
            await connection.execute(outgoing.insert(), [{**row, "agency": agency}])
            kind = "answered" if answered else "acknowledged"
            await connection.execute(
                changes.insert(),
                [
                    {
                        "agency": agency,
                        "seq": seq,
                        "kind": kind,
                        "originator": row["target_originator"],
                        "event_id": None if event is None else event[1],
                        "message_id": row["target_message_id"],
                        "report_type": row["report_type"],
                        "alert_id": None,
                        "at": at,
                    }
                ],
            )
            if event is not None:
                values: dict[str, Any] = {"seq": seq}
                if answered:
                    values["answered_at"] = at
                await connection.execute(
                    sa.update(events)
                    .where(_E.agency == agency, _E.originator == event[0], _E.event_id == event[1])
                    .values(**values)
                )
        return seq

    # -- sessions --------------------------------------------------------------------------

    async def create_session(self, row: Mapping[str, Any]) -> None:
        """Store a new session (its token's hash only)."""
        try:
            async with self._engine.begin() as connection:
                await connection.execute(sa.delete(sessions).where(_S.expires_at < now_ms()))
                await connection.execute(sessions.insert(), [dict(row)])
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    async def session(self, token_sha256: str) -> Any:
        """The session row of a token hash, if it exists and has not expired."""
        async with self.reading() as connection:
            return (
                await connection.execute(
                    sa.select(sessions).where(
                        _S.token_sha256 == token_sha256, _S.expires_at > now_ms()
                    )
                )
            ).first()

    async def end_session(self, token_sha256: str) -> None:
        """Forget a session."""
        try:
            async with self._engine.begin() as connection:
                await connection.execute(sa.delete(sessions).where(_S.token_sha256 == token_sha256))
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    # -- webhooks --------------------------------------------------------------------------

    async def claim_deliveries(self, agency: str, at: int, limit: int, lease_ms: int) -> list[Any]:
        """Pending deliveries due at ``at``, claimed for ``lease_ms`` (other replicas skip them)."""
        try:
            async with self._engine.begin() as connection:
                rows = (
                    await connection.execute(
                        sa.select(outbox)
                        .where(
                            _O.agency == agency,
                            _O.status == "pending",
                            _O.next_attempt_at <= at,
                            sa.or_(_O.claimed_until.is_(None), _O.claimed_until < at),
                        )
                        .order_by(_O.next_attempt_at, _O.created_at)
                        .limit(limit)
                    )
                ).all()
                if rows:
                    await connection.execute(
                        sa.update(outbox)
                        .where(
                            _O.agency == agency,
                            _O.delivery_id.in_([r.delivery_id for r in rows]),
                        )
                        .values(claimed_until=at + lease_ms)
                    )
                return list(rows)
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc

    async def next_delivery_at(self, agency: str) -> int | None:
        """When the next pending delivery can be claimed: due, and its lease (if any) over.

        A read: the deliverer asks it before claiming, so a round with nothing due
        never takes the store's write lock.
        """
        ready_at = sa.case(
            (_O.claimed_until > _O.next_attempt_at, _O.claimed_until),
            else_=_O.next_attempt_at,
        )
        async with self.reading() as connection:
            value = (
                await connection.execute(
                    sa.select(sa.func.min(ready_at)).where(
                        _O.agency == agency, _O.status == "pending"
                    )
                )
            ).scalar()
        return None if value is None else int(value)

    async def delivery_done(
        self,
        agency: str,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        next_attempt_at: int,
        error: str | None,
        at: int,
    ) -> int | None:
        """Record an attempt's outcome; a dead letter also becomes an alert (returns its seq)."""
        async with self.writing(agency) as (connection, last):
            await connection.execute(
                sa.update(outbox)
                .where(_O.agency == agency, _O.delivery_id == delivery_id)
                .values(
                    status=status,
                    attempts=attempts,
                    next_attempt_at=next_attempt_at,
                    claimed_until=None,
                    last_error=error,
                    delivered_at=at if status == "delivered" else None,
                )
            )
            if status != "dead":
                return None
            seq = last[0] + 1
            last[0] = seq
            row = (
                await connection.execute(
                    sa.select(_O.endpoint, _O.originator, _O.message_id).where(
                        _O.agency == agency, _O.delivery_id == delivery_id
                    )
                )
            ).one()
            alert_id = f"webhook_dead/{delivery_id}/{attempts}"
            await connection.execute(
                alerts.insert(),
                [
                    {
                        "agency": agency,
                        "alert_id": alert_id,
                        "seq": seq,
                        "kind": "webhook_dead_letter",
                        "topic": None,
                        "kafka_partition": None,
                        "epoch": None,
                        "kafka_offset": None,
                        "message_id": row.message_id,
                        "originator": row.originator,
                        "report_type": None,
                        "signature_status": None,
                        "detail": f"webhook {row.endpoint}: gave up after {attempts} attempts: "
                        f"{error}",
                        "at": at,
                    }
                ],
            )
            await connection.execute(
                changes.insert(),
                [
                    {
                        "agency": agency,
                        "seq": seq,
                        "kind": "alert",
                        "originator": row.originator,
                        "event_id": None,
                        "message_id": row.message_id,
                        "report_type": None,
                        "alert_id": alert_id,
                        "at": at,
                    }
                ],
            )
            return seq

    async def retry_delivery(self, agency: str, delivery_id: str, at: int) -> bool:
        """Put a dead letter back in the queue, attempts reset; False if there is none."""
        try:
            async with self._engine.begin() as connection:
                done = await connection.execute(
                    sa.update(outbox)
                    .where(
                        _O.agency == agency,
                        _O.delivery_id == delivery_id,
                        _O.status == "dead",
                    )
                    .values(status="pending", attempts=0, next_attempt_at=at, claimed_until=None)
                )
        except DRIVER_ERRORS as exc:
            raise classify(exc) from exc
        return bool(done.rowcount)

    # -- retention -------------------------------------------------------------------------

    async def past_retention(self, agency: str, at: int) -> int:
        """How many stored reports are past their retention (``expires_at``) at ``at``."""
        async with self.reading() as connection:
            value = (
                await connection.execute(
                    sa.select(sa.func.count())
                    .select_from(messages)
                    .where(_M.agency == agency, _M.expires_at <= at)
                )
            ).scalar()
        return int(value or 0)


class _BatchWriter:
    """One batch's work inside the store's transaction: dedupe, fold, log, queue."""

    def __init__(
        self,
        store: LiaisonStore,
        agency: str,
        deliveries: Deliveries,
    ) -> None:
        self.store = store
        self.agency = agency
        self.deliveries = deliveries
        self.known: dict[tuple[str, str], _Known] = {}
        self.loaded: dict[tuple[str, str], EventState] = {}
        self.touched: dict[tuple[str, str], EventState] = {}
        self.change_rows: list[dict[str, Any]] = []
        self.marks: list[dict[str, Any]] = []
        self.conflicts: list[AlertDraft] = []
        self.event_rows: list[dict[str, Any]] = []

    def _chunks(self, values: Sequence[str]) -> Iterable[Sequence[str]]:
        # SQLite bounds the parameters of a statement; an array is one parameter.
        return (
            _chunks(values, len(values) or 1)
            if self.store.dialect == "postgresql"
            else _chunks(values)
        )

    @property
    def _queries(self) -> _Queries:
        return _queries(self.store.dialect)

    def write(self, batch: WriteBatch, last: list[int]) -> Steps[Written]:
        agency = self.agency
        written = Written()
        fresh = yield from self._fresh(batch.reports, written)
        yield from self._load_references(fresh)
        resolved = []
        for incoming in fresh:
            facts = incoming.facts
            key = self._event_of(facts)
            # Later reports of the batch may link to this one.
            self.known[(facts.originator, facts.message_id)] = _Known(
                None if key is None else key[1], facts.report_type
            )
            resolved.append((incoming, key))
        yield from self._load_events({key for _, key in resolved if key is not None})
        at = now_ms()
        seq = last[0]
        message_rows: list[dict[str, Any]] = []
        link_rows: list[dict[str, Any]] = []
        outbox_rows: list[dict[str, Any]] = []
        for incoming, key in resolved:
            facts = incoming.facts
            seq += 1
            kind = self._fold(facts, key, seq)
            event_status = self.touched[key].status if key is not None else "active"
            message_rows.append(_message_row(agency, incoming, seq, key, at))
            link_rows.extend(
                {
                    "agency": agency,
                    "originator": facts.originator,
                    "message_id": facts.message_id,
                    "relation": relation,
                    "target_id": target,
                }
                for relation, target in dict.fromkeys(facts.links)
            )
            self.change_rows.append(
                {
                    "agency": agency,
                    "seq": seq,
                    "kind": kind,
                    "originator": facts.originator,
                    "event_id": None if key is None else key[1],
                    "message_id": facts.message_id,
                    "report_type": facts.report_type,
                    "alert_id": None,
                    "at": at,
                }
            )
            outbox_rows.extend(
                _outbox_row(agency, facts, delivery, at)
                for delivery in self.deliveries(facts, event_status)
            )
            written.stored.append((seq, incoming))
        alert_rows = []
        fresh_alerts = yield from self._fresh_alerts([*batch.alerts, *self.conflicts])
        for draft in fresh_alerts:
            seq += 1
            alert_rows.append(_alert_row(agency, draft, seq, at))
            self.change_rows.append(
                {
                    "agency": agency,
                    "seq": seq,
                    "kind": "alert",
                    "originator": draft.originator,
                    "event_id": None,
                    "message_id": draft.message_id,
                    "report_type": draft.report_type,
                    "alert_id": draft.alert_id,
                    "at": at,
                }
            )
        written.alerts = fresh_alerts
        dialect = self.store.dialect
        if message_rows:
            yield from _bulk_insert(dialect, messages, message_rows)
        if link_rows:
            yield from _bulk_insert(dialect, links, link_rows)
        yield from self._save_events()
        yield from self._save_marks()
        if alert_rows:
            yield alerts.insert(), alert_rows
        if self.change_rows:
            yield from _bulk_insert(dialect, changes, self.change_rows)
        if outbox_rows:
            statement = self.store._insert()(outbox).on_conflict_do_nothing()  # noqa: SLF001  # the store's own writer
            yield statement, outbox_rows
        written.deliveries = len(outbox_rows)
        written.changes = self._logged(message_rows, alert_rows)
        last[0] = seq
        written.last_seq = seq
        return written

    def _logged(
        self, message_rows: list[dict[str, Any]], alert_rows: list[dict[str, Any]]
    ) -> list[Logged]:
        """The batch's changes with the rows the store now holds for them."""
        for row in message_rows:
            # Inserted already; the streams never send it, and kept changes hold these rows.
            del row["content"]
        rows = BatchRows(message_rows, self.event_rows, alert_rows, self.marks)
        return [Logged(change, rows) for change in self.change_rows]

    def _fresh(self, reports: list[Incoming], written: Written) -> Steps[list[Incoming]]:
        """The reports not stored yet (nor earlier in the batch); duplicates counted.

        A message id its originator used again for other content is kept as first
        stored and raised as a ``duplicate_conflict`` alert.
        """
        if not reports:
            return []
        ids = sorted({r.facts.message_id for r in reports})
        stored: dict[tuple[str, str], str] = {}
        for chunk in self._chunks(ids):
            rows = yield self._queries.stored, {"agency": self.agency, "ids": list(chunk)}
            stored.update(((r.originator, r.message_id), r.value_sha256) for r in rows)
        fresh = []
        for incoming in reports:
            facts = incoming.facts
            identity = (facts.originator, facts.message_id)
            first = stored.get(identity)
            if first is None:
                stored[identity] = incoming.value_sha256
                fresh.append(incoming)
                continue
            written.duplicates += 1
            if first != incoming.value_sha256:
                self.conflicts.append(
                    AlertDraft(
                        alert_id=f"duplicate_conflict/{facts.originator}/{facts.message_id}/"
                        f"{incoming.value_sha256[:16]}",
                        kind="duplicate_conflict",
                        detail=f"{facts.originator} used message id {facts.message_id} again "
                        "for other content; the first one stored is kept",
                        topic=incoming.topic,
                        partition=incoming.partition,
                        epoch=incoming.epoch,
                        offset=incoming.offset,
                        message_id=facts.message_id,
                        originator=facts.originator,
                        report_type=facts.report_type,
                        signature_status=incoming.signature_status,
                    )
                )
        return fresh

    def _load_references(self, fresh: list[Incoming]) -> Steps[None]:
        """What the batch's links point at, from the store."""
        targets = sorted(
            {
                target
                for incoming in fresh
                for relation, target in incoming.facts.links
                if relation in {"SUPERSEDES", "UPDATES", "CANCELS"}
            }
        )
        for chunk in self._chunks(targets):
            rows = yield self._queries.referenced, {"agency": self.agency, "ids": list(chunk)}
            for row in rows:
                event_id = None if row.report_type == "Acknowledgement" else row.event_id
                self.known[(row.originator, row.message_id)] = _Known(event_id, row.report_type)

    def _event_of(self, facts: Facts) -> tuple[str, str] | None:
        """The event a report joins (None for an acknowledgement: it belongs to no event)."""
        if facts.report_type == "Acknowledgement":
            return None
        for relation, target in facts.links:
            if relation not in {"SUPERSEDES", "UPDATES", "CANCELS"}:
                continue
            known = self.known.get((facts.originator, target))
            if known is not None and known.event_id is not None:
                return (facts.originator, known.event_id)
        return (facts.originator, facts.event_id)

    def _load_events(self, keys: set[tuple[str, str]]) -> Steps[None]:
        by_originator: dict[str, list[str]] = {}
        for originator, event_id in keys:
            by_originator.setdefault(originator, []).append(event_id)
        for originator, ids in by_originator.items():
            for chunk in self._chunks(sorted(ids)):
                rows = yield (
                    self._queries.events,
                    {"agency": self.agency, "originator": originator, "ids": list(chunk)},
                )
                for row in rows:
                    state = _state(row)
                    self.loaded[state.key] = state

    def _fold(self, facts: Facts, key: tuple[str, str] | None, seq: int) -> str:
        """Fold one report into its event; returns the change's kind."""
        if key is None:
            return "acknowledgement"
        event = self.touched.get(key) or self.loaded.get(key)
        kind = "report"
        if event is None:
            event = new_event(self.agency, key[1], facts)
            event.first_seq = seq
            if event.status == WITHDRAWN:
                kind = "withdrawn"
        else:
            supersedes = [t for r, t in facts.links if r == "SUPERSEDES"]
            add_report(self.agency, event, facts, supersedes=bool(supersedes))
            for target in supersedes:
                self._mark(facts.originator, target, superseded_by=facts.message_id)
            if facts.report_type == "Cancellation" and facts.target_id is not None:
                self._mark(facts.originator, facts.target_id, cancelled_by=facts.message_id)
                if cancel(event, facts.target_id, facts):
                    kind = "withdrawn"
        event.seq = seq
        self.touched[key] = event
        return kind

    def _mark(self, originator: str, message_id: str, **values: str) -> None:
        self.marks.append({"b_originator": originator, "b_message_id": message_id, **values})

    def _save_events(self) -> Steps[None]:
        self.event_rows = [_event_row(self.agency, e) for e in self.touched.values()]
        new = [
            row
            for row, e in zip(self.event_rows, self.touched.values(), strict=True)
            if not e.stored
        ]
        old = [
            row for row, e in zip(self.event_rows, self.touched.values(), strict=True) if e.stored
        ]
        if new:
            yield from _bulk_insert(self.store.dialect, events, new)
        if old:
            names = [n for n in _EVENT_FIELDS if n not in {"originator", "event_id"}]
            yield (
                sa.update(events)
                .where(
                    _E.agency == self.agency,
                    _E.originator == sa.bindparam("b_originator"),
                    _E.event_id == sa.bindparam("b_event_id"),
                )
                .values({name: sa.bindparam(f"v_{name}") for name in names}),
                [
                    {
                        "b_originator": row["originator"],
                        "b_event_id": row["event_id"],
                        **{f"v_{name}": row[name] for name in names},
                    }
                    for row in old
                ],
            )

    def _save_marks(self) -> Steps[None]:
        for column in ("superseded_by", "cancelled_by"):
            rows = [m for m in self.marks if column in m]
            if rows:
                yield (
                    sa.update(messages)
                    .where(
                        _M.agency == self.agency,
                        _M.originator == sa.bindparam("b_originator"),
                        _M.message_id == sa.bindparam("b_message_id"),
                    )
                    .values({column: sa.bindparam(f"v_{column}")}),
                    [
                        {
                            "b_originator": m["b_originator"],
                            "b_message_id": m["b_message_id"],
                            f"v_{column}": m[column],
                        }
                        for m in rows
                    ],
                )

    def _fresh_alerts(self, drafts: list[AlertDraft]) -> Steps[list[AlertDraft]]:
        if not drafts:
            return []
        ids = sorted({d.alert_id for d in drafts})
        stored: set[str] = set()
        for chunk in self._chunks(ids):
            rows = yield self._queries.alerts, {"agency": self.agency, "ids": list(chunk)}
            stored.update(r.alert_id for r in rows)
        fresh = []
        for draft in drafts:
            if draft.alert_id not in stored:
                stored.add(draft.alert_id)
                fresh.append(draft)
        return fresh


def _message_row(
    agency: str, incoming: Incoming, seq: int, key: tuple[str, str] | None, at: int
) -> dict[str, Any]:
    facts = incoming.facts
    figures = facts.figures
    retention = facts.retention_days
    return {
        "agency": agency,
        "originator": facts.originator,
        "message_id": facts.message_id,
        "seq": seq,
        "event_id": facts.event_id if key is None else key[1],
        "event_version": facts.event_version,
        "report_type": facts.report_type,
        "created_at": facts.created_ms,
        "received_at": at,
        "mode": facts.mode,
        "tlp": facts.tlp,
        "impact": facts.impact,
        "priority": facts.priority,
        "classification": facts.classification,
        "handling": ",".join(facts.handling),
        "releasable_to": ",".join(facts.releasable_to),
        "border_section": f",{','.join(facts.sections)}," if facts.sections else None,
        "title": facts.title,
        "content": facts.content,
        "figures": None if figures is None else ",".join(str(v) for v in figures),
        "signature_status": incoming.signature_status,
        "key_id": incoming.key_id,
        "topic": incoming.topic,
        "kafka_partition": incoming.partition,
        "kafka_offset": incoming.offset,
        "epoch": incoming.epoch,
        "value_sha256": incoming.value_sha256,
        "superseded_by": None,
        "cancelled_by": None,
        # retention_days is filled by the consumer from the agreement when the header has none.
        "expires_at": facts.created_ms + (retention or 0) * DAY_MS,
    }


def _outbox_row(agency: str, facts: Facts, delivery: Delivery, at: int) -> dict[str, Any]:
    return {
        "agency": agency,
        "delivery_id": delivery.delivery_id,
        "endpoint": delivery.endpoint,
        "originator": facts.originator,
        "message_id": facts.message_id,
        "payload": delivery.payload,
        "created_at": at,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "claimed_until": None,
        "last_error": None,
        "delivered_at": None,
    }


def _alert_row(agency: str, draft: AlertDraft, seq: int, at: int) -> dict[str, Any]:
    return {
        "agency": agency,
        "alert_id": draft.alert_id,
        "seq": seq,
        "kind": draft.kind,
        "topic": draft.topic,
        "kafka_partition": draft.partition,
        "epoch": draft.epoch,
        "kafka_offset": draft.offset,
        "message_id": draft.message_id,
        "originator": draft.originator,
        "report_type": draft.report_type,
        "signature_status": draft.signature_status,
        "detail": draft.detail,
        "at": at,
    }
