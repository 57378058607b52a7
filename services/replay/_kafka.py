"""Reading history from the broker: assigned partitions, never a consumer group, never a commit.

The partition follower (:class:`~services.bus.Follower`) reads without a
group (``assign``), from the caller's positions, up to each partition's high
watermark seen at the start, and checks continuity; gaps and logs that went
backwards come out as events, which the replay reports.

Times: Kafka can find the first offset at or after a time (``offsets_for_times``),
but some brokers answer wrongly (the local tansu broker does). The answer is
checked against the records around it; a wrong one is not used, and the
records are read from the log start instead. Either way every record is
filtered on its own timestamp, so the result is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.bus import (
    Exchange,
    Follower,
    KafkaRecord,
    LogEvent,
    OpenerPool,
    Position,
    Settings,
    consumer,
    get_logger,
    start_consumer,
)
from services.replay._errors import SelectionError
from services.replay._opening import Opening, opening_for, worker_preload
from services.replay._record import Replayed, open_replayed, raw_replayed
from services.replay._select import Selection

log = get_logger(__name__)

FETCH_MAX_BYTES = 8 * 1024 * 1024
"""What one fetch may bring: bounds the replay's memory whatever the history's size."""


@dataclass
class ReadStats:
    """What a read saw besides the records it yielded."""

    read: int = 0
    """Records read from the source (before the filters on content)."""
    kept: int = 0
    undecodable: int = 0
    events: list[LogEvent] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    """Selected topics the broker does not have (nothing was ever written to them)."""
    time_lookup: str | None = None
    """How ``since`` was found: ``broker`` (its time index, checked) or ``records`` (scanned)."""
    span: int | None = None
    """How many records the selected offsets held when the read began, as the broker's
    ListOffsets tells: each partition's end offset less where the read starts. Exact on
    Apache Kafka; the local broker answers the base offset of the last batch + 1, so less
    when that batch holds several records. None when the broker did not answer."""


async def _partitions(
    kafka: AIOKafkaConsumer, topics: Iterable[str], stats: ReadStats
) -> list[TopicPartition]:
    present = await kafka.topics()
    found: list[TopicPartition] = []
    for topic in topics:
        if topic not in present:
            stats.missing_topics.append(topic)
            continue
        numbers = kafka.partitions_for_topic(topic) or set()
        found.extend(TopicPartition(topic, p) for p in sorted(numbers))
    return found


async def _record_at(kafka: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int | None:
    """The timestamp of the record at ``offset`` (None when none comes within 5 s)."""
    kafka.seek(tp, offset)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while True:
                fetched = await kafka.getmany(tp, timeout_ms=500, max_records=1)
                for record in fetched.get(tp, []):
                    if record.offset >= offset:
                        return int(record.timestamp) if record.offset == offset else None
    return None


async def _time_starts(
    kafka: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since_ms: int,
    starts: dict[TopicPartition, int],
) -> dict[TopicPartition, int] | None:
    """Where each partition's records at or after ``since_ms`` begin, if the broker knows.

    ``starts``: each partition's log start. None when the broker's answer is
    missing or wrong for any partition: the record before the offset it names
    must be older, the one at it not.
    """
    try:
        answer = await kafka.offsets_for_times(dict.fromkeys(partitions, since_ms))
    except (KafkaError, ValueError) as exc:
        log.info("the broker cannot look up offsets by time", error=repr(exc))
        return None
    kafka.assign(partitions)
    found: dict[TopicPartition, int] = {}
    for tp in partitions:
        hit = answer.get(tp)
        if hit is None:
            return None  # "no record that new": not checkable cheaply, so not trusted
        at = await _record_at(kafka, tp, hit.offset)
        if at is None or at < since_ms:
            return None
        if hit.offset > starts[tp]:
            before = await _record_at(kafka, tp, hit.offset - 1)
            if before is None or before >= since_ms:
                return None
        found[tp] = hit.offset
    return found


async def _starts(
    settings: Settings,
    bootstrap: str,
    topics: Iterable[str],
    selection: Selection,
    stats: ReadStats,
) -> dict[TopicPartition, Position]:
    """Every selected partition and where to begin reading it."""
    # A plain client for metadata and the time lookup; no group, nothing committed.
    kafka = consumer(settings, bootstrap, group_id=None)
    await start_consumer(kafka, settings, bootstrap)
    try:
        partitions = await _partitions(kafka, topics, stats)
        if selection.partition is not None:
            partitions = [tp for tp in partitions if tp.partition == selection.partition]
        bounds = await _bounds(kafka, partitions)
        by_time: dict[TopicPartition, int] = {}
        since = selection.since_ms
        if since is not None and partitions:
            # Without the log starts the answer cannot be checked: records are scanned.
            checked = (
                None if bounds is None else await _time_starts(kafka, partitions, since, bounds[0])
            )
            stats.time_lookup = "records" if checked is None else "broker"
            if checked is None:
                log.warning(
                    "the broker's offsets_for_times answer is wrong or missing here; "
                    "reading from the log start and filtering on record timestamps",
                )
            by_time = checked or {}
    finally:
        await kafka.stop()
    positions: dict[TopicPartition, Position] = {}
    span = 0
    for tp in partitions:
        begin = max(selection.from_offset or 0, by_time.get(tp, 0))
        positions[tp] = Position.at(begin) if begin > 0 else Position.start()
        if bounds is not None:
            first, end = bounds[0][tp], bounds[1][tp]
            if selection.to_offset is not None:
                end = min(end, selection.to_offset + 1)
            span += max(0, end - max(begin, first))
    stats.span = span if bounds is not None else None
    return positions


async def _bounds(
    kafka: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]] | None:
    """Each partition's log start and end offsets now, or None when the broker will not say."""
    if not partitions:
        return {}, {}
    try:
        return await kafka.beginning_offsets(partitions), await kafka.end_offsets(partitions)
    except (KafkaError, ValueError) as exc:
        log.info("the broker did not give the partitions' offsets", error=repr(exc))
        return None


