"""The liaison store's contract on SQLite and on PostgreSQL (one suite, two backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from liaison_store_contract import LiaisonStoreContract


class TestSqliteLiaisonStore(LiaisonStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'liaison.db'}"


class TestPostgresLiaisonStore(LiaisonStoreContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url.replace("postgresql://", "postgresql+asyncpg://")
