"""Reading the gateway's own writes back for a while after the broker came back.

A broker that restarted can go on changing its log after it acknowledged
writes: the local broker (tansu) has put, at the offset of a report it had
acknowledged, another write it acknowledged over a connection the gateway
no longer vouched for (that client got 503), and the report was then in the
log nowhere. Nothing in the acknowledgements shows that. So, for
``WINDOW`` seconds after the gate opens again, the gateway reads back what
it wrote since and compares each acknowledged offset with the record the
broker serves there: another record and the report nowhere in what was
read is a ``record_replaced`` finding naming the lost report (whose retry
is then published again); the report at another offset is ``record_moved``.
Apache Kafka does neither; the read-back costs one fetch per partition per
check, for ``WINDOW`` seconds after a reconnection only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import TopicPartition

from services.bus import H_MESSAGE_ID, Settings, consumer, get_logger, start_consumer
from services.gateway._results import Delivery
from services.gateway._store import RECORD_MOVED, RECORD_REPLACED, Finding, Store

log = get_logger(__name__)
WINDOW = 30.0
"""Seconds after the gate opens again during which writes are read back."""
READ_TIMEOUT = 5.0
"""Seconds one partition's read-back may take."""

Partition = tuple[str, int]


class ReadBack:
    """The read-back of one window: from each partition's offset when the gate opened."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        bootstrap: str | None,
        on_finding: Callable[[Finding], None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._bootstrap = bootstrap
        self._on_finding = on_finding
        self._epoch: int | None = None
        self._start: dict[Partition, int] = {}
        self._until = 0.0
        self._reported: set[str] = set()

    def mark(self, epoch: int, now: float) -> None:
        """The gate closed: what was acknowledged until now came from the verified broker.

        While a window runs it goes on from where it began: the broker may still
        replace what it acknowledged before the gate closed again.
        """
        if epoch != self._epoch or not self.active(now):
            self._epoch = epoch
            self._start = {p: last + 1 for p, last in self._store.last_offsets(epoch).items()}

    def begin(self, epoch: int, now: float) -> None:
        """The gate opened again: read back, for ``WINDOW``, what was acknowledged since it closed.

        In a new broker epoch (the log was replaced meanwhile) that is all of the epoch.
        """
        if epoch != self._epoch:
            self._epoch, self._start = epoch, {}
        self._until = now + WINDOW

    def active(self, now: float) -> bool:
        """True while the window runs (and a broker is known to read from)."""
        return self._bootstrap is not None and self._epoch is not None and now < self._until

    async def sweep(self) -> int:
        """Compare every acknowledged offset of the window with the log; findings made."""
        epoch = self._epoch
        if epoch is None or self._bootstrap is None:
            return 0
        acks: dict[Partition, list[tuple[int, str]]] = {}
        for topic, partition in sorted(self._store.last_offsets(epoch)):
            start = self._start.get((topic, partition), 0)
            found = self._store.acknowledged_from(epoch, topic, partition, start)
            if found:
                acks[(topic, partition)] = found
        if not acks:
            return 0
        served = await self._read({p: offsets[0][0] for p, offsets in acks.items()})
        made = 0
        for (topic, partition), offsets in acks.items():
            held, end = served[(topic, partition)]
            at = {message_id: offset for offset, message_id in held.items()}
            for offset, message_id in offsets:
                if offset >= end or message_id in self._reported or held.get(offset) == message_id:
                    continue  # not served yet, said already, or where it was acknowledged
                self._reported.add(message_id)
                finding = _finding(
                    Delivery(topic, partition, offset),
                    epoch,
                    message_id,
                    held.get(offset),
                    at.get(message_id),
                )
                self._store.record_read_back(finding)
                self._on_finding(finding)
                log.warning(finding.detail, kind=finding.kind, lost_message_id=message_id)
                made += 1
        return made

    async def _read(
        self, starts: dict[Partition, int]
    ) -> dict[Partition, tuple[dict[int, str], int]]:
        """Per partition: the message ids served from its start to its end, and that end."""
        assert self._bootstrap is not None
        reader = consumer(self._settings, self._bootstrap, fetch_max_wait_ms=100)
        await start_consumer(reader, self._settings, self._bootstrap)
        tps = {TopicPartition(t, p): (t, p) for t, p in starts}
        held: dict[Partition, dict[int, str]] = {p: {} for p in starts}
        try:
            reader.assign(list(tps))
            ends = await reader.end_offsets(list(tps))
            for tp, partition in tps.items():
                reader.seek(tp, starts[partition])
            async with asyncio.timeout(READ_TIMEOUT):
                while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
                    for tp, records in (await reader.getmany(timeout_ms=200)).items():
                        for record in records:
                            value = dict(record.headers).get(H_MESSAGE_ID, b"").decode()
                            held[tps[tp]][record.offset] = value
            return {tps[tp]: (held[tps[tp]], ends[tp]) for tp in tps}
        finally:
            await reader.stop()


def _finding(
    delivery: Delivery, epoch: int, message_id: str, found: str | None, elsewhere: int | None
) -> Finding:
    where = f"{delivery.topic}/{delivery.partition}/{delivery.offset}"
    if elsewhere is not None:
        return Finding(
            kind=RECORD_MOVED,
            found_at=datetime.now(UTC),
            delivery=delivery,
            broker_epoch=epoch,
            lost_message_id=message_id,
            by_message_id=found or "",
            detail=(
                f"the broker acknowledged {message_id} at {where} and serves it at offset "
                f"{elsewhere}: it is in the log once, its answer names the wrong offset"
            ),
        )
    return Finding(
        kind=RECORD_REPLACED,
        found_at=datetime.now(UTC),
        delivery=delivery,
        broker_epoch=epoch,
        lost_message_id=message_id,
        by_message_id=found or "",
        detail=(
            f"read back, {where} holds {found or 'no record'} where the broker acknowledged "
            f"{message_id}, which is not in the log near it: {message_id} is lost (it was "
            "answered 201); a retry of it is published again"
        ),
    )
