"""Versioned schema migrations of the liaison store (Alembic), applied by ``oix liaison migrate``.

The service does not migrate on its own, except for the embedded SQLite store
(``oix up``, or ``--migrate``): in production the schema belongs to a database
owner. At start it checks that the database is at the revision this release
needs, and says what to run if not. The migrations have their own version
table, so the liaison and audit stores may share a PostgreSQL database.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from services.liaison._engine import create_engine
from services.liaison._errors import SchemaVersionError
from services.liaison._tables import VERSION_TABLE

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The schema revision this release needs."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``oix liaison migrate`` did."""

    before: str | None
    after: str


async def migrate(url: str) -> Migration:
    """Bring the database at ``url`` to the head revision (idempotent)."""
    config = _config()

    def upgrade(connection: sa.Connection) -> Migration:
        before = _current(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return Migration(before, head_revision())

    engine = create_engine(url, writer=True)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


def migration_sql(dialect: str) -> str:
    """The SQL of every migration, for an administrator who applies it by hand."""
    output = io.StringIO()
    config = _config(output)
    config.set_main_option("dialect_name", dialect)
    command.upgrade(config, "head", sql=True)
    return output.getvalue()


async def check_revision(engine: AsyncEngine) -> None:
    """Refuse to run on a database that is not at the head revision.

    Raises:
        SchemaVersionError: what the database is at, what is needed, and the command to run.
    """
    async with engine.connect() as connection:
        current = await connection.run_sync(_current)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaVersionError(
            "the liaison store has no schema yet: run `oix liaison migrate` "
            "(with OIX_LIAISON_DATABASE_URL naming a role that may create tables)",
        )
    raise SchemaVersionError(
        f"the liaison store is at schema revision {current}, this release needs {head}: "
        "run `oix liaison migrate`",
    )
