"""Group delivery: admitted reports go to the broker together, are acknowledged, recorded, settled.

Reports sent together form a :class:`Group`; one task produces them, waits for
the broker's acks (acks=all), keeps only the acks the :class:`BrokerGate`
vouches for (a broker it verified, over the connections it verified), and
records the accepted ones in the store, so a retry finds them and a
correction can follow them. While the gate is closed nothing is produced.
Each report is then settled from its group's results: accepted, or an answer
that says why not. Coordinates the store already held for another report are
a finding (:class:`~._store.Finding`): logged, counted, kept.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from services.bus import SealedReport, Settings, get_logger, trace_id_of
from services.gateway._errors import BrokerUnavailableError, PayloadTooLargeError
from services.gateway._guard import BrokerGate, UnverifiedBrokerError
from services.gateway._metrics import Metrics
from services.gateway._results import Accepted, Delivery, Outcome
from services.gateway._store import Finding, Record, Store

log = get_logger(__name__)
GROUP_SIZE = 256
"""Reports per group (and per store transaction).

A transaction's fixed cost is about 20 rows' worth (13.8 µs a row at 64, 11.2
at 256), and a batch of 1000 still goes out in four groups.
"""


@dataclass(frozen=True, slots=True)
class Prepared:
    """An admitted report, sealed and routed, ready to be produced."""

    # What the answer needs of the report, not the model: a group holds its
    # reports until the broker acks, and every live model makes collections longer.
    event_id: str
    releasable_to: tuple[str, ...]
    sealed: SealedReport
    topics: list[str]
    fingerprint: str
    idempotency_key: str | None


Delivered = Accepted | BaseException
"""What became of one report of a group: accepted, or the broker's error."""


class Group:
    """Reports sent together: one task produces them, waits for the acks, records them.

    One task per group rather than per report: at thousands of reports a
    second, a task, its wake-ups and a commit per report cost more than the
    rest of the pipeline's own work.
    """

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: list[Prepared] = []
        self.task: asyncio.Task[list[Delivered]] | None = None

    def index_of(self, message_id: str) -> int:
        """Where ``message_id`` is in the group."""
        return next(i for i, p in enumerate(self.items) if p.sealed.message_id == message_id)

    def failed(self, message_id: str) -> bool:
        """The group is done and ``message_id`` was not accepted."""
        task = self.task
        if task is None or task.cancelled() or task.exception() is not None:
            return True
        return isinstance(task.result()[self.index_of(message_id)], BaseException)


@dataclass(frozen=True, slots=True)
class Placed:
    """A report placed in a group, to be settled from the group's results."""

    group: Group
    index: int
    message_id: str


