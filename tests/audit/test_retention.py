"""Retention of the audit store on SQLite and PostgreSQL: purge, verify across purges, holds,
erasure, the retention log, re-chaining stores of chain version 1.

Records are written "in the past" (their Kafka timestamps) and the purge is given a clock:
nothing waits for time to pass.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres_support import as_role
from sqlalchemy.exc import ProgrammingError
from store_contract import T0, append_chained, record

from services.audit import (
    AuditRecord,
    AuditStore,
    FindingKind,
    Verifier,
    grant,
    grant_purge,
    migrate,
)
from services.audit._chain import GENESIS, link_v1
from services.audit._engine import create_engine, sqlite_path
from services.audit._errors import RetentionRefusedError, SchemaVersionError, StoreError
from services.audit._record import DAY_MS
from services.audit._retention import Retention
from services.audit._retention_log import RetentionKind

pytestmark = pytest.mark.timeout(60)

TOPIC = "oix.LT-VSAT.incidents"
NOW = T0 + timedelta(days=100)
DEFAULT_DAYS = 730
NARRATIVE = "Jonas Petraitis, born 1981, crossed the green border near Medininkai"


def clock() -> datetime:
    return NOW


def _expiring(offset: int, days: int | None, **kwargs: object) -> AuditRecord:
    base = record(offset, **kwargs)  # type: ignore[arg-type]
    return base._replace(
        retain_until=None if days is None else base.kafka_timestamp + days * DAY_MS,
        value=base.value + NARRATIVE.encode() if base.value is not None else None,
        decoded=f'{{"narrative": "{NARRATIVE} #{offset}"}}',
    )


def _sample() -> list[AuditRecord]:
    """Offsets 0-2 past retention (30 days), 3-4 on the default (730), 5 on 365 days."""
    return [
        _expiring(0, 30),
        _expiring(1, 30),
        _expiring(2, 30),
        _expiring(3, None),
        _expiring(4, None),
        _expiring(5, 365),
    ]


async def _sql(store: AuditStore, statement: str, **params: object) -> None:
    engine = create_engine(store.url, writer=True)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(statement), params)
    finally:
        await engine.dispose()


class RetentionContract:
    """What retention must do on every store backend."""

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[AuditStore]:
        await migrate(store_url)
        store = await AuditStore.open(store_url)
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    def retention(self, store: AuditStore) -> Retention:
        return Retention(store, clock=clock)

    async def test_purges_what_is_past_retention_and_keeps_the_rest(
        self, store: AuditStore, retention: Retention
    ) -> None:
        stored = await append_chained(store, _sample())
        outcome = await retention.purge(DEFAULT_DAYS, actor="test")
        assert outcome.count == 3
        assert outcome.ranges == [
            {
                "topic": TOPIC,
                "partition": 0,
                "epoch": 0,
                "first_offset": 0,
                "last_offset": 2,
                "count": 3,
            },
        ]
        back = await store.scan(TOPIC, 0, None, 100)
        for before, after in zip(stored[:3], back[:3], strict=True):
            assert (after.value, after.decoded, after.decode_error) == (None, None, None)
            assert after.purged_at == NOW
            assert after.purge_id == outcome.events[0].event_id
            # What proves the trail stays: coordinates, identity, status, digests, the link.
            assert (
                after._replace(
                    value=before.value, decoded=before.decoded, purged_at=None, purge_id=None
                )
                == before
            )
        assert back[3:] == stored[3:]
        report = await Verifier(store, None).run(None)
        assert report.findings == []
        assert (report.purged, report.partitions[0].purged) == (3, 3)
        events = report.retention
        assert [(e.kind, e.record_count, e.actor) for e in events] == [
            (RetentionKind.PURGE, 3, "test"),
        ]
        assert "retention_days" in events[0].reason
        assert f"{TOPIC}[0] offset 0..2" in events[0].describe()

    async def test_an_untrusted_record_stays_untrusted_once_purged(
        self, store: AuditStore, retention: Retention
    ) -> None:
        forged = _expiring(0, 30, status="unverified_origin")._replace(
            decoded=None, decode_error=f"UnknownSchemaError: writer schema of {NARRATIVE}"
        )
        await append_chained(store, [forged, _expiring(1, 30)])
        before = await Verifier(store, None).run(None)
        assert before.untrusted == {"unknown_schema": 1}
        assert (await retention.purge(DEFAULT_DAYS)).count == 2
        (purged, _) = await store.scan(TOPIC, 0, None, 100)
        assert purged.decode_error == "UnknownSchemaError: (content purged)"
        assert purged.unknown_schema
        assert not purged.trusted
        after = await Verifier(store, None).run(None)
        assert after.untrusted == {"unknown_schema": 1}
        assert [f.kind for f in after.findings] == [FindingKind.UNTRUSTED]

    async def test_a_second_purge_finds_nothing_and_later_takes_the_default(
        self, store: AuditStore
    ) -> None:
        await append_chained(store, _sample())
        assert (await Retention(store, clock=clock).purge(DEFAULT_DAYS)).count == 3
        assert (await Retention(store, clock=clock).purge(DEFAULT_DAYS)).count == 0
        later = Retention(store, clock=lambda: T0 + timedelta(days=DEFAULT_DAYS, minutes=1))
        assert (await later.purge(DEFAULT_DAYS)).count == 3
        report = await Verifier(store, None).run(None)
        assert report.findings == []
        assert report.purged == 6
        assert [e.record_count for e in report.retention] == [3, 3]

    async def test_dry_run_changes_nothing(self, store: AuditStore, retention: Retention) -> None:
        stored = await append_chained(store, _sample())
        outcome = await retention.purge(DEFAULT_DAYS, dry_run=True)
        assert (outcome.dry_run, outcome.count, outcome.events) == (True, 3, [])
        assert outcome.ranges[0]["first_offset"] == 0
        assert outcome.ranges[0]["last_offset"] == 2
        assert await store.scan(TOPIC, 0, None, 100) == stored
        assert await retention.events() == []

    async def test_a_purged_row_with_a_changed_digest_is_still_detected(
        self, store: AuditStore, retention: Retention
    ) -> None:
        await append_chained(store, _sample())
        await retention.purge(DEFAULT_DAYS)
        await _sql(
            store,
            "UPDATE audit_record SET value_digest = :d WHERE topic = :t AND kafka_offset = 1",
            d=bytes(32),
            t=TOPIC,
        )
        report = await Verifier(store, None).run(None)
        assert {(f.kind, f.first_offset) for f in report.findings} == {
            (FindingKind.ALTERED, 1),
        }

    async def test_altered_content_and_content_removed_without_a_purge_are_detected(
        self, store: AuditStore
    ) -> None:
        await append_chained(store, _sample())
        await _sql(
            store,
            "UPDATE audit_record SET decoded = '{}' WHERE topic = :t AND kafka_offset = 3",
            t=TOPIC,
        )
        await _sql(
            store,
            "UPDATE audit_record SET value = NULL, decoded = NULL, purged_at = :at, "
            "purge_id = 'made-up' WHERE topic = :t AND kafka_offset = 4",
            t=TOPIC,
            at=NOW,
        )
        await _sql(
            store,
            "UPDATE audit_record SET value = NULL WHERE topic = :t AND kafka_offset = 5",
            t=TOPIC,
        )
        report = await Verifier(store, None).run(None)
        assert {(f.kind, f.first_offset) for f in report.findings} == {
            (FindingKind.ALTERED, 3),
            (FindingKind.UNRECORDED_PURGE, 4),
            (FindingKind.ALTERED, 5),
        }

    async def test_an_altered_retention_event_breaks_the_retention_log(
        self, store: AuditStore, retention: Retention
    ) -> None:
        await append_chained(store, _sample())
        await retention.purge(DEFAULT_DAYS)
        await retention.hold(message_id="m", reason="case 7", actor="auditor")
        await _sql(store, "UPDATE audit_retention_event SET record_count = 1 WHERE seq = 1")
        report = await Verifier(store, None).run(None)
        assert [(f.kind, f.detail.split(":")[0]) for f in report.findings] == [
            (FindingKind.RETENTION_LOG, "retention event 1"),
        ]
        await _sql(store, "DELETE FROM audit_retention_event WHERE seq = 1")
        report = await Verifier(store, None).run(None)
        kinds = {f.kind for f in report.findings}
        # The purge's event is gone: the log's chain breaks and the purged rows name nothing.
        assert kinds == {FindingKind.RETENTION_LOG, FindingKind.UNRECORDED_PURGE}

    async def test_a_hold_blocks_the_purge_until_released(
        self, store: AuditStore, retention: Retention
    ) -> None:
        stored = await append_chained(store, _sample())
        held_id = stored[1].message_id
        assert held_id is not None
        hold = await retention.hold(message_id=held_id, reason="case 2026/14", actor="auditor-a")
        first = await retention.purge(DEFAULT_DAYS)
        assert (first.count, first.held) == (2, 1)
        back = await store.scan(TOPIC, 0, None, 100)
        assert back[1] == stored[1]
        assert [h.hold_id for h in await retention.holds()] == [hold.hold_id]
        released = await retention.release(hold.hold_id, reason="case closed", actor="auditor-b")
        assert (released.released_by, released.released_at) == ("auditor-b", NOW)
        assert await retention.holds() == []
        second = await retention.purge(DEFAULT_DAYS)
        assert (second.count, second.held) == (1, 0)
        events = await retention.events()
        assert [e.kind for e in events] == [
            RetentionKind.HOLD,
            RetentionKind.PURGE,
            RetentionKind.RELEASE,
            RetentionKind.PURGE,
        ]
        assert events[0].details["hold_id"] == hold.hold_id
        assert events[0].reason == "case 2026/14"
        assert events[2].actor == "auditor-b"
        with pytest.raises(RetentionRefusedError, match="released already"):
            await retention.release(hold.hold_id, reason="again", actor="auditor-b")
        assert (await Verifier(store, None).run(None)).findings == []

    async def test_holds_by_event_id_and_by_time_range(
        self, store: AuditStore, retention: Retention
    ) -> None:
        event = str(uuid.uuid4())
        rows = _sample()
        rows[0] = rows[0]._replace(record_key=event.encode())
        await append_chained(store, rows)
        await retention.hold(event_id=event, reason="inquiry", actor="a")
        # Offset 2's Kafka timestamp is T0 + 2 s.
        await retention.hold(
            since=T0 + timedelta(seconds=2),
            until=T0 + timedelta(seconds=3),
            reason="inquiry",
            actor="a",
        )
        outcome = await retention.purge(DEFAULT_DAYS)
        assert (outcome.count, outcome.held) == (1, 2)
        assert outcome.ranges[0]["first_offset"] == 1
        with pytest.raises(RetentionRefusedError, match="exactly one"):
            await retention.hold(message_id="m", event_id=event, reason="x", actor="a")
        with pytest.raises(RetentionRefusedError, match="not a UUID"):
            await retention.hold(event_id="INC-1", reason="x", actor="a")

    async def test_erasure_on_the_originators_request(
        self, store: AuditStore, retention: Retention
    ) -> None:
        stored = await append_chained(store, _sample())
        target = stored[5].message_id  # retention 365 days: not due yet
        assert target is not None
        with pytest.raises(RetentionRefusedError, match="LV-VRS is not its proven originator"):
            await retention.erase(
                target, requested_by="LV-VRS", request_ref="R-1", reason="x", actor="op"
            )
        assert await store.scan(TOPIC, 0, None, 100) == stored
        outcome = await retention.erase(
            target,
            requested_by="LT-VSAT",
            request_ref="LT-VSAT/DPO/2026-113",
            reason="a wrong person was named",
            actor="operator-1",
        )
        assert outcome.count == 1
        back = await store.scan(TOPIC, 0, None, 100)
        assert (back[5].value, back[5].decoded, back[5].purged_at) == (None, None, NOW)
        assert back[:5] == stored[:5]
        (event,) = await retention.events()
        assert (event.kind, event.actor, event.reason) == (
            RetentionKind.ERASURE,
            "operator-1",
            "a wrong person was named",
        )
        assert event.details["requested_by"] == "LT-VSAT"
        assert event.details["request_ref"] == "LT-VSAT/DPO/2026-113"
        report = await Verifier(store, None).run(None)
        assert (report.findings, report.purged) == ([], 1)
        with pytest.raises(RetentionRefusedError, match="no record"):
            await retention.erase(
                "nope", requested_by="LT-VSAT", request_ref="R", reason="x", actor="op"
            )

    async def test_an_unproven_claim_and_a_held_message_are_not_erased(
        self, store: AuditStore, retention: Retention
    ) -> None:
        stored = await append_chained(store, [_expiring(0, 365, status="invalid"), _sample()[1]])
        forged = stored[0].message_id
        assert forged is not None
        with pytest.raises(RetentionRefusedError, match="none proven"):
            await retention.erase(
                forged, requested_by="LT-VSAT", request_ref="R", reason="x", actor="op"
            )
        held = stored[1].message_id
        assert held is not None
        await retention.hold(message_id=held, reason="court order", actor="a")
        with pytest.raises(RetentionRefusedError, match="legal hold"):
            await retention.erase(
                held, requested_by="LT-VSAT", request_ref="R", reason="x", actor="op"
            )
        assert await store.scan(TOPIC, 0, None, 100) == stored

    async def test_migrate_rechains_a_version_1_store_and_then_it_purges(
        self, store: AuditStore, retention: Retention
    ) -> None:
        rows = _sample()
        previous = GENESIS
        old: list[AuditRecord] = []
        for row in rows:
            stamped = row._replace(stored_at=T0, retain_until=None)
            previous = link_v1(previous, stamped)
            old.append(stamped._replace(row_hash=previous))
        await store.append(old, [], {(TOPIC, 0): GENESIS})
        assert (await Verifier(store, None).run(None)).findings == []
        blocked = await retention.purge(30)
        assert (blocked.count, blocked.unchained) == (0, 6)
        done = await migrate(store.url)
        assert done.rechained == 6
        (event,) = await retention.events()
        assert event.kind is RetentionKind.RECHAIN
        assert event.details["partitions"][0]["old_head"] == previous.hex()
        back = await store.scan(TOPIC, 0, None, 100)
        assert all(r.value_digest is not None and r.opened_digest is not None for r in back)
        assert (await Verifier(store, None).run(None)).findings == []
        assert (await retention.purge(30)).count == 6
        assert (await Verifier(store, None).run(None)).findings == []
        assert (await migrate(store.url)).rechained == 0

    async def test_migrate_refuses_to_rechain_an_altered_version_1_store(
        self, store: AuditStore
    ) -> None:
        previous = GENESIS
        old = []
        for row in _sample():
            stamped = row._replace(stored_at=T0, retain_until=None)
            previous = link_v1(previous, stamped)
            old.append(stamped._replace(row_hash=previous))
        await store.append(old, [], {(TOPIC, 0): GENESIS})
        await _sql(
            store,
            "UPDATE audit_record SET decoded = '{}' WHERE topic = :t AND kafka_offset = 2",
            t=TOPIC,
        )
        with pytest.raises(StoreError, match="offset 2"):
            await migrate(store.url)
        back = await store.scan(TOPIC, 0, None, 100)
        assert all(r.opened_digest is None for r in back)

    @pytest.mark.parametrize("altered", [False, True])
    async def test_a_store_of_the_previous_revision_upgrades_and_rechains(
        self, store_url: str, *, altered: bool
    ) -> None:
        await _upgrade_to(store_url, "0002")
        previous = GENESIS
        rows = []
        for row in _sample():
            # Re-chaining reads retain_until from the signed header (30 days for 0-2).
            days = 30 if row.kafka_offset < 3 else 3650
            decoded = f'{{"header": {{"retention_days": {days}}}, "narrative": "{NARRATIVE}"}}'
            stamped = row._replace(stored_at=T0, retain_until=None, decoded=decoded)
            previous = link_v1(previous, stamped)
            rows.append(stamped._replace(row_hash=previous)._asdict())
        old_columns = list(AuditRecord._fields[: AuditRecord._fields.index("row_hash") + 1])
        engine = create_engine(store_url, writer=True)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text(
                        f"INSERT INTO audit_record ({', '.join(old_columns)}) "  # noqa: S608  # test
                        f"VALUES ({', '.join(':' + c for c in old_columns)})"
                    ),
                    [{c: r[c] for c in old_columns} for r in rows],
                )
                if altered:
                    await connection.execute(
                        sa.text("UPDATE audit_record SET decoded = '{}' WHERE kafka_offset = 4")
                    )
        finally:
            await engine.dispose()
        if altered:
            with pytest.raises(StoreError, match="offset 4"):
                await migrate(store_url)
            with pytest.raises(SchemaVersionError, match="revision 0002"):
                await AuditStore.open(store_url)
            return
        done = await migrate(store_url)
        assert (done.before, done.rechained) == ("0002", 6)
        store = await AuditStore.open(store_url)
        try:
            assert (await Verifier(store, None).run(None)).findings == []
            assert (await Retention(store, clock=clock).purge(DEFAULT_DAYS)).count == 3
            report = await Verifier(store, None).run(None)
            assert (report.findings, report.purged) == ([], 3)
        finally:
            await store.close()


async def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command  # only this test stops at an old revision

    from services.audit._migrate import MIGRATIONS  # the same configuration

    config = MIGRATIONS.config()
    engine = create_engine(url, writer=True)

    def upgrade(connection: sa.Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


class TestSqliteRetention(RetentionContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url

    async def test_purged_content_leaves_no_trace_in_the_files(
        self, store: AuditStore, retention: Retention
    ) -> None:
        # Large enough to need overflow pages, as real reports with narratives do.
        rows = [
            r._replace(decoded=r.decoded.replace(NARRATIVE, NARRATIVE * 40))  # type: ignore[union-attr]
            for r in _sample()[:3]
        ]
        await append_chained(store, rows)
        path = sqlite_path(store.url)
        assert path is not None

        def raw() -> bytes:
            found = b""
            for name in (path, Path(f"{path}-wal")):
                if name.exists():
                    found += name.read_bytes()
            return found

        assert NARRATIVE.encode() in raw()  # the scan can find it while it is there
        outcome = await retention.purge(DEFAULT_DAYS)
        assert (outcome.count, outcome.wal_truncated) == (3, True)
        assert NARRATIVE.encode() not in raw()
        assert b"Petraitis" not in raw()
        assert (await Verifier(store, None).run(None)).findings == []


class TestPostgresRetention(RetentionContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url

    async def test_a_purge_role_may_purge_and_nothing_else(
        self, store: AuditStore, pg_role: str
    ) -> None:
        stored = await append_chained(store, _sample())
        await grant_purge(store.url, pg_role)
        purger = await AuditStore.open(as_role(store.url, pg_role))
        try:
            outcome = await Retention(purger, clock=clock).purge(DEFAULT_DAYS, actor="cron")
            assert outcome.count == 3
            with pytest.raises(StoreError, match="permission denied"):
                await Retention(purger, clock=clock).hold(message_id="m", reason="x", actor="a")
        finally:
            await purger.close()
        assert (await Verifier(store, None).run(None)).findings == []
        engine = create_engine(as_role(store.url, pg_role))
        try:
            for statement in (
                "UPDATE audit_record SET value_digest = NULL",
                "UPDATE audit_record SET row_hash = ''::bytea",
                "UPDATE audit_record SET originator = 'x'",
                "UPDATE audit_retention_event SET reason = 'x'",
                "DELETE FROM audit_record",
                "DELETE FROM audit_retention_event",
                (
                    "INSERT INTO audit_hold (hold_id, reason, placed_by, placed_at) "
                    "VALUES ('h', 'r', 'p', now())"
                ),
            ):
                async with engine.begin() as connection:
                    with pytest.raises(ProgrammingError, match="permission denied"):
                        await connection.execute(sa.text(statement))
        finally:
            await engine.dispose()
        assert (await store.scan(TOPIC, 0, None, 100))[3:] == stored[3:]

    async def test_the_service_role_cannot_purge(self, store: AuditStore, pg_role: str) -> None:
        await append_chained(store, _sample())
        await grant(store.url, pg_role)
        consumer = await AuditStore.open(as_role(store.url, pg_role))
        try:
            with pytest.raises(StoreError, match="permission denied"):
                await Retention(consumer, clock=clock).purge(DEFAULT_DAYS)
        finally:
            await consumer.close()
        assert all(r.purged_at is None for r in await store.scan(TOPIC, 0, None, 100))


def test_records_written_now_are_far_from_retention() -> None:
    # The rule in one line: the Kafka timestamp plus the header's retention_days.
    from services.audit._record import retain_until

    now = int(datetime.now(UTC).timestamp() * 1000)
    assert retain_until(now, 730) == now + 730 * 86_400_000
    assert retain_until(now, None) is None
