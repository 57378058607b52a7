"""Fixtures of the audit tests: real SQLite files, real PostgreSQL databases, fast group settings.

PostgreSQL is the development machines' server at 127.0.0.1:5432 (trust
auth); every test gets a database of its own, dropped afterwards.
``OIX_TEST_POSTGRES`` names another server's admin URL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from postgres_support import admin, server_url

from services.audit import AuditSettings


@pytest.fixture
def audit_settings() -> AuditSettings:
    """Audit settings for tests: quick group joins (the local broker's), quick batches."""
    return AuditSettings(
        metrics_port=0,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=2000,
        metadata_max_age_ms=500,
        fetch_max_wait_ms=20,
        batch_max_ms=20,
        commit_interval_ms=100,
        reset_confirm_ms=1000,
        retry_max_backoff_ms=500,
        # Records are opened in this process: starting worker processes for every test
        # would cost a second each. The crash test and the benchmark run the default.
        open_processes=0,
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store in the test's directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own."""
    name = f"oix_audit_{uuid.uuid4().hex[:12]}"
    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield server_url(name)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_role(pg_url: str) -> AsyncIterator[str]:
    """A login role with no privileges of its own (the audit service's role)."""
    name = f"oix_audit_svc_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        # Its grants live in the test's database: drop them there first.
        connection = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
        try:
            await connection.execute(f'DROP OWNED BY "{name}"')
        finally:
            await connection.close()
        await admin(f'DROP ROLE IF EXISTS "{name}"')
