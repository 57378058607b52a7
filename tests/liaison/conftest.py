"""Fixtures of the liaison tests: a PostgreSQL database per test that asks for one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from liaison_support import pg_database


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own."""
    async with pg_database() as url:
        yield url
