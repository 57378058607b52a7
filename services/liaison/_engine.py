"""SQLAlchemy async engines for the liaison store.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (positions commit with the
reports, so a power loss rolls both back and the bus is read again) and explicit ``BEGIN``
(the Python driver would otherwise begin transactions late); writers take the
write lock at ``BEGIN IMMEDIATE``, so two writers queue instead of failing on
a lock upgrade, and the order of commits is the order of the change log.
PostgreSQL gets a small pool whose dead connections are replaced before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from services.bus import private_sqlite

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return url.startswith("sqlite")


def create_engine(url: str, *, writer: bool = False) -> AsyncEngine:
    """An engine for ``url``; ``writer`` engines take SQLite's write lock when they begin."""
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    _private_database(url)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _configure(engine.sync_engine, "BEGIN IMMEDIATE" if writer else "BEGIN")
    return engine


def create_sqlite_writer(url: str) -> Engine:
    """A blocking writer engine (the stdlib driver) for one thread of its own.

    The consumer's batch is one transaction of a dozen statements; through
    aiosqlite each statement is several hops between the event loop and the
    driver's thread, so the batch runs whole in one thread instead (one hop).
    """
    _private_database(url)
    sync_url = make_url(url).set(drivername="sqlite")
    engine = sa_create_engine(
        sync_url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=StaticPool,
    )
    _configure(engine, "BEGIN IMMEDIATE")
    return engine


def _private_database(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        # What partners reported, possibly personal data: the owner's only (WAL and SHM follow).
        private_sqlite(Path(database))


def _configure(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Purged reports must not linger in free pages (retention).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
