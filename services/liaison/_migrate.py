"""Versioned schema migrations of the liaison store (Alembic), applied by ``oix liaison migrate``.

The service does not migrate on its own, except for the embedded SQLite store
(``oix up``, or ``--migrate``): in production the schema belongs to a database
owner. At start it checks that the database is at the revision this release
needs, and says what to run if not. The migrations have their own version
table, so the liaison and audit stores may share a PostgreSQL database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.host.migrations import Migrations
from services.liaison._engine import create_engine
from services.liaison._errors import SchemaVersionError
from services.liaison._tables import VERSION_TABLE

MIGRATIONS = Migrations(
    Path(__file__).resolve().parent / "migrations",
    version_table=VERSION_TABLE,
    service="liaison",
    url_variable="OIX_LIAISON_DATABASE_URL",
    error=SchemaVersionError,
)


def head_revision() -> str:
    """The schema revision this release needs."""
    return MIGRATIONS.head()


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``oix liaison migrate`` did."""

    before: str | None
    after: str


async def migrate(url: str) -> Migration:
    """Bring the database at ``url`` to the head revision (idempotent)."""

    def upgrade(connection: sa.Connection) -> Migration:
        return Migration(MIGRATIONS.upgrade(connection), head_revision())

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
