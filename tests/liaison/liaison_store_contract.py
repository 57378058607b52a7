"""The liaison store's contract, written once and run against SQLite and PostgreSQL.

A backend's test class inherits :class:`LiaisonStoreContract` and provides the
``store_url`` fixture (an async SQLAlchemy URL of an empty database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.bus import Exchange, Position, Report, Settings, freshen, load_examples
from services.liaison import (
    AlertDraft,
    Incoming,
    LiaisonStore,
    SchemaVersionError,
    StoreConflictError,
    WriteBatch,
    migrate,
    open_one,
)
from services.liaison._engine import create_engine
from services.liaison._tables import VERSION_TABLE, metadata
from services.liaison._views import EventQuery, ReportQuery, Views

EXCHANGE = Exchange.from_settings(Settings())
EXAMPLES = {e.name: e.report for e in load_examples()}
TOPIC = "oix.LT-VSAT.incidents"


def incoming(report: Report, offset: int = 0, topic: str = TOPIC) -> Incoming:
    sealed = EXCHANGE.sealer(report.header.originator).seal(report)
    received = open_one(EXCHANGE.opener, sealed.value, tuple(sealed.headers))
    assert received.facts is not None
    facts = received.facts._replace(retention_days=received.facts.retention_days or 730)
    return Incoming(
        facts,
        topic,
        0,
        offset,
        0,
        received.signature_status,
        received.key_id,
        received.value_sha256,
    )


def fresh(name: str, body: dict[str, Any] | None = None, **header: Any) -> Report:
    report = freshen([EXAMPLES[name]])[0]
    data = report.model_dump()
    data["header"].update(header)
    data.update(body or {})
    return type(report).model_validate(data)


def _none(*_: object) -> list[Any]:
    return []


class LiaisonStoreContract:
    """What every backend of the liaison store must do."""

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[LiaisonStore]:
        await migrate(store_url)
        opened = await LiaisonStore.open(store_url)
        try:
            yield opened
        finally:
            await opened.close()

    async def test_the_migrations_create_exactly_the_tables_the_code_uses(
        self, store_url: str
    ) -> None:
        await migrate(store_url)
        engine = create_engine(store_url)

        def differences(connection: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return compare_metadata(context, metadata)

        try:
            async with engine.connect() as connection:
                assert await connection.run_sync(differences) == []
        finally:
            await engine.dispose()
        assert (await migrate(store_url)).before == (await migrate(store_url)).after

    async def test_an_unmigrated_store_says_what_to_run(self, store_url: str) -> None:
        with pytest.raises(SchemaVersionError, match="oix liaison migrate"):
            await LiaisonStore.open(store_url)

    async def test_positions_move_with_the_batch_or_the_batch_is_refused(
        self, store: LiaisonStore
    ) -> None:
        where = (TOPIC, 0)
        report = fresh("06-lt-incident-wetsuits-neman")
        first = WriteBatch(
            reports=[incoming(report)],
            positions={where: Position.after(0, b"d" * 32)},
            expected={where: None},
        )
        await store.write("LV-VRS", first, _none)
        assert (await store.positions("LV-VRS", [where]))[where] == Position(0, 1, b"d" * 32)
        stale = WriteBatch(
            reports=[incoming(fresh("06-lt-incident-wetsuits-neman"), 1)],
            positions={where: Position.after(1, b"e" * 32)},
            expected={where: None},
        )
        with pytest.raises(StoreConflictError):
            await store.write("LV-VRS", stale, _none)
        views = Views(store)
        assert len((await views.reports("LV-VRS", ReportQuery())).items) == 1
        assert await views.last_seq("LV-VRS") == 1

    async def test_one_message_is_one_row_whatever_arrives_twice(self, store: LiaisonStore) -> None:
        report = fresh("06-lt-incident-wetsuits-neman")
        again = incoming(report, 1)
        written = await store.write("LV-VRS", WriteBatch(reports=[incoming(report), again]), _none)
        assert (len(written.stored), written.duplicates) == (1, 1)
        written = await store.write("LV-VRS", WriteBatch(reports=[incoming(report, 2)]), _none)
        assert (len(written.stored), written.duplicates) == (0, 1)
        # Its originator using the id again for other content: kept as first stored, said.
        reused = fresh("06-lt-incident-wetsuits-neman", message_id=report.header.message_id)
        written = await store.write("LV-VRS", WriteBatch(reports=[incoming(reused, 3)]), _none)
        assert (len(written.stored), written.duplicates) == (0, 1)
        assert [a.kind for a in written.alerts] == ["duplicate_conflict"]
        # The same message id from another originator is another message.
        other = fresh(
            "02-lv-incident-ladders",
            message_id=report.header.message_id,
            event_id=report.header.message_id,
        )
        written = await store.write("PL-SG", WriteBatch(reports=[incoming(other)]), _none)
        assert len(written.stored) == 1

    async def test_no_query_reaches_another_agencys_rows(self, store: LiaisonStore) -> None:
        report = fresh("06-lt-incident-wetsuits-neman")
        request = fresh(
            "03-lv-assistance-request",
            {"requested_from": ["LT-VSAT", "PL-SG"]},
            releasable_to=["LT-VSAT", "PL-SG"],
        )
        alert = AlertDraft(
            alert_id="untrusted/x/0/0/1", kind="untrusted", detail="forged", message_id="m"
        )
        await store.write(
            "PL-SG",
            WriteBatch(reports=[incoming(report), incoming(request, 1)], alerts=[alert]),
            _none,
        )
        views = Views(store)
        lv = "LV-VRS"
        event = report.header
        assert (await views.events(lv, EventQuery(), 0)).items == []
        assert (await views.reports(lv, ReportQuery())).items == []
        assert await views.event_reports(lv, event.originator, str(event.event_id)) is None
        assert await views.report(lv, event.originator, str(event.message_id)) is None
        assert await views.requests(lv, "all", 0) == []
        assert (await views.alerts(lv, None, 50)).items == []
        assert await views.changes(lv, 0, 100) == []
        assert await views.summary(lv, 0, 2**62, []) == []
        assert len((await views.events("PL-SG", EventQuery(), 0)).items) == 2
        assert len(await views.requests("PL-SG", "open", 0)) == 1

    async def test_the_change_log_grows_in_commit_order_under_concurrent_writers(
        self, store: LiaisonStore
    ) -> None:
        views = Views(store)
        seen: list[list[int]] = []
        done = asyncio.Event()

        async def writer(start: int) -> None:
            for n in range(8):
                reports = [
                    incoming(fresh("06-lt-incident-wetsuits-neman"), start + 10 * n + i)
                    for i in range(3)
                ]
                await store.write("LV-VRS", WriteBatch(reports=reports), _none)

        async def reader() -> None:
            while not done.is_set():
                seen.append([row.seq for row in await views.changes("LV-VRS", 0, 1000)])
                await asyncio.sleep(0)

        watching = asyncio.create_task(reader())
        await asyncio.gather(writer(0), writer(1000))
        done.set()
        await watching
        final = [row.seq for row in await views.changes("LV-VRS", 0, 1000)]
        assert final == list(range(1, 49))
        # A reader never saw a later seq without every earlier one: resuming after the
        # last seq it saw misses nothing.
        for snapshot in seen:
            assert snapshot == list(range(1, len(snapshot) + 1))

    async def test_a_claimed_delivery_is_not_claimed_again_within_its_lease(
        self, store: LiaisonStore
    ) -> None:
        from services.liaison._store import Delivery

        report = fresh("06-lt-incident-wetsuits-neman")

        def one(facts: Any, _status: str) -> list[Delivery]:
            return [Delivery("ops", "0b6e2a1c-3f1d-4c52-9a51-6f3e2c1d0a99", '{"x": 1}')]

        await store.write("LV-VRS", WriteBatch(reports=[incoming(report)]), one)
        queued_at = await store.next_delivery_at("LV-VRS")
        assert queued_at is not None
        at = 2**50
        assert [r.delivery_id for r in await store.claim_deliveries("LV-VRS", at, 10, 1000)] == [
            "0b6e2a1c-3f1d-4c52-9a51-6f3e2c1d0a99"
        ]
        # The deliverer reads this before it claims: a leased delivery is not due again
        # until its lease ends (not at once, which would make it claim in a busy loop).
        assert await store.next_delivery_at("LV-VRS") == at + 1000
        assert await store.next_delivery_at("PL-SG") is None
        assert await store.claim_deliveries("LV-VRS", at + 10, 10, 1000) == []
        assert len(await store.claim_deliveries("LV-VRS", at + 2000, 10, 1000)) == 1
        assert await store.claim_deliveries("PL-SG", at + 5000, 10, 1000) == []

    async def test_retention_counts_what_is_past_it(self, store: LiaisonStore) -> None:
        report = fresh("06-lt-incident-wetsuits-neman", retention_days=1)
        await store.write("LV-VRS", WriteBatch(reports=[incoming(report)]), _none)
        created = int(report.header.created_at.timestamp() * 1000)
        assert await store.past_retention("LV-VRS", created + 86_400_000 - 1) == 0
        assert await store.past_retention("LV-VRS", created + 86_400_000) == 1
        assert await store.past_retention("PL-SG", created + 10 * 86_400_000) == 0
