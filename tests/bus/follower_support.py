"""Helpers of the follower tests: a consumer's own store, producing, reading the broker back.

:class:`PositionStore` is what a consumer on the follower keeps (the liaison
service will): its records and each partition's position in one SQLite file,
written in one transaction per batch, only if the stored position is still
the one the batch follows on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.bus import (
    Admitted,
    Batch,
    LogEventKind,
    Position,
    PositionConflictError,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, epoch INTEGER NOT NULL,
    "offset" INTEGER NOT NULL, value BLOB,
    PRIMARY KEY (topic, partition, epoch, "offset")
);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, epoch INTEGER NOT NULL,
    next_offset INTEGER, anchor BLOB,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, epoch INTEGER NOT NULL,
    kind TEXT NOT NULL, first_offset INTEGER, last_offset INTEGER, detail TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One record as the store keeps it."""

    topic: str
    partition: int
    epoch: int
    offset: int
    value: bytes | None


class PositionStore:
    """Records and positions in one SQLite file, one transaction per batch."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(_SCHEMA)
        self._known: dict[TopicPartition, Position | None] = {}
        self.batches = 0

    def close(self) -> None:
        self.db.close()

    def _stored(self, tp: TopicPartition) -> Position | None:
        row = self.db.execute(
            "SELECT epoch, next_offset, anchor FROM positions WHERE topic = ? AND partition = ?",
            (tp.topic, tp.partition),
        ).fetchone()
        return None if row is None else Position(*row)

    async def positions(
        self, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, Position]:
        found = {}
        for tp in partitions:
            stored = self._stored(tp)
            self._known[tp] = stored
            found[tp] = stored or Position.start()
        return found

    async def open_records(self, admitted: list[Admitted]) -> list[Row]:
        return [Row(r.topic, r.partition, epoch, r.offset, r.value) for r, epoch in admitted]

    def _check(self, batch: Batch[Row]) -> None:
        for tp in batch.positions:
            if self._stored(tp) != self._known.get(tp):
                raise PositionConflictError(f"{tp}: the store moved")

    async def write(self, batch: Batch[Row]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._check(batch)
            db.executemany(
                'INSERT INTO records (topic, partition, epoch, "offset", value) '
                "VALUES (?, ?, ?, ?, ?)",
                [(r.topic, r.partition, r.epoch, r.offset, r.value) for r in batch.items],
            )
            db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.topic,
                        e.partition,
                        e.epoch,
                        str(e.kind),
                        e.first_offset,
                        e.last_offset,
                        e.detail,
                    )
                    for e in batch.events
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                [
                    (tp.topic, tp.partition, p.epoch, p.next_offset, p.anchor)
                    for tp, p in batch.positions.items()
                ],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._known.update(batch.positions)
        self.batches += 1

    def rows(self, topic: str | None = None) -> list[Row]:
        query = 'SELECT topic, partition, epoch, "offset", value FROM records'
        args: tuple[str, ...] = ()
        if topic is not None:
            query += " WHERE topic = ?"
            args = (topic,)
        return [
            Row(*r)
            for r in self.db.execute(query + ' ORDER BY topic, partition, epoch, "offset"', args)
        ]

    def events(self) -> list[tuple[str, int, int, LogEventKind, int | None, int | None, str]]:
        return [
            (t, p, e, LogEventKind(k), f, last, d)
            for t, p, e, k, f, last, d in self.db.execute("SELECT * FROM events ORDER BY rowid")
        ]


async def produce(bootstrap: str, topic: str, values: Sequence[bytes], partition: int = 0) -> None:
    """Produce ``values`` to one partition and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, partition=partition) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def broker_values(
    bootstrap: str, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, list[bytes | None]]:
    """Every value the broker holds on ``topic``, per partition, read to the high watermark."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[int, list[bytes | None]] = {p: [] for p in range(partitions)}
        ends: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=200)
            for tp, records in got.items():
                found[tp.partition].extend(r.value for r in records)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends[tp] = highwater
            if len(ends) == len(tps) and all(await consumer.position(tp) >= ends[tp] for tp in tps):
                return found
        raise AssertionError(f"could not read {topic} to its end within {timeout} s")
    finally:
        await consumer.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
