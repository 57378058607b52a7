"""The liaison store forgets what it received once its retention has passed (SQLite, PostgreSQL).

Reports are stored with their real ``created_at``; the round is given the moment to
purge at, so nothing waits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from liaison_store_contract import fresh, incoming

from services.liaison import LiaisonStore, WriteBatch, migrate
from services.liaison._metrics import LiaisonMetrics
from services.liaison._retention import retention_round
from services.liaison._store import Delivery
from services.liaison._tables import alerts, changes, events, links, messages, outbox

pytestmark = pytest.mark.timeout(60)

AGENCY = "LV-VRS"
DAY_MS = 86_400_000


def _deliver(facts: Any, _status: str) -> list[Delivery]:
    return [Delivery("ops", str(uuid.uuid4()), f'{{"title": "{facts.title}"}}')]


async def _rows(store: LiaisonStore, table: sa.Table) -> list[Any]:
    async with store.reading() as connection:
        return list((await connection.execute(sa.select(table))).all())


class RetentionContract:
    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[LiaisonStore]:
        await migrate(store_url)
        opened = await LiaisonStore.open(store_url)
        try:
            yield opened
        finally:
            await opened.close()

    async def test_purges_reports_past_retention_their_links_deliveries_and_empty_events(
        self, store: LiaisonStore
    ) -> None:
        short = fresh(
            "06-lt-incident-wetsuits-neman",
            {"narrative": "Zygimantas Kazlauskas guided two persons across the Neman."},
            retention_days=1,
        )
        event = str(short.header.event_id)
        later = fresh(
            "06-lt-incident-wetsuits-neman",
            {"narrative": "A kayak was found near the same river bend."},
            retention_days=30,
            event_id=event,
            event_version=2,
        )
        alone = fresh("12-lt-serious-incident-wetsuits-neman", retention_days=1)
        batch = WriteBatch(reports=[incoming(short, 0), incoming(later, 1), incoming(alone, 2)])
        await store.write(AGENCY, batch, _deliver)
        assert len(await _rows(store, messages)) == 3
        assert len(await _rows(store, outbox)) == 3
        created = int(short.header.created_at.timestamp() * 1000)
        metrics = LiaisonMetrics()

        (before,) = [e for e in await _rows(store, events) if e.event_id == event]
        assert "zygimantas" in before.search
        assert await retention_round(store, AGENCY, metrics, created + DAY_MS - 1_000) == 0
        purged = await retention_round(store, AGENCY, metrics, created + DAY_MS + 60_000)
        assert purged == 2
        kept = await _rows(store, messages)
        assert [m.message_id for m in kept] == [str(later.header.message_id)]
        assert [o.message_id for o in await _rows(store, outbox)] == [str(later.header.message_id)]
        gone = {str(short.header.message_id), str(alone.header.message_id)}
        assert not [row for row in await _rows(store, links) if row.message_id in gone]
        (left,) = await _rows(store, events)
        assert (left.event_id, left.reports) == (event, 1)
        assert "zygimantas" not in left.search
        assert left.current_message_id == str(later.header.message_id)
        assert left.first_message_id == str(later.header.message_id)
        purged_changes = [c for c in await _rows(store, changes) if c.kind == "purged"]
        assert {c.message_id for c in purged_changes} == gone
        (alert,) = [a for a in await _rows(store, alerts) if a.kind == "retention_purge"]
        assert alert.detail == "2 report(s) past their retention purged"
        assert await retention_round(store, AGENCY, metrics, created + DAY_MS + 60_000) == 0

    async def test_another_agencys_copy_is_its_own(self, store: LiaisonStore) -> None:
        short = fresh("06-lt-incident-wetsuits-neman", retention_days=1)
        await store.write(AGENCY, WriteBatch(reports=[incoming(short)]), _deliver)
        await store.write("PL-SG", WriteBatch(reports=[incoming(short)]), _deliver)
        created = int(short.header.created_at.timestamp() * 1000)
        await retention_round(store, AGENCY, LiaisonMetrics(), created + 2 * DAY_MS)
        assert [m.agency for m in await _rows(store, messages)] == ["PL-SG"]


class TestSqliteLiaisonRetention(RetentionContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'liaison.db'}"


class TestPostgresLiaisonRetention(RetentionContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url.replace("postgresql://", "postgresql+asyncpg://")
