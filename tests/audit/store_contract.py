"""The audit store's contract, written once and run against every backend (SQLite, PostgreSQL).

A backend's test class inherits :class:`StoreContract` and provides the
``store_url`` fixture: the same behaviour is proven for each implementation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.audit import (
    GENESIS,
    AuditRecord,
    AuditStore,
    EventKind,
    FindingCategory,
    FindingKind,
    LogEvent,
    RecordQuery,
    SchemaVersionError,
    StoreConflictError,
    Verifier,
    chain,
    migrate,
)
from services.audit._engine import create_engine
from services.audit._record import NOT_STORED, encode_headers
from services.audit._tables import VERSION_TABLE, metadata

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(
    offset: int,
    *,
    topic: str = "oix.LT-VSAT.incidents",
    partition: int = 0,
    epoch: int = 0,
    message_id: str | None = None,
    originator: str = "LT-VSAT",
    report_type: str = "IncidentReport",
    status: str = "valid",
    at: datetime = T0,
) -> AuditRecord:
    """An unstored record with distinct content per offset."""
    return AuditRecord(
        topic=topic,
        kafka_partition=partition,
        epoch=epoch,
        kafka_offset=offset,
        kafka_timestamp=int((at + timedelta(seconds=offset)).timestamp() * 1000),
        timestamp_type=0,
        record_key=f"key-{offset}".encode(),
        headers=encode_headers((("oix-message-id", b"m"), ("oix-signature", b"\xff\x00\x01"))),
        value=b"\xc3\x01" + offset.to_bytes(8, "little") + b"body",
        schema_fingerprint=f"{offset:016x}",
        message_id=message_id or str(uuid.uuid4()),
        originator=originator,
        report_type=report_type,
        signature_status=status,
        signature_detail="" if status == "valid" else "signature does not match the value",
        decoded='{"header": {"originator": "LT-VSAT"}}' if status == "valid" else None,
        decode_error=None if status == "valid" else "CorruptMessageError: bad",
        stored_at=NOT_STORED,
        row_hash=b"",
    )


async def append_chained(
    store: AuditStore, records: list[AuditRecord], events: list[LogEvent] | None = None
) -> list[AuditRecord]:
    """Append ``records`` chained to what the store holds; returns them as stored."""
    partitions = {(r.topic, r.kafka_partition) for r in records}
    partitions |= {(e.topic, e.partition) for e in events or []}
    heads = await store.heads(sorted(partitions))
    expected = {p: h.chain for p, h in heads.items()}
    linked = chain(records, expected, datetime.now(UTC))
    await store.append(linked.records, events or [], expected)
    return linked.records


class StoreContract:
    """Behaviour every audit store backend must have."""

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[AuditStore]:
        await migrate(store_url)
        store = await AuditStore.open(store_url)
        try:
            yield store
        finally:
            await store.close()

    async def test_refuses_a_database_that_was_never_migrated(self, store_url: str) -> None:
        with pytest.raises(SchemaVersionError, match="oix audit migrate"):
            await AuditStore.open(store_url)

    async def test_migrations_build_the_tables_the_code_uses(self, store_url: str) -> None:
        first = await migrate(store_url)
        again = await migrate(store_url)
        assert (first.before, again.before, again.after) == (None, first.after, first.after)
        engine = create_engine(store_url)
        try:
            async with engine.connect() as connection:

                def differences(sync: sa.Connection) -> list[object]:
                    context = MigrationContext.configure(
                        sync, opts={"version_table": VERSION_TABLE}
                    )
                    return list(compare_metadata(context, metadata))

                assert await connection.run_sync(differences) == []
        finally:
            await engine.dispose()

    async def test_stores_records_exactly_and_reports_the_position(self, store: AuditStore) -> None:
        odd = record(0)._replace(
            record_key=None, value=None, message_id="bad\ufffdid", decoded=None
        )
        stored = await append_chained(store, [odd, record(1), record(2)])
        back = await store.scan(odd.topic, 0, None, 100)
        assert back == stored
        assert back[0].stored_at.tzinfo is not None
        assert back[0].header_pairs() == (
            ("oix-message-id", b"m"),
            ("oix-signature", b"\xff\x00\x01"),
        )
        heads = await store.heads([(odd.topic, 0), (odd.topic, 1)])
        assert heads[(odd.topic, 0)].last_offset == 2
        assert heads[(odd.topic, 0)].chain == stored[-1].row_hash
        assert heads[(odd.topic, 1)].last_offset is None
        assert heads[(odd.topic, 1)].chain == GENESIS
        assert await store.count() == 3

    async def test_a_batch_built_on_an_old_position_writes_nothing(self, store: AuditStore) -> None:
        await append_chained(store, [record(0), record(1)])
        stale = chain([record(2)], {("oix.LT-VSAT.incidents", 0): GENESIS}, datetime.now(UTC))
        gap = LogEvent("oix.LT-VSAT.incidents", 0, 0, EventKind.OFFSET_GAP, 5, 6, "x", T0)
        with pytest.raises(StoreConflictError):
            await store.append(stale.records, [gap], {("oix.LT-VSAT.incidents", 0): GENESIS})
        assert await store.count() == 2
        assert await store.log_events() == []

    async def test_the_same_offset_is_never_stored_twice(self, store: AuditStore) -> None:
        await append_chained(store, [record(0), record(1)])
        heads = await store.heads([("oix.LT-VSAT.incidents", 0)])
        expected = {p: h.chain for p, h in heads.items()}
        again = chain([record(1), record(2)], expected, datetime.now(UTC))
        with pytest.raises(StoreConflictError):
            await store.append(again.records, [], expected)
        assert [r.kafka_offset for r in await store.scan("oix.LT-VSAT.incidents", 0, None, 9)] == [
            0,
            1,
        ]

    async def test_log_events_move_the_epoch(self, store: AuditStore) -> None:
        topic = "oix.LT-VSAT.incidents"
        await append_chained(store, [record(0), record(1)])
        reset = LogEvent(topic, 0, 1, EventKind.LOG_RESET, None, 1, "restarted", T0)
        await append_chained(store, [], [reset])
        head = (await store.heads([(topic, 0)]))[(topic, 0)]
        assert (head.epoch, head.last_offset) == (1, None)
        await append_chained(store, [record(0, epoch=1)])
        head = (await store.heads([(topic, 0)]))[(topic, 0)]
        assert (head.epoch, head.last_offset) == (1, 0)
        assert await store.log_events() == [reset]
        extents = await store.extents()
        assert [(e.epoch, e.first_offset, e.last_offset, e.count) for e in extents] == [
            (0, 0, 1, 2),
            (1, 0, 0, 1),
        ]

    async def test_queries_for_auditors(self, store: AuditStore) -> None:
        wanted = str(uuid.uuid4())
        await append_chained(
            store,
            [
                record(0),
                record(1, message_id=wanted),
                record(2, originator="LV-VRS", report_type="SituationReport"),
                record(3, status="invalid"),
            ],
        )
        await append_chained(store, [record(0, topic="oix.PL-SG.incidents", partition=2)])

        async def offsets(**filters: object) -> list[tuple[str, int]]:
            found = await store.query(RecordQuery(**filters))  # type: ignore[arg-type]
            return [(r.topic.split(".")[1], r.kafka_offset) for r in found]

        assert await offsets(message_id=wanted) == [("LT-VSAT", 1)]
        assert await offsets(originator="LV-VRS") == [("LT-VSAT", 2)]
        assert await offsets(report_type="SituationReport") == [("LT-VSAT", 2)]
        assert await offsets(signature_status="invalid") == [("LT-VSAT", 3)]
        assert await offsets(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3)) == [
            ("LT-VSAT", 1),
            ("LT-VSAT", 2),
        ]
        assert await offsets(topic="oix.LT-VSAT.incidents", from_offset=1, to_offset=2) == [
            ("LT-VSAT", 1),
            ("LT-VSAT", 2),
        ]
        assert await offsets(topic="oix.PL-SG.incidents", partition=2) == [("PL-SG", 0)]
        assert len(await offsets(limit=2)) == 2
        lt = "oix.LT-VSAT.incidents"
        assert await offsets(originator="LT-VSAT", topic=lt) == [("LT-VSAT", 0), ("LT-VSAT", 1)]
        assert await offsets(originator="LT-VSAT", topic=lt, unproven=True) == [
            ("LT-VSAT", 0),
            ("LT-VSAT", 1),
            ("LT-VSAT", 3),
        ]

    async def test_one_message_id_under_two_proven_originators_is_found(
        self, store: AuditStore
    ) -> None:
        # Issue 8: LT-VSAT published with LV-VRS's message id. A message is (originator,
        # message id): the same id from two parties is two messages under one id.
        reused, lt, lv = str(uuid.uuid4()), "oix.LT-VSAT.incidents", "oix.LV-VRS.incidents"
        await append_chained(
            store,
            [
                record(0, topic=lv, message_id=reused, originator="LV-VRS", at=T0 - timedelta(1)),
                record(1, topic=lv),
            ],
        )
        await append_chained(
            store,
            [
                record(0, topic=lt, message_id=reused),
                # A copy of one message on a second topic, and a claim nothing proves: not reuse.
                record(1, topic=lt, partition=0, message_id=str(uuid.uuid4())),
                record(2, topic=lt, message_id=reused, originator="PL-SG", status="invalid"),
            ],
        )
        twice = str(uuid.uuid4())
        await append_chained(store, [record(3, topic=lt, message_id=twice)])
        await append_chained(store, [record(0, topic=f"{lt}.direct", message_id=twice)])

        found = await store.reused_message_ids()
        assert [(r.originator, r.topic, r.kafka_offset) for r in found] == [
            ("LV-VRS", lv, 0),
            ("LT-VSAT", lt, 0),
        ]
        queried = await store.query(RecordQuery(reused=True))
        assert [(r.originator, r.kafka_offset) for r in queried] == [("LV-VRS", 0), ("LT-VSAT", 0)]
        report = await Verifier(store, None).run(None)
        [finding] = [f for f in report.findings if f.kind is FindingKind.MESSAGE_ID_REUSED]
        assert finding.category is FindingCategory.TRUST
        assert f"message id {reused} is stored under 2 proven originators" in finding.detail
        assert f"LV-VRS at {lv}[0]@0 (epoch 0)" in finding.detail
        assert f"LT-VSAT at {lt}[0]@0 (epoch 0)" in finding.detail
        assert report.reused_ids == 1
        assert report.of(FindingCategory.INTEGRITY) == []

    async def test_a_page_of_records_says_whether_the_limit_cut_it(self, store: AuditStore) -> None:
        await append_chained(store, [record(i) for i in range(3)])
        assert [
            len(r) if isinstance(r, list) else r
            for r in await store.query_page(RecordQuery(limit=2))
        ] == [2, True]
        assert [
            len(r) if isinstance(r, list) else r
            for r in await store.query_page(RecordQuery(limit=3))
        ] == [3, False]

    async def test_untrusted_records_and_keys_for_the_quarantine(self, store: AuditStore) -> None:
        lt, pl = "oix.LT-VSAT.incidents", "oix.PL-SG.incidents"
        await append_chained(store, [record(0), record(1, status="invalid"), record(2)])
        await append_chained(store, [record(0, topic=pl, status="unknown_key")])
        await append_chained(store, [record(5, topic=lt, partition=3, status="unsigned")])
        found = await store.untrusted([(lt, 0), (pl, 0)])
        assert [(r.topic, r.kafka_offset) for r in found] == [(lt, 1), (pl, 0)]
        assert await store.untrusted([(lt, 1)]) == []
        assert await store.keys(lt) == {b"key-0", b"key-1", b"key-2", b"key-5"}
        assert await store.keys("oix.quarantine") == set()

    async def test_verification_finds_an_altered_and_a_deleted_row(
        self, store: AuditStore, store_url: str
    ) -> None:
        topic = "oix.LT-VSAT.incidents"
        await append_chained(store, [record(i) for i in range(10)])
        clean = await Verifier(store, None).run(None)
        assert clean.ok, clean.findings
        assert clean.rows == 10
        engine = create_engine(store_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text(
                        "UPDATE audit_record SET decoded = '{}' "
                        "WHERE topic = :t AND kafka_offset = 3"
                    ),
                    {"t": topic},
                )
                await connection.execute(
                    sa.text("DELETE FROM audit_record WHERE topic = :t AND kafka_offset = 7"),
                    {"t": topic},
                )
        finally:
            await engine.dispose()
        report = await Verifier(store, None).run(None)
        found = {(f.kind, f.first_offset, f.last_offset) for f in report.findings}
        assert found == {
            (FindingKind.ALTERED, 3, 3),
            (FindingKind.GAP, 7, 7),
            # The row after the deleted one no longer follows its stored predecessor.
            (FindingKind.ALTERED, 8, 8),
        }
