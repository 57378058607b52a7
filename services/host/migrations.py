"""Versioned schema migrations (Alembic) of a service's SQL store, the same way for each.

A store's schema belongs to a database owner: ``oix <service> migrate``
applies it (or prints its SQL for an administrator), and the service, at
start, refuses a database not at the revision its release needs, saying what
to run. Each store keeps its own version table, so several stores may share
one PostgreSQL database. Imported by the services' ``_migrate`` modules
only: it loads Alembic and SQLAlchemy, which ``oix --help`` must not.
"""

from __future__ import annotations

import io
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class Migrations:
    """The migrations of one store: where they live, its version table, how to name it."""

    def __init__(
        self,
        directory: Path,
        *,
        version_table: str,
        service: str,
        url_variable: str,
        error: type[Exception],
    ) -> None:
        """The store's ``directory`` of Alembic scripts and ``version_table``.

        ``service`` names the store and its command (``audit``: ``oix audit
        migrate``), ``url_variable`` the setting of its URL; ``error`` is what
        :meth:`check` raises.
        """
        self.directory = directory
        self.version_table = version_table
        self.service = service
        self.url_variable = url_variable
        self.error = error

    def config(self, output: io.StringIO | None = None) -> Config:
        """An Alembic configuration for the store's scripts."""
        config = Config(output_buffer=output) if output is not None else Config()
        config.set_main_option("script_location", str(self.directory))
        return config

    def head(self) -> str:
        """The schema revision this release needs."""
        head = ScriptDirectory.from_config(self.config()).get_current_head()
        assert head is not None, f"no migration in {self.directory}"
        return head

    def current(self, connection: sa.Connection) -> str | None:
        """The revision the database is at, or None for a database never migrated."""
        opts = {"version_table": self.version_table}
        return MigrationContext.configure(connection, opts=opts).get_current_revision()

    async def current_revision(self, connection: AsyncConnection) -> str | None:
        """:meth:`current`, on an async connection."""
        return await connection.run_sync(self.current)

    def upgrade(self, connection: sa.Connection) -> str | None:
        """Bring the database to the head revision in ``connection``'s transaction.

        Returns:
            The revision it was at before (None: never migrated).
        """
        before = self.current(connection)
        config = self.config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return before

    def sql(self, dialect: str) -> str:
        """The SQL of every migration, for an administrator who applies it by hand."""
        output = io.StringIO()
        config = self.config(output)
        config.set_main_option("dialect_name", dialect)
        command.upgrade(config, "head", sql=True)
        return output.getvalue()

    async def check(self, engine: AsyncEngine) -> None:
        """Refuse to run on a database that is not at the head revision.

        Raises:
            Exception: ``error``, saying what the database is at, what is needed and
                the command to run.
        """
        async with engine.connect() as connection:
            current = await self.current_revision(connection)
        head = self.head()
        if current == head:
            return
        run = f"oix {self.service} migrate"
        if current is None:
            raise self.error(
                f"the {self.service} store has no schema yet: run `{run}` "
                f"(with {self.url_variable} naming a role that may create tables)",
            )
        raise self.error(
            f"the {self.service} store is at schema revision {current}, this release needs "
            f"{head}: run `{run}`",
        )