class GroupDelivery:
    """Produces groups of one agency's admitted reports, and knows which are in flight."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        store: Store,
        metrics: Metrics,
        *,
        timeout: float,
        retry_after: int,
        broker_check_interval: float,
        settings: Settings,
        bootstrap: str | None,
        recreate_topics: bool,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.timeout = timeout
        self._producer = producer
        self._retry_after = retry_after
        self.gate = BrokerGate(
            producer,
            store,
            settings=settings,
            bootstrap=bootstrap,
            check_every=broker_check_interval,
            recreate_topics=recreate_topics,
            on_change=metrics.broker_gate,
            on_finding=self._found,
        )
        self._open: Group | None = None
        self._by_id: dict[str, Group] = {}
        self._by_key: dict[str, Group] = {}

    @property
    def in_flight(self) -> int:
        """Reports sent and not yet acknowledged (or failed)."""
        return len(self._by_id)

    def group_of(self, message_id: str) -> Group | None:
        """The group ``message_id`` is in flight in, if it is."""
        return self._by_id.get(message_id)

    def group_of_key(self, key: str) -> Group | None:
        """The group of the report in flight with Idempotency-Key ``key``, if any."""
        return self._by_key.get(key)

    async def start(self) -> None:
        """Verify the broker (the gate opens when it could), then watch it."""
        await self.gate.start()

    async def close(self, grace: float) -> None:
        """Wait up to ``grace`` s for the groups in flight; stop watching the broker."""
        pending = {g.task for g in self._by_id.values() if g.task is not None}
        if pending:
            log.info("waiting for reports in flight", groups=len(pending))
            _, late = await asyncio.wait(pending, timeout=grace)
            if late:
                log.warning(
                    "reports still unacknowledged at shutdown; the producer flushes them",
                    groups=len(late),
                )
        await self.gate.stop()

    def open_group(self, loop: asyncio.AbstractEventLoop) -> Group:
        """The group new reports join: shared by concurrent requests, sent at the next turn."""
        group = self._open
        if group is None or group.task is not None or len(group.items) >= GROUP_SIZE:
            group = self._open = Group()
            loop.call_soon(self.launch, group)
        return group

    def place(self, prepared: Prepared, group: Group) -> Placed:
        """Put an admitted report in ``group``; it is in flight from now on."""
        message_id = prepared.sealed.message_id
        group.items.append(prepared)
        self._by_id[message_id] = group
        if prepared.idempotency_key is not None:
            self._by_key[prepared.idempotency_key] = group
        return Placed(group, len(group.items) - 1, message_id)

    def launch(self, group: Group) -> None:
        """Send ``group`` now (unless it went already or is empty)."""
        if group.task is not None or not group.items:
            return
        group.task = asyncio.create_task(self._deliver(group), name="deliver reports")
        self.metrics.in_flight.inc(len(group.items))
        group.task.add_done_callback(partial(self._delivered, group))

    async def delivered_all(self, groups: set[Group]) -> None:
        """Send the groups still open; wait (up to the timeout) until all are delivered."""
        if not groups:
            return
        # One turn of the loop, so that reports of concurrent requests placed
        # in the same turn join the open group before it leaves.
        await asyncio.sleep(0)
        for group in groups:
            self.launch(group)
        tasks = {g.task for g in groups if g.task is not None}
        await asyncio.wait(tasks, timeout=self.timeout)

    def settle(self, placed: Placed) -> Outcome:
        """What becomes of a placed report: its acceptance, or why it was not accepted."""
        task, message_id = placed.group.task, placed.message_id
        if task is None or not task.done():
            return self.unavailable(message_id, late(self.timeout))
        if task.cancelled():
            return self.unavailable(message_id, "its delivery was cancelled")
        failure = task.exception()
        if failure is not None:
            raise failure  # not the broker: a fault of the gateway itself
        result = task.result()[placed.index]
        if isinstance(result, MessageSizeTooLargeError):
            return PayloadTooLargeError(
                f"the encoded report is larger than the broker accepts: {result}",
                message_id=message_id,
            )
        if isinstance(result, UnverifiedBrokerError):
            return self.unavailable(message_id, str(result))
        if isinstance(result, KafkaError):
            return self.unavailable(message_id, f"the broker refused or failed it: {result!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    def unavailable(self, message_id: str | None, why: str) -> BrokerUnavailableError:
        """A 503 that says why, and how to retry without writing twice."""
        retry = (
            f"; retry with the same message id ({message_id}) to get the outcome without "
            "writing it twice"
            if message_id is not None
            else "; retry later"
        )
        return BrokerUnavailableError(f"not accepted: {why}{retry}", self._retry_after, message_id)

    def _delivered(self, group: Group, task: asyncio.Task[list[Delivered]]) -> None:
        self.metrics.in_flight.dec(len(group.items))
        for prepared in group.items:
            if self._by_id.get(prepared.sealed.message_id) is group:
                del self._by_id[prepared.sealed.message_id]
            key = prepared.idempotency_key
            if key is not None and self._by_key.get(key) is group:
                del self._by_key[key]
        if not task.cancelled():
            task.exception()  # retrieved here: the answers say it

    async def _deliver(self, group: Group) -> list[Delivered]:
        """Produce every report, wait for acks=all, record; runs on after a client gave up."""
        ticket = self.gate.ticket()
        if ticket is None:
            closed = UnverifiedBrokerError(
                "nothing was written: the gateway has not verified the broker "
                f"({self.gate.problem})"
            )
            return self._record(group, [closed] * len(group.items), 0.0)
        started = time.perf_counter()
        sends: list[list[asyncio.Future[Any]] | BaseException] = []
        for prepared in group.items:
            sealed = prepared.sealed
            try:
                sends.append(
                    [
                        await self._producer.send(
                            topic, sealed.value, key=sealed.key, headers=sealed.headers
                        )
                        for topic in prepared.topics
                    ],
                )
            except KafkaError as exc:
                sends.append(exc)
        results: list[list[Any] | BaseException] = []
        for send in sends:
            if isinstance(send, BaseException):
                results.append(send)
                continue
            try:
                results.append([await future for future in send])
            except KafkaError as exc:
                results.append(exc)
        elapsed = time.perf_counter() - started
        failed = [
            r
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, MessageSizeTooLargeError)
        ]
        if failed:
            self.gate.close(f"a delivery failed: {failed[0]!r}")
        if not self.gate.vouches(ticket):
            unvouched = UnverifiedBrokerError(
                "the broker acknowledged it, but not over a connection to the broker the "
                f"gateway verified ({self.gate.problem}): a restarted broker acknowledges "
                "writes it does not keep, so it is not counted as written"
            )
            results = [r if isinstance(r, BaseException) else unvouched for r in results]
        else:
            self.gate.wrote(sorted({t for p in group.items for t in p.topics}))
        return self._record(group, results, elapsed)

    def _record(
        self, group: Group, results: list[list[Any] | BaseException], elapsed: float
    ) -> list[Delivered]:
        delivered: list[Delivered] = []
        records: list[Record] = []
        now = datetime.now(UTC)
        for prepared, result in zip(group.items, results, strict=True):
            sealed = prepared.sealed
            trace_id = trace_id_of(sealed.traceparent)
            if isinstance(result, BaseException):
                log.warning(
                    "broker did not acknowledge the report",
                    error=repr(result),
                    message_id=sealed.message_id,
                    trace_id=trace_id,
                )
                delivered.append(result)
                continue
            accepted = Accepted(
                message_id=sealed.message_id,
                report_type=sealed.report_type,
                event_id=prepared.event_id,
                key=sealed.key.decode(),
                deliveries=tuple([Delivery(m.topic, m.partition, m.offset) for m in result]),
                releasable_to=prepared.releasable_to,
                accepted_at=now,
                trace_id=trace_id,
            )
            records.append(Record(accepted, prepared.fingerprint, prepared.idempotency_key))
            delivered.append(accepted)
        # Accepted means recorded: a retry finds it, a correction can follow it.
        if not records:
            return delivered
        for finding in self.store.record(records):
            self._found(finding)
        by_type: dict[str, int] = {}
        for record in records:
            report_type = record.accepted.report_type
            by_type[report_type] = by_type.get(report_type, 0) + 1
        for report_type, count in by_type.items():
            self.metrics.accepted.labels(report_type).inc(count)
        observe = self.metrics.ack_latency.observe
        for _ in records:
            # The group's time: from handing its first report to the producer to
            # its last acknowledgement (for a report on its own, exactly its own).
            observe(elapsed)
        # One line per group, naming every report: a line per report cost more
        # than producing it.
        log.info(
            "reports accepted",
            count=len(records),
            reports=[
                {
                    "message_id": a.message_id,
                    "report_type": a.report_type,
                    "topic": a.topic,
                    "partition": a.partition,
                    "offset": a.offset,
                    "copies": len(a.deliveries),
                    "trace_id": a.trace_id,
                }
                for a in (record.accepted for record in records)
            ],
        )
        return delivered

    def _found(self, finding: Finding) -> None:
        self.metrics.findings.labels(finding.kind).inc()
        log.warning(
            "the broker lost reports it had acknowledged",
            kind=finding.kind,
            lost_message_id=finding.lost_message_id,
            by_message_id=finding.by_message_id,
            topic=finding.delivery.topic,
            partition=finding.delivery.partition,
            offset=finding.delivery.offset,
            broker_epoch=finding.broker_epoch,
            detail=finding.detail,
        )
        # The log was replaced (under a connection that stayed open): look again.
        self.gate.close(finding.detail)


def late(timeout: float) -> str:
    """Why a report is not accepted when its acknowledgement is late."""
    return (
        f"the broker did not acknowledge it within {timeout:g} s (down or slow); it may still "
        "be written"
    )
