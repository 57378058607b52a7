"""The PostgreSQL server of the audit tests (not a conftest: test modules import from it).

The development machines' server at 127.0.0.1:5432 (trust auth);
``OIX_TEST_POSTGRES`` names another server's admin URL.
"""

from __future__ import annotations

import os

import asyncpg
import pytest

PG_ADMIN = os.environ.get("OIX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def admin(statement: str) -> None:
    try:
        connection = await asyncpg.connect(PG_ADMIN)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is needed for this test: {exc}")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def server_url(database: str, user: str | None = None) -> str:
    rest = PG_ADMIN.split("://", 1)[1]
    credentials, _, location = rest.rpartition("@")
    host = location.split("/", 1)[0]
    who = user or credentials
    return f"postgresql+asyncpg://{who}@{host}/{database}"


def as_role(url: str, role: str) -> str:
    """``url`` connecting as ``role`` instead."""
    database = url.rsplit("/", 1)[1]
    return server_url(database, role)
