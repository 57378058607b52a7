"""The partition follower against the real broker: positions from the caller's store, groups,
replays to an end, and logs that go backwards when the broker restarts.

Each test's consumer keeps its records and positions in a SQLite file of its
own (:class:`follower_support.PositionStore`), as the liaison service will.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from follower_support import PositionStore, Row, eventually, produce

from services.bus import (
    Admitted,
    Batch,
    BatchLimits,
    EmbeddedBroker,
    Follower,
    LogEventKind,
    Position,
    Settings,
    Slice,
    free_port,
    record_digest,
)

LIMITS = BatchLimits(max_records=500, max_bytes=1 << 20, max_ms=20)
FAST_GROUP = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 2000,
}


def _size(_: object) -> int:
    return 64


@dataclass
class Running:
    follower: Follower
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def following(
    settings: Settings,
    store: PositionStore,
    *,
    partitions: list[TopicPartition] | None = None,
    topics: list[str] | None = None,
    **options: object,
) -> AsyncIterator[Running]:
    """A follower consuming into ``store``: ``partitions``, or ``topics`` in a group."""
    assert settings.bootstrap is not None
    follower = Follower(
        settings,
        settings.bootstrap,
        positions=store.positions,
        fetch_max_wait_ms=20,
        metadata_max_age_ms=500,
        **options,  # type: ignore[arg-type]
    )
    if topics is not None:
        follower.subscribe(topics=topics)
    await follower.start()
    if partitions is not None:
        await follower.assign(partitions)
    stop = asyncio.Event()
    task = asyncio.create_task(
        follower.consume(
            store.write, stop, open_records=store.open_records, limits=LIMITS, weight=_size
        )
    )
    try:
        await asyncio.wait_for(follower.positioned.wait(), 30)
        yield Running(follower, stop, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await follower.stop()


def _values(count: int, tag: str) -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(count)]


def _holds(store: PositionStore, topic: str, count: int):
    async def check() -> bool:
        return len(store.rows(topic)) >= count

    return check


@dataclass
class Held:
    """Writes of a store held back: from the first batch picked, until ``released``."""

    holding: asyncio.Event
    released: asyncio.Event
    written: list[list[bytes]]
    """The values of each batch written, in order."""


def hold_writes(store: PositionStore, hold: Callable[[Batch[Row]], bool]) -> Held:
    """Make ``store`` wait before writing a batch ``hold`` picks, until released."""
    held = Held(asyncio.Event(), asyncio.Event(), [])
    write = store.write

    async def held_write(batch: Batch[Row]) -> None:
        if hold(batch):
            held.holding.set()
            await held.released.wait()
        await write(batch)
        held.written.append([r.value for r in batch.items])

    store.write = held_write  # type: ignore[method-assign]
    return held


async def test_it_resumes_from_the_callers_positions_and_stores_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.follow"
    tp = TopicPartition(topic, 0)
    await produce(settings.bootstrap, topic, _values(30, "first"))
    store = PositionStore(tmp_path / "store.db")
    try:
        async with following(settings, store, partitions=[tp]):
            await eventually(_holds(store, topic, 30), "30 records stored")
        await produce(settings.bootstrap, topic, _values(20, "second"))
        async with following(settings, store, partitions=[tp]) as run:
            await eventually(_holds(store, topic, 50), "50 records stored")

            async def caught_up() -> bool:
                (status,) = run.follower.status()
                return status.lag == 0

            await eventually(caught_up, "the follower to see its lag reach 0")
            (status,) = run.follower.status()
        rows = store.rows(topic)
        events = store.events()
    finally:
        store.close()
    assert [(r.epoch, r.offset) for r in rows] == [(0, i) for i in range(50)]
    assert [r.value for r in rows] == _values(30, "first") + _values(20, "second")
    assert events == []
    assert (status.epoch, status.position.next_offset, status.highwater) == (0, 50, 50)
    assert (status.epochs_started, status.stuck_ms) == (0, 0)


async def _digest_at(bootstrap: str, tp: TopicPartition, offset: int) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        return record_digest(await consumer.getone())
    finally:
        await consumer.stop()


async def test_a_group_resumes_from_the_store_not_from_the_group_offsets(
    settings: Settings, tmp_path: Path
) -> None:
    # The group's committed offset says 40; the store (restored from an older copy) says
    # 10: the follower reads from 10 again, because the caller's store is the truth.
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.grouped"
    tp = TopicPartition(topic, 0)
    group = {"group_id": f"{settings.topic_prefix}.group", "commit_interval_ms": 50, **FAST_GROUP}
    await produce(settings.bootstrap, topic, _values(40, "r"))
    store = PositionStore(tmp_path / "store.db")
    try:
        async with following(settings, store, topics=[topic], **group) as run:
            await eventually(_holds(store, topic, 40), "40 records stored")

            async def committed() -> bool:
                return await run.follower.kafka.committed(tp) == 40

            await eventually(committed, "offset 40 committed to the group")
        anchor = await _digest_at(settings.bootstrap, tp, 9)
        store.db.execute('DELETE FROM records WHERE "offset" >= 10')
        store.db.execute("UPDATE positions SET next_offset = 10, anchor = ?", (anchor,))
        async with following(settings, store, topics=[topic], **group):
            await eventually(_holds(store, topic, 40), "offsets 10..39 stored again")
        rows = store.rows(topic)
    finally:
        store.close()
    assert [r.offset for r in rows] == list(range(40))
    assert [r.value for r in rows] == _values(40, "r")


async def test_a_replay_reads_from_an_offset_to_an_end_and_stops(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.replay"
    first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce(settings.bootstrap, topic, _values(30, "a"), partition=0)
    await produce(settings.bootstrap, topic, _values(5, "b"), partition=1)
    store = PositionStore(tmp_path / "replay.db")
    store.db.execute(
        "INSERT INTO positions VALUES (?, 0, 0, 10, NULL)", (topic,)
    )  # replay partition 0 from offset 10, unanchored: an auditor's choice
    follower = Follower(
        settings,
        settings.bootstrap,
        positions=store.positions,
        until={first: 20, second: 5},
        fetch_max_wait_ms=20,
    )
    await follower.start()
    try:
        await follower.assign([first, second])
        await asyncio.wait_for(
            follower.consume(
                store.write,
                asyncio.Event(),
                open_records=store.open_records,
                limits=BatchLimits(max_records=4, max_bytes=1 << 20, max_ms=10_000),
                weight=_size,
            ),
            30,
        )
        done = follower.done
    finally:
        await follower.stop()
        rows = store.rows(topic)
        store.close()
    assert done
    assert [(r.partition, r.offset) for r in rows] == [(0, i) for i in range(10, 20)] + [
        (1, i) for i in range(5)
    ]


async def test_a_replay_to_the_high_watermark_stops_there_without_a_group(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.tohighwater"
    tp = TopicPartition(topic, 0)
    await produce(settings.bootstrap, topic, _values(25, "x"))
    store = PositionStore(tmp_path / "replay.db")
    follower = Follower(
        settings,
        settings.bootstrap,
        positions=store.positions,
        until="highwater",
        fetch_max_wait_ms=20,
    )
    await follower.start()
    try:
        await follower.assign([tp])
        await asyncio.wait_for(
            follower.consume(
                store.write,
                asyncio.Event(),
                open_records=store.open_records,
                limits=LIMITS,
                weight=_size,
            ),
            30,
        )
    finally:
        await follower.stop()
        rows = store.rows(topic)
        store.close()
    assert [r.value for r in rows] == _values(25, "x")


@pytest.mark.slow
async def test_a_restarted_broker_starts_one_epoch_per_restart_and_nothing_is_spliced(
    settings: Settings, tmp_path: Path
) -> None:
    # Restart 1: the new log is shorter than the stored position (its high watermark
    # stays below the anchor). Restart 2: the new log is longer (another record at the
    # anchor's offset). Each is one new epoch, read from the start of the new log.
    port = free_port()
    own = settings.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    assert own.bootstrap is not None
    topic = f"{settings.topic_prefix}.restarts"
    tp = TopicPartition(topic, 0)
    store = PositionStore(tmp_path / "store.db")
    broker = EmbeddedBroker(port=port)
    await broker.start()
    try:
        async with following(own, store, partitions=[tp], confirm_reset_ms=500) as run:
            for epoch, count in enumerate((30, 10, 50)):
                if epoch:
                    await broker.stop()
                    broker = EmbeddedBroker(port=port)
                    await broker.start()
                await produce(own.bootstrap, topic, _values(count, f"epoch{epoch}"))

                async def stored(epoch: int = epoch, count: int = count) -> bool:
                    return len([r for r in store.rows(topic) if r.epoch == epoch]) == count

                await eventually(stored, f"epoch {epoch} stored", timeout=60)
            (status,) = run.follower.status()
        rows = store.rows(topic)
        events = store.events()
    finally:
        await broker.stop()
        store.close()
    assert [(kind, epoch, last) for _, _, epoch, kind, _, last, _ in events] == [
        (LogEventKind.LOG_RESET, 1, 29),
        (LogEventKind.LOG_RESET, 2, 9),
    ]
    assert "below the stored offset" in events[0][6]
    assert "is not the one stored" in events[1][6]
    for epoch, count in enumerate((30, 10, 50)):
        mine = [r for r in rows if r.epoch == epoch]
        assert [r.offset for r in mine] == list(range(count))
        assert [r.value for r in mine] == _values(count, f"epoch{epoch}")
    assert (status.epoch, status.epochs_started, status.position) == (
        2,
        2,
        Position(2, 50, status.position.anchor),
    )


async def test_a_consume_loop_waiting_on_a_hung_store_shows_idle_and_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    # The consumer's store hangs after its first write: the loop stops fetching (memory
    # stays bounded) while the broker's log grows, and the follower says for how long.
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.stuck"
    tp = TopicPartition(topic, 0)
    store = PositionStore(tmp_path / "store.db")
    held = hold_writes(store, lambda _: store.batches > 0)
    await produce(settings.bootstrap, topic, _values(5, "before"))
    try:
        async with following(settings, store, partitions=[tp]) as run:
            await eventually(_holds(store, topic, 5), "the first write")
            # 8 MB: more than the loop may hold (two batches, three fetches of at most
            # 1 MB each), however the fetches and the bursts interleave.
            padding = b"x" * 1000
            for burst in range(8):
                values = [v + padding for v in _values(1000, f"after{burst}")]
                await produce(settings.bootstrap, topic, values)

            async def not_fetching() -> bool:
                return run.follower.idle_ms() >= 1000

            await eventually(not_fetching, "the consume loop to wait on the store")
            (status,) = run.follower.status()
            assert (status.position.next_offset or 0) < 8005
            held.released.set()
            await eventually(_holds(store, topic, 8005), "every record once the store answers")

            async def advancing() -> bool:
                (status,) = run.follower.status()
                return (status.stuck_ms, status.lag) == (0, 0) and run.follower.idle_ms() < 1000

            await eventually(advancing, "the partition to advance again")
    finally:
        store.close()


async def test_a_due_batch_keeps_filling_while_the_one_before_it_is_written(
    settings: Settings, tmp_path: Path
) -> None:
    # While the store writes one batch, the loop goes on fetching and opening: records
    # that arrive meanwhile join the next batch, even once it is due by age, and are
    # ready to write the moment the store answers.
    assert settings.bootstrap is not None
    topic = f"{settings.topic_prefix}.overlap"
    tp = TopicPartition(topic, 0)
    store = PositionStore(tmp_path / "store.db")
    held = hold_writes(store, lambda batch: any(r.value.startswith(b"second") for r in batch.items))
    opened: list[bytes] = []
    open_records = store.open_records

    async def noting(admitted: list[Admitted]) -> list[Row]:
        rows = await open_records(admitted)
        opened.extend(r.value for r in rows)
        return rows

    store.open_records = noting  # type: ignore[method-assign]

    def were_opened(values: list[bytes]):
        async def check() -> bool:
            return set(values) <= set(opened)

        return check

    await produce(settings.bootstrap, topic, _values(5, "first"))
    try:
        async with following(settings, store, partitions=[tp]) as run:
            await eventually(_holds(store, topic, 5), "the first batch written")
            await produce(settings.bootstrap, topic, _values(3, "second"))
            await asyncio.wait_for(held.holding.wait(), 30)
            later = _values(3, "third")
            await produce(settings.bootstrap, topic, later)
            await eventually(were_opened(later), "records opened while the store writes")
            # Past the batch's age limit (LIMITS.max_ms, 20 ms): the batch is due now.
            await asyncio.sleep(LIMITS.max_ms * 5 / 1000)
            last = _values(3, "fourth")
            await produce(settings.bootstrap, topic, last)
            await eventually(were_opened(last), "records opened while a due batch waits")
            # A write that drags on (a store that is down) is not waited for by polling the
            # broker every few milliseconds: one second now sees a handful of fetches.
            fetches = 0
            fetch = run.follower.fetch

            async def counted(timeout_ms: int) -> list[Slice]:
                nonlocal fetches
                fetches += 1
                return await fetch(timeout_ms)

            run.follower.fetch = counted  # type: ignore[method-assign]
            await asyncio.sleep(1.0)
            assert 1 <= fetches <= 50
            held.released.set()
            await eventually(_holds(store, topic, 14), "every record once the store answers")
    finally:
        store.close()
    # One batch, written right after the slow one (the old loop stopped fetching as soon as
    # this batch was due, so the last three came in a batch of their own, later).
    together = [b for b in held.written if set(b) & set(later + last)]
    assert len(together) == 1
    assert together[0][-6:] == later + last