async def read_kafka(  # noqa: C901, PLR0912, PLR0915  # one loop: fetch, open ahead, yield in order
    settings: Settings,
    bootstrap: str,
    exchange: Exchange,
    selection: Selection,
    *,
    checks: bool = True,
    raw: bool = False,
    processes: int = 0,
    workers_after: int = 4096,
    reports: bool = True,
    stats: ReadStats | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Replayed]:
    """The selected records from the broker, partition by partition in offset order.

    Reads up to each partition's high watermark at the start (or ``to_offset``)
    and ends; ``stop`` ends it early after the current record. Use with
    :func:`contextlib.aclosing`.

    ``raw``: neither decode nor verify (a bulk copy: wire bytes, headers and
    coordinates; type, message id and originator as the headers say).
    ``processes``: worker processes that open (decode and, with ``checks``,
    verify) records while this one fetches and writes; 0 opens them here.
    Starting them costs about a second of CPU (import OIX, load the agreement
    and schemas). When the broker's offsets show at least ``workers_after``
    records in the range (:attr:`ReadStats.span`; or ``workers_after`` is 0),
    they start at once and open every record; a short range never starts
    them. Otherwise (offsets unknown, or a broker answering too few) they
    start once ``workers_after`` records were read, this process opening
    until they are up.
    ``reports=False``: records opened by workers carry the report encoded for
    the Avro container (:attr:`Replayed.report_avro`) instead of a dict.

    Raises:
        SelectionError: ``raw`` with a filter on the report's content.
    """
    stats = stats if stats is not None else ReadStats()
    if raw and selection.needs_content:
        raise SelectionError(
            "--raw: the event id and mode filters need decoded reports; drop --raw"
        )
    if raw:
        batches = read_kafka_raw(settings, bootstrap, exchange, selection, stats=stats, stop=stop)
        async with contextlib.aclosing(batches) as fetched:
            async for fetch in fetched:
                for record in fetch:
                    yield raw_replayed("kafka", record)
                    if stop is not None and stop.is_set():
                        return
        return
    topics = selection.topics or tuple(exchange.router.all_topics())
    pool: OpenerPool[Opening] | None = None
    starting: asyncio.Task[None] | None = None
    try:
        positions = await _starts(settings, bootstrap, topics, selection, stats)
        opener = exchange.opener if checks else None
        codec = exchange.codec

        def open_here(record: KafkaRecord) -> Replayed:
            return open_replayed(codec, opener, "kafka", record)

        follower = _follower(settings, bootstrap, positions)
        remaining = set(positions)
        await follower.assign(remaining)
        to_offset = selection.to_offset
        ahead: deque[tuple[list[KafkaRecord], asyncio.Task[list[Opening]]]] = deque()
        # Known long: wait for the workers rather than open here meanwhile. Measured on a
        # 2-core machine, 50,000 records checked: 7,600/s against 6,600 opening here until
        # they were up (this process and the starting workers fought for the cores).
        at_once = workers_after == 0 or (stats.span is not None and stats.span >= workers_after)
        opened = 0

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        try:
            async with follower:
                while True:
                    batch: list[KafkaRecord] = []
                    if remaining and not follower.done and not stopped():
                        for piece in await follower.fetch(200):
                            stats.events.extend(piece.events)
                            for record in piece.records:
                                if to_offset is not None and record.offset > to_offset:
                                    break
                                stats.read += 1
                                if selection.in_range(record.offset, record.timestamp):
                                    batch.append(record)
                            last = piece.records[-1].offset if piece.records else None
                            if to_offset is not None and last is not None and last >= to_offset:
                                remaining.discard(piece.partition)
                                await follower.assign(remaining)
                    elif not ahead:
                        return
                    opened += len(batch)
                    if pool is None and processes > 0 and (at_once or opened >= workers_after):
                        # A long range: start the workers.
                        pool = OpenerPool(
                            settings,
                            opening_for(checks=checks, reports=reports or selection.needs_content),
                            processes,
                            exchange.opener,
                            # Workers fork from a server that imported OIX once, instead
                            # of each importing it (about a second of CPU each).
                            forkserver=True,
                            preload=worker_preload(),
                        )
                        starting = asyncio.create_task(pool.start())
                        if at_once:
                            await starting  # else this process opens until they are up
                    if pool is not None and starting is not None and starting.done():
                        starting.result()  # raises what starting the workers raised
                        if batch:
                            task = asyncio.create_task(
                                pool.open([(r.value, tuple(r.headers)) for r in batch])
                            )
                            ahead.append((batch, task))
                        fetching = remaining and not follower.done and not stopped()
                        # Keep the workers busy: open the next fetch while this one is written.
                        if not ahead or (fetching and len(ahead) < OPEN_AHEAD):
                            continue
                        records, task = ahead.popleft()
                        openings = await task
                        replayed = [_assemble(r, o) for r, o in zip(records, openings, strict=True)]
                    else:
                        replayed = [open_here(record) for record in batch]
                    for one in replayed:
                        if selection.keeps(one):
                            stats.kept += 1
                            stats.undecodable += one.undecodable
                            yield one
                        if stopped():
                            return
        finally:
            for _, task in ahead:
                task.cancel()
    finally:
        if starting is not None:
            starting.cancel()
        if pool is not None:
            pool.close()


