"""Re-drive keeps values, keys and signatures byte-identical; compare finds injected differences."""

from __future__ import annotations

import contextlib
import sqlite3

import asyncpg
import pytest
from polling import eventually
from replay_support import audit_running, produce, sealed

from services.audit import RecordScan
from services.bus import Exchange, Settings
from services.replay import (
    PROVENANCE,
    Difference,
    ReplayError,
    Selection,
    compare,
    read_kafka,
    redrive,
    refuse_live_topic,
)

pytestmark = pytest.mark.timeout(120)


async def test_redrive_keeps_values_and_signatures_and_adds_provenance(
    settings: Settings, exchange: Exchange
) -> None:
    source = exchange.naming.feed("LT-VSAT", "incidents")
    reports = sealed(exchange, "LT-VSAT", 6)
    await produce(settings, source, reports)
    target = f"recovery-{settings.topic_prefix}"
    with pytest.raises(ReplayError, match="live OIX feed topic"):
        refuse_live_topic(exchange, source, force=False)
    refuse_live_topic(exchange, source, force=True)  # forced: allowed
    refuse_live_topic(exchange, target, force=False)
    assert settings.bootstrap is not None
    selection = Selection(topics=(source,), from_offset=1, to_offset=4)
    reader = read_kafka(settings, settings.bootstrap, exchange, selection)
    async with contextlib.aclosing(reader) as records:
        sent = await redrive(settings, settings.bootstrap, records, target, "auditor-1")
    assert sent == 4
    copies = []
    reader = read_kafka(settings, settings.bootstrap, exchange, Selection(topics=(target,)))
    async with contextlib.aclosing(reader) as records:
        copies = [record async for record in records]
    assert len(copies) == 4
    # Keys choose the target's partitions: order the copies by where they came from.
    copies.sort(key=lambda c: int(dict(c.headers)["oix-replay-source-offset"]))
    for copy, original in zip(copies, reports[1:5], strict=True):
        assert copy.value == original.value
        assert copy.key == original.key
        assert list(copy.headers[: len(original.headers)]) == original.headers
        provenance = dict(copy.headers[len(original.headers) :])
        assert list(provenance) == list(PROVENANCE)
        assert provenance["oix-replay-source-topic"] == source.encode()
        assert provenance["oix-replay-operator"] == b"auditor-1"
        assert copy.signature_status == "valid", copy.signature_detail
    offsets = [int(dict(c.headers)["oix-replay-source-offset"]) for c in copies]
    assert offsets == [1, 2, 3, 4]


async def tamper(url: str, statements: list[tuple[str, bytes | None]]) -> None:
    """Change stored rows behind the store's back (as someone with database access could)."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as connection:
            for sql, value in statements:
                connection.execute(sql.replace("$1", "?"), () if value is None else (value,))
            connection.commit()
        return
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        for sql, value in statements:
            await connection.execute(sql, *(() if value is None else (value,)))
    finally:
        await connection.close()


async def test_compare_finds_every_injected_difference(
    settings: Settings, exchange: Exchange, store_url: str
) -> None:
    url = store_url  # SQLite, then PostgreSQL
    topic = exchange.naming.feed("LT-VSAT", "incidents")
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 6))
    async with audit_running(settings, exchange, url) as consumer:
        await eventually(lambda: consumer.stored >= 6, "6 records stored", timeout=60)
    assert settings.bootstrap is not None

    async def differences() -> list[Difference]:
        found: list[Difference] = []
        scan = await RecordScan.open(url)
        try:
            await compare(
                settings,
                settings.bootstrap or "",
                scan,
                exchange,
                Selection(topics=(topic,)),
                report=found.append,
            )
        finally:
            await scan.close()
        return found

    assert await differences() == []
    await tamper(
        url,
        [
            ("UPDATE audit_record SET value = $1 WHERE kafka_offset = 3", b"\xc3\x01forged"),
            ("UPDATE audit_record SET headers = '[]' WHERE kafka_offset = 5", None),
        ],
    )
    await produce(settings, topic, sealed(exchange, "LT-VSAT", 1), first_ms=1_790_000_000_000)
    found = await differences()
    described = {(d.offset, d.what.split(" ")[0]) for d in found}
    assert (3, "value") in described
    assert (5, "headers") in described
    assert (6, "in") in described
    assert all(d.topic == topic and d.partition == 0 for d in found)
    assert len(found) == 3, found
