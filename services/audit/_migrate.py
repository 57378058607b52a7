"""Versioned schema migrations of the store (Alembic), applied by ``oix audit migrate``.

The consumer never migrates on its own (except for the embedded SQLite store
of ``oix up``): in production the schema belongs to a database owner, and
the consumer's role may only INSERT and SELECT. At start it checks that the
database is at the revision this release needs, and says what to run if not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audit._engine import create_engine, is_sqlite
from services.audit._errors import SchemaVersionError, StoreError
from services.audit._rechain import rechain
from services.audit._record import PURGED_FIELDS
from services.audit._tables import VERSION_TABLE, events, holds, records, retention_events
from services.host.migrations import Migrations

MIGRATIONS = Migrations(
    Path(__file__).resolve().parent / "migrations",
    version_table=VERSION_TABLE,
    service="audit",
    url_variable="OIX_AUDIT_DATABASE_URL",
    error=SchemaVersionError,
)


def head_revision() -> str:
    """The schema revision this release needs."""
    return MIGRATIONS.head()


async def current_revision(connection: AsyncConnection) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return await MIGRATIONS.current_revision(connection)


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``oix audit migrate`` did."""

    before: str | None
    after: str
    rechained: int = 0
    """Rows re-chained from chain version 1 to version 2 (digests of content)."""


async def migrate(url: str) -> Migration:
    """Bring the database at ``url`` to the head revision (idempotent)."""

    def upgrade(connection: sa.Connection) -> Migration:
        before = MIGRATIONS.upgrade(connection)
        # Not an Alembic revision: it reads and verifies rows, so it runs online
        # only, in the same transaction (a refused re-chain leaves the revision).
        rechained = rechain(connection, datetime.now(UTC))
        return Migration(before, head_revision(), rechained)

    engine = create_engine(url, writer=True)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


def migration_sql(dialect: str) -> str:
    """The SQL of every migration, for an administrator who applies it by hand."""
    return MIGRATIONS.sql(dialect)


async def check_revision(engine: AsyncEngine) -> None:
    """Refuse to run on a database that is not at the head revision.

    Raises:
        SchemaVersionError: what the database is at, what is needed, and the command to run.
    """
    await MIGRATIONS.check(engine)


async def grant(url: str, role: str) -> None:
    """Let ``role`` INSERT and SELECT the store's tables, and nothing else (PostgreSQL).

    Raises:
        StoreError: on SQLite, which has no roles.
    """
    if is_sqlite(url):
        raise StoreError("SQLite has no roles: protect the database file instead")
    engine = create_engine(url, writer=True)
    try:
        async with engine.begin() as connection:
            quote = connection.dialect.identifier_preparer.quote
            name = quote(role)
            for table in (records.name, events.name):
                await connection.execute(sa.text(f"GRANT SELECT, INSERT ON {table} TO {name}"))
            await connection.execute(sa.text(f"GRANT SELECT ON {VERSION_TABLE} TO {name}"))
    finally:
        await engine.dispose()


PURGE_MARKS = ("purged_at", "purge_id")


async def grant_purge(url: str, role: str) -> None:
    """Let ``role`` purge and erase, and nothing else (PostgreSQL).

    It may read every table, UPDATE only the content columns a purge clears
    and the purge marks (never a digest, a fact or a hash: column-level
    grants), and INSERT retention events; it may not DELETE, nor place or
    lift holds.

    Raises:
        StoreError: on SQLite, which has no roles.
    """
    if is_sqlite(url):
        raise StoreError("SQLite has no roles: protect the database file instead")
    engine = create_engine(url, writer=True)
    columns = ", ".join((*PURGED_FIELDS, *PURGE_MARKS))
    try:
        async with engine.begin() as connection:
            name = connection.dialect.identifier_preparer.quote(role)
            for table in (records.name, events.name, holds.name, retention_events.name):
                await connection.execute(sa.text(f"GRANT SELECT ON {table} TO {name}"))
            await connection.execute(sa.text(f"GRANT SELECT ON {VERSION_TABLE} TO {name}"))
            await connection.execute(
                sa.text(f"GRANT UPDATE ({columns}) ON {records.name} TO {name}"),
            )
            await connection.execute(
                sa.text(f"GRANT INSERT ON {retention_events.name} TO {name}"),
            )
    finally:
        await engine.dispose()
