"""SQLAlchemy async engines for the store, set up the same way for every user.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed batch survives
power loss, not only a killed process) and explicit ``BEGIN``: the Python
driver would otherwise begin transactions late and end them early around DDL.
Writers take the write lock at ``BEGIN IMMEDIATE`` so two writers queue
instead of failing on a lock upgrade. ``secure_delete`` zeroes the bytes a
retention purge removes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.bus import private_sqlite

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory database)."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def create_engine(url: str, *, writer: bool = False) -> AsyncEngine:
    """An engine for ``url``; ``writer`` engines take SQLite's write lock when they begin."""
    if not is_sqlite(url):
        # Dead connections (a restarted server) are replaced before use.
        return create_async_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
    path = sqlite_path(url)
    if path is not None:
        # Decoded reports, possibly personal data: the owner's only (WAL and SHM follow).
        private_sqlite(path)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is switched off; "begin" below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # A purge must overwrite what it removes, not leave it in free space.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine
