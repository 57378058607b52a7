"""Alembic environment of the liaison store.

Migrations run through :mod:`services.liaison._migrate`, which hands over an
open connection (``config.attributes["connection"]``); offline mode writes
the SQL for a database administrator to review and apply.
"""

from __future__ import annotations

from alembic import context

from services.liaison._tables import VERSION_TABLE

config = context.config

if context.is_offline_mode():
    context.configure(
        dialect_name=config.get_main_option("dialect_name") or "postgresql",
        literal_binds=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(
        connection=config.attributes["connection"],
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
