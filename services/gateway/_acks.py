"""Partners' Acknowledgement messages for this agency's reports, read from the bus.

A partner acknowledges on its own topics: its coordination feed, or its
bilateral channel to this agency. The reader follows those and every other
topic released to this agency (it notes from each record's headers the
message ids other parties use: see :mod:`._message_ids`; only
acknowledgements are decoded). It follows the partitions itself
(no consumer group: every gateway replica keeps a complete picture in its own
store) with the bus's :class:`~services.bus.Follower`, and keeps its read
positions in the store, in the same transaction as the acknowledgements, so
each is recorded exactly once across restarts.

A log that went backwards (the local broker forgets everything on restart)
is noticed by the follower and said, then read again from its start;
re-reading is harmless because an acknowledgement is stored under its own
message id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from services.bus import (
    H_MESSAGE_ID,
    H_ORIGINATOR,
    H_TYPE,
    Acknowledgement,
    Admitted,
    AgreementError,
    Batch,
    BatchLimits,
    Exchange,
    Follower,
    KafkaRecord,
    LogEventKind,
    Position,
    Settings,
    cancel_and_wait,
    get_logger,
)
from services.gateway._metrics import Metrics
from services.gateway._results import Delivery
from services.gateway._settings import GatewaySettings
from services.gateway._store import PartnerAck, Store

log = get_logger(__name__)
_ACK_TYPE = Acknowledgement.report_type.encode()
_PER_WRITE = BatchLimits(max_records=1000, max_bytes=1000, max_ms=0)
"""Each fetch is recorded at once (items weigh 1: the count bounds them)."""
_DRAIN_TIMEOUT_S = 5.0

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


def released_topics(exchange: Exchange, agency: str) -> list[str]:
    """Every topic partners release to ``agency``: their feeds to it, their channels to it.

    Read for acknowledgements and, from every record's headers, the message
    ids other parties use (see :mod:`._message_ids`).
    """
    naming = exchange.router.naming
    topics = set(acknowledgement_topics(exchange, agency))
    for release in exchange.agreement.releases:
        if agency in release.to:
            topics.update(naming.feed(release.from_, feed) for feed in release.feeds)
    return sorted(topics)


@dataclass(frozen=True, slots=True)
class _Read:
    """What one record tells the gateway: another party's message id, and maybe an ack."""

    seen: tuple[str, str] | None
    """(message id, originator) as the headers say, when another party's."""
    ack: PartnerAck | None


def _one(_: object) -> int:  # every record weighs 1: the count bounds a write
    return 1


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
        self._refresh_s = gateway.ack_refresh_interval
        self.topics = released_topics(exchange, agency)
        self._follower = Follower(
            settings,
            bootstrap,
            positions=self._positions,
            name=f"oix-gateway-acks-{agency}",
            fetch_max_wait_ms=gateway.ack_fetch_max_wait_ms,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading in the background."""
        await self._follower.start()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"acknowledgements of {self._agency}")

    async def stop(self) -> None:
        """Stop reading (recording what was read), then disconnect."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            try:
                await asyncio.wait_for(task, _DRAIN_TIMEOUT_S + 5)
            except TimeoutError:
                log.warning("the acknowledgement reader did not stop in time", agency=self._agency)
            except Exception:
                log.exception("the acknowledgement reader had failed", agency=self._agency)
        await self._follower.stop()

    async def _run(self) -> None:
        refreshing = asyncio.create_task(self._refresh(), name=f"ack partitions of {self._agency}")
        try:
            await self._follower.consume(
                self._record,
                self._stop,
                open_records=self._open,
                limits=_PER_WRITE,
                weight=_one,
                drain_timeout_s=_DRAIN_TIMEOUT_S,
            )
        except Exception:
            log.exception(
                "reading acknowledgements stopped; the status endpoint no longer learns of new "
                "ones",
                agency=self._agency,
            )
            raise
        finally:
            await cancel_and_wait(refreshing)

    async def _refresh(self) -> None:
        """Follow every existing partition of the topics (new ones appear over time)."""
        while True:
            try:
                cluster = await self._metadata()
            except KafkaError as exc:
                log.warning("no metadata for acknowledgement topics; retrying", error=repr(exc))
            else:
                await self._follower.assign(
                    TopicPartition(topic, partition)
                    for topic in self.topics
                    for partition in cluster.partitions_for_topic(topic) or ()
                )
            await asyncio.sleep(self._refresh_s)

    async def _positions(
        self, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, Position]:
        stored = self._store.read_positions()
        found = {}
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            found[tp] = Position.start() if offset is None else Position.at(offset)
        return found

    async def _open(self, admitted: list[Admitted]) -> list[_Read]:
        return [_Read(self._seen(record), self._acknowledgement(record)) for record, _ in admitted]

    def _seen(self, record: KafkaRecord) -> tuple[str, str] | None:
        headers = dict(record.headers)
        try:
            message_id = headers[H_MESSAGE_ID].decode()
            originator = headers[H_ORIGINATOR].decode()
        except (KeyError, UnicodeDecodeError, AttributeError):
            return None
        return (message_id, originator) if originator != self._agency else None

    async def _record(self, batch: Batch[_Read]) -> None:
        for event in batch.events:
            if event.kind is LogEventKind.LOG_RESET:
                log.error(
                    "the log went backwards: the broker no longer has what this gateway read "
                    "(a broker that lost its data, e.g. the memory-only local broker after a "
                    "restart); reading the partition again from its start",
                    topic=event.topic,
                    partition=event.partition,
                    position=event.last_offset,
                )
        seen = [r.seen for r in batch.items if r.seen is not None]
        if seen:
            self._store.record_foreign_ids(seen)
        acks = [r.ack for r in batch.items if r.ack is not None]
        mine = self._store.known(a.acknowledged_message_id for a in acks)
        acks = [a for a in acks if a.acknowledged_message_id in mine and self._recipient(a)]
        self._store.record_acknowledgements(
            acks,
            {(tp.topic, tp.partition): p.next_offset for tp, p in batch.positions.items()},
        )
        if acks:
            self._metrics.acknowledgements.inc(len(acks))
            for ack in acks:
                log.info(
                    "partner acknowledged",
                    message_id=ack.acknowledged_message_id,
                    party=ack.party,
                    status=ack.status,
                )

    def _recipient(self, ack: PartnerAck) -> bool:
        """Whether the acknowledging party is one the message was released to.

        Its signature proves who acknowledges, not that it ever was a recipient:
        an acknowledgement from anyone else is said and never counted.
        """
        published = self._store.published(ack.acknowledged_message_id)
        if published is not None and ack.party in published.accepted.releasable_to:
            return True
        log.warning(
            "ignoring an acknowledgement from a party the message was not released to",
            message_id=ack.acknowledged_message_id,
            party=ack.party,
            ack_message_id=ack.ack_message_id,
            topic=ack.delivery.topic,
            partition=ack.delivery.partition,
            offset=ack.delivery.offset,
        )
        return False

    def _acknowledgement(self, record: KafkaRecord) -> PartnerAck | None:
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
            # The partner's created_at is its claim; this is what the gateway saw.
            observed_at=datetime.now(UTC).isoformat(),
        )
