"""The store contract on SQLite (the embedded default) and on PostgreSQL (production)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from postgres_support import as_role
from sqlalchemy.exc import ProgrammingError
from store_contract import StoreContract, append_chained, record

from services.audit import AuditStore, grant, migrate
from services.audit._engine import create_engine


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url

    async def test_runs_in_wal_mode_with_full_sync(self, store: AuditStore) -> None:
        engine = create_engine(store.url)
        try:
            async with engine.connect() as connection:
                mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
                sync = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()
        finally:
            await engine.dispose()
        assert (mode, sync) == ("wal", 2)


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url

    async def test_the_service_role_may_insert_and_select_only(
        self, store_url: str, pg_role: str
    ) -> None:
        await migrate(store_url)
        await grant(store_url, pg_role)
        store = await AuditStore.open(as_role(store_url, pg_role))
        try:
            stored = await append_chained(store, [record(0), record(1)])
            assert await store.scan(stored[0].topic, 0, None, 10) == stored
        finally:
            await store.close()
        engine = create_engine(as_role(store_url, pg_role))
        try:
            for statement in (
                "UPDATE audit_record SET decoded = NULL",
                "DELETE FROM audit_record",
                "DELETE FROM audit_event",
                "TRUNCATE audit_record",
            ):
                async with engine.begin() as connection:
                    with pytest.raises(ProgrammingError, match="permission denied"):
                        await connection.execute(sa.text(statement))
        finally:
            await engine.dispose()