def _follower(
    settings: Settings, bootstrap: str, positions: dict[TopicPartition, Position]
) -> Follower:
    """A follower of ``positions``' partitions from there to their high watermarks."""

    async def where(partitions: Sequence[TopicPartition]) -> dict[TopicPartition, Position]:
        return {tp: positions[tp] for tp in partitions if tp in positions}

    return Follower(
        settings,
        bootstrap,
        positions=where,
        group_id=None,
        until="highwater",
        name="oix-replay",
        fetch_max_bytes=FETCH_MAX_BYTES,
    )


def _filters_on_headers(selection: Selection) -> bool:
    """Whether a raw record must be looked at to be kept (the ranges are checked apart)."""
    return any(
        wanted is not None
        for wanted in (
            selection.message_id,
            selection.report_type,
            selection.originator,
            selection.signature_status,
        )
    )


async def read_kafka_raw(
    settings: Settings,
    bootstrap: str,
    exchange: Exchange,
    selection: Selection,
    *,
    stats: ReadStats | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[list[KafkaRecord]]:
    """The selected records as fetched, neither decoded nor verified, one list per fetch.

    A raw replay (``--raw``) without a :class:`Replayed` per record: a writer
    takes each list whole (:meth:`~services.replay._writers.Writer.write_raw`).
    The records are those :func:`read_kafka` with ``raw`` replays, in the same
    order; ``stop`` ends it after the current list. Use with
    :func:`contextlib.aclosing`.

    Raises:
        SelectionError: a filter on the report's content.
    """
    stats = stats if stats is not None else ReadStats()
    if selection.needs_content:
        raise SelectionError(
            "--raw: the event id and mode filters need decoded reports; drop --raw"
        )
    topics = selection.topics or tuple(exchange.router.all_topics())
    positions = await _starts(settings, bootstrap, topics, selection, stats)
    follower = _follower(settings, bootstrap, positions)
    remaining = set(positions)
    await follower.assign(remaining)
    to_offset = selection.to_offset
    # Offsets and times are checked here; the filters on headers need the record's fields.
    looked_at = _filters_on_headers(selection)
    ranged = any(
        bound is not None
        for bound in (selection.from_offset, to_offset, selection.since, selection.until)
    )
    async with follower:
        while remaining and not follower.done and not (stop is not None and stop.is_set()):
            batch: list[KafkaRecord] = []
            for piece in await follower.fetch(200):
                stats.events.extend(piece.events)
                records = piece.records
                if to_offset is not None and records and records[-1].offset >= to_offset:
                    records = [r for r in records if r.offset <= to_offset]
                    remaining.discard(piece.partition)
                    await follower.assign(remaining)
                stats.read += len(records)
                if ranged:
                    records = [r for r in records if selection.in_range(r.offset, r.timestamp)]
                batch.extend(records)
            if looked_at:
                batch = [r for r in batch if selection.keeps(raw_replayed("kafka", r))]
            if batch:
                stats.kept += len(batch)
                yield batch


OPEN_AHEAD = 3
"""Fetched batches being opened by the workers while the oldest is yielded."""


def _assemble(record: KafkaRecord, opening: Opening) -> Replayed:
    return Replayed(
        "kafka",
        record.topic,
        record.partition,
        0,
        record.offset,
        record.timestamp,
        record.timestamp_type,
        record.key,
        tuple(record.headers),
        record.value,
        opening.schema_fingerprint,
        opening.report_type,
        opening.message_id,
        opening.originator,
        opening.signature_status,
        opening.signature_detail,
        opening.report,
        opening.decode_error,
        None,
        opening.report_avro,
    )
