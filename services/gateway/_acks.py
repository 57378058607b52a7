"""Partners' Acknowledgement messages for this agency's reports, read from the bus.

A partner acknowledges on its own topics: its coordination feed, or its
bilateral channel to this agency. The reader assigns those partitions itself
(no consumer group: every gateway replica keeps a complete picture in its own
store) and keeps its read positions in the store, in the same transaction as
the acknowledgements, so each is recorded exactly once across restarts.

A log that went backwards (the local broker forgets everything on restart)
is noticed and said, then read again from its start; re-reading is harmless
because an acknowledgement is stored under its own message id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from services.bus import (
    H_TYPE,
    Acknowledgement,
    AgreementError,
    Exchange,
    Settings,
    consumer,
    get_logger,
)
from services.gateway._metrics import Metrics
from services.gateway._results import Delivery
from services.gateway._settings import GatewaySettings
from services.gateway._store import PartnerAck, Store

log = get_logger(__name__)
_ACK_TYPE = Acknowledgement.report_type.encode()

Metadata = Callable[[], Awaitable[Any]]
"""Fetches cluster metadata (an aiokafka ``ClusterMetadata``)."""


def acknowledgement_topics(exchange: Exchange, agency: str) -> list[str]:
    """Every topic a partner's acknowledgement addressed to ``agency`` can be on."""
    agreement = exchange.agreement
    naming = exchange.router.naming
    try:
        ack_feed: str | None = agreement.feed_of(Acknowledgement.report_type)
    except AgreementError:
        ack_feed = None  # acknowledgements then travel on bilateral channels only
    topics: set[str] = set()
    for release in agreement.releases:
        if agency not in release.to:
            continue
        if ack_feed in release.feeds:
            topics.add(naming.feed(release.from_, ack_feed))
        topics.add(naming.direct(release.from_, agency))
    return sorted(topics)


class AcknowledgementReader:
    """Records partners' acknowledgements of ``agency``'s messages in the store."""

    def __init__(
        self,
        settings: Settings,
        *,
        gateway: GatewaySettings,
        exchange: Exchange,
        agency: str,
        store: Store,
        metrics: Metrics,
        bootstrap: str,
        metadata: Metadata,
    ) -> None:
        self._exchange = exchange
        self._agency = agency
        self._store = store
        self._metrics = metrics
        self._metadata = metadata
        self._refresh = gateway.ack_refresh_interval
        self.topics = acknowledgement_topics(exchange, agency)
        self._consumer = consumer(
            settings,
            bootstrap,
            # Positions come from the store; a position past the end of the log
            # must be an error we see, not a silent reset.
            auto_offset_reset="none",
            fetch_max_wait_ms=gateway.ack_fetch_max_wait_ms,
        )
        self._positions: dict[tuple[str, int], int] = {}
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading in the background."""
        await self._consumer.start()
        self._positions = self._store.read_positions()
        self._task = asyncio.create_task(self._run(), name=f"acknowledgements of {self._agency}")

    async def stop(self) -> None:
        """Stop reading; what was read is already recorded."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._consumer.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        while True:
            if loop.time() >= next_refresh:
                await self._assign()
                next_refresh = loop.time() + self._refresh
            if not self._assigned:
                await asyncio.sleep(max(0.0, next_refresh - loop.time()))
                continue
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            except OffsetOutOfRangeError as exc:
                offsets: dict[TopicPartition, int] = exc.args[0] if exc.args else {}
                await self._went_backwards({tp: (offset, None) for tp, offset in offsets.items()})
                continue
            except KafkaError as exc:
                log.warning("reading acknowledgements failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if batches:
                self._record(batches)
            await self._went_backwards(self._behind_us())

    async def _assign(self) -> None:
        """Assign every existing partition of the topics (new ones appear over time)."""
        try:
            cluster = await self._metadata()
        except KafkaError as exc:
            log.warning("no metadata for acknowledgement topics; retrying", error=repr(exc))
            return
        wanted = frozenset(
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in cluster.partitions_for_topic(topic) or ()
        )
        if wanted == self._assigned:
            return
        self._consumer.assign(sorted(wanted))
        for tp in wanted:
            position = self._positions.get((tp.topic, tp.partition))
            if position is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)
        self._assigned = wanted

    def _behind_us(self) -> dict[TopicPartition, tuple[int, int | None]]:
        """Partitions whose log now ends before what was read (an error is not always raised).

        The high watermark comes with every fetch response; the local broker
        answers a fetch past its end with no records and no error, so this is
        where its restart shows.
        """
        behind = {}
        for tp in self._assigned:
            position = self._positions.get((tp.topic, tp.partition))
            highwater = self._consumer.highwater(tp)
            if position is not None and highwater is not None and highwater < position:
                behind[tp] = (position, highwater)
        return behind

    async def _went_backwards(
        self, partitions: dict[TopicPartition, tuple[int, int | None]]
    ) -> None:
        for tp, (position, log_end) in partitions.items():
            log.error(
                "the log went backwards: the broker no longer has the offset this gateway "
                "read up to (a broker that lost its data, e.g. the memory-only local broker "
                "after a restart); reading the partition again from its start",
                topic=tp.topic,
                partition=tp.partition,
                position=position,
                log_end=log_end,
            )
            self._positions.pop((tp.topic, tp.partition), None)
            self._store.forget_position(tp.topic, tp.partition)
            await self._consumer.seek_to_beginning(tp)

    def _record(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        acks: list[PartnerAck] = []
        moved: dict[tuple[str, int], int] = {}
        for tp, records in batches.items():
            for record in records:
                moved[(tp.topic, tp.partition)] = record.offset + 1
                ack = self._acknowledgement(record)
                if ack is not None:
                    acks.append(ack)
        mine = self._store.known(a.acknowledged_message_id for a in acks)
        acks = [a for a in acks if a.acknowledged_message_id in mine]
        self._store.record_acknowledgements(acks, moved)
        self._positions.update(moved)
        if acks:
            self._metrics.acknowledgements.inc(len(acks))
            for ack in acks:
                log.info(
                    "partner acknowledged",
                    message_id=ack.acknowledged_message_id,
                    party=ack.party,
                    status=ack.status,
                )

    def _acknowledgement(self, record: ConsumerRecord[bytes, bytes]) -> PartnerAck | None:
        # The type header lets every other report pass without decoding it.
        if dict(record.headers).get(H_TYPE) != _ACK_TYPE:
            return None
        opened = self._exchange.opener.open(record.value, record.headers)
        if not opened.trusted or opened.decoded is None:
            # Not ours to quarantine (the audit consumer does): just never believe it.
            log.warning(
                "ignoring an untrusted acknowledgement",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                problem=opened.problem,
            )
            return None
        report = opened.decoded.to_model()
        assert isinstance(report, Acknowledgement)
        return PartnerAck(
            ack_message_id=str(report.header.message_id),
            acknowledged_message_id=str(report.acknowledged_message_id),
            party=report.header.originator,
            status=str(report.status),
            note=report.note,
            created_at=report.header.created_at.isoformat(),
            delivery=Delivery(record.topic, record.partition, record.offset),
        )
