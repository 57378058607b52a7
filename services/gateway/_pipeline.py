"""The one publish pipeline behind both front doors (HTTP and the SDK).

validate → fill the header → idempotency → route (corrections and
cancellations follow their original) → seal (encode, sign) → produce with
acks=all → record → answer. A report is accepted only once the broker has
acknowledged it and the gateway has recorded it; anything else is an answer
that says why, never a silent loss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from services.bus import (
    AgreementError,
    Cancellation,
    Exchange,
    FieldIssue,
    LinkRelation,
    Report,
    SealedReport,
    get_logger,
    issue_from_message,
    trace_id_of,
)
from services.gateway._errors import (
    BrokerUnavailableError,
    GatewayError,
    IdempotencyConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ReportRejectedError,
    ShuttingDownError,
)
from services.gateway._guard import LostTopicGuard, LostWriteError
from services.gateway._intake import (
    check_originator,
    fill_header,
    fingerprint_of,
    report_type_of,
    validate,
    with_defaults,
)
from services.gateway._metrics import Metrics
from services.gateway._results import Accepted, Delivery, Outcome
from services.gateway._settings import GatewaySettings
from services.gateway._store import PartnerAck, Published, Record, Store

log = get_logger(__name__)
# Reports per group (and per store transaction): a transaction's fixed cost is
# about 20 rows' worth (13.8 µs a row at 64, 11.2 at 256), and a batch of 1000
# still goes out in four groups.
_GROUP_SIZE = 256
_ROUTES_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Submission:
    """One report handed to the pipeline by a front door.

    ``data`` is a parsed JSON value (HTTP), a report model or a mapping (SDK),
    or the :class:`GatewayError` of an NDJSON line that did not parse.
    """

    data: Any
    idempotency_key: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """Where a message went and which partners acknowledged it."""

    accepted: Accepted
    acknowledgements: list[PartnerAck]
    awaiting: list[str]
    """Parties it was released to that have not acknowledged it yet."""


@dataclass(frozen=True, slots=True)
class _Prepared:
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


class _Group:
    """Reports sent together: one task produces them, waits for the acks, records them.

    One task per group rather than per report: at thousands of reports a
    second, a task, its wake-ups and a commit per report cost more than the
    rest of the pipeline's own work.
    """

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: list[_Prepared] = []
        self.task: asyncio.Task[list[Delivered]] | None = None

    def index_of(self, message_id: str) -> int:
        return next(i for i, p in enumerate(self.items) if p.sealed.message_id == message_id)


@dataclass(frozen=True, slots=True)
class _Placed:
    """A report placed in a group, to be settled from the group's results."""

    group: _Group
    index: int
    message_id: str


class _Waiting(Exception):  # noqa: N818  # control flow, not an error
    """The report refers to a message that is in flight right now: wait for it, then retry."""

    def __init__(self, group: _Group, message_id: str, *, reference: bool) -> None:
        self.group = group
        self.message_id = message_id
        self.reference = reference
        """True when the report corrects or cancels that message; False for a retry of it."""


class Pipeline:
    """Validates, routes, signs and publishes one agency's reports; remembers what it did."""

    def __init__(
        self,
        exchange: Exchange,
        agency: str,
        *,
        producer: AIOKafkaProducer,
        store: Store,
        metrics: Metrics,
        gateway: GatewaySettings,
    ) -> None:
        self.exchange = exchange
        self.agency = agency
        self.store = store
        self.metrics = metrics
        self._producer = producer
        self._sealer = exchange.sealer(agency)
        self._timeout = gateway.publish_timeout
        self._retry_after = gateway.retry_after
        self._window = gateway.idempotency_window
        # aiokafka gives up on a batch after the producer's request timeout (15 s),
        # so twice that covers every write still queued when trouble began.
        self._guard = LostTopicGuard(
            producer, suspect_for=30.0, check_every=gateway.broker_check_interval
        )
        self._routes: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._open: _Group | None = None
        self._by_id: dict[str, _Group] = {}
        self._by_key: dict[str, _Group] = {}
        self._closing = False

    @property
    def in_flight(self) -> int:
        """Reports sent and not yet acknowledged (or failed)."""
        return len(self._by_id)

    def start(self) -> None:
        """Start watching the broker for lost topics."""
        self._guard.start()

    async def publish(self, submission: Submission) -> Accepted:
        """Publish one report; returns once the broker acknowledged it.

        Raises:
            GatewayError: the report was refused, with the reason (see ``status``).
        """
        outcome = (await self.publish_many([submission]))[0]
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    async def publish_many(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Publish many reports; one outcome per submission, in order.

        Valid reports go to the broker in groups while the rest are checked, so
        an invalid one never holds the others back. A report that corrects or
        cancels one still in flight waits for it, so the original is on the bus
        first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        admitted: list[Outcome | _Placed] = []
        # Message ids of the next reports that the store does not hold: one query
        # for a group instead of one per report. Only trusted until the next await
        # (another task may record one meanwhile), so it is emptied then.
        unseen: set[str] = set()
        snapshot_end = 0
        for index, submission in enumerate(submissions):
            if index >= snapshot_end:
                snapshot_end = index + _GROUP_SIZE
                unseen = self._unseen(submissions[index:snapshot_end])
            checked = self._admit_now(submission, unseen)
            if checked is None:
                checked = await self._admit(submission, deadline, unseen)
            if not isinstance(checked, _Prepared):
                admitted.append(checked)
                continue
            group = self._open_group(loop)
            admitted.append(self._place(checked, group))
            if len(group.items) >= _GROUP_SIZE:
                self._launch(group)
                # Let the group go out while the rest is checked: the broker
                # works on it meanwhile.
                await asyncio.sleep(0)
                snapshot_end = index + 1
        await self._delivered_all({a.group for a in admitted if isinstance(a, _Placed)})
        outcomes = [self._settle(a) for a in admitted]
        self._count(submissions, outcomes)
        return outcomes

    async def _delivered_all(self, groups: set[_Group]) -> None:
        """Send the groups still open; wait (up to the timeout) until all are delivered."""
        if not groups:
            return
        # One turn of the loop, so that reports of concurrent requests placed
        # in the same turn join the open group before it leaves.
        await asyncio.sleep(0)
        for group in groups:
            self._launch(group)
        tasks = {g.task for g in groups if g.task is not None}
        await asyncio.wait(tasks, timeout=self._timeout)

    def _count(self, submissions: Sequence[Submission], outcomes: list[Outcome]) -> None:
        """Metrics and log lines for refused and replayed reports."""
        for submission, outcome in zip(submissions, outcomes, strict=True):
            if isinstance(outcome, GatewayError):
                self.metrics.rejected.labels(outcome.code).inc()
                log.info(
                    "report refused",
                    code=outcome.code,
                    detail=outcome.detail,
                    message_id=outcome.message_id,
                    trace_id=trace_id_of(submission.traceparent),
                )
            elif outcome.replayed:
                self.metrics.replayed.inc()

    def status(self, message_id: str) -> Status:
        """Where ``message_id`` went and who acknowledged it.

        Raises:
            NotFoundError: this agency published no such message through the gateway.
        """
        published = self.store.published(message_id)
        if published is None:
            raise NotFoundError(
                f"no message {message_id} was published by {self.agency} through this gateway",
                message_id=message_id,
            )
        acks = self.store.acknowledgements(message_id)
        acked = {a.party for a in acks}
        awaiting = [p for p in published.accepted.releasable_to if p not in acked]
        return Status(published.accepted, acks, awaiting)

    async def close(self, grace: float) -> None:
        """Take no new reports; wait up to ``grace`` s for those in flight."""
        self._closing = True
        pending = {g.task for g in self._by_id.values() if g.task is not None}
        if pending:
            log.info("waiting for reports in flight", groups=len(pending))
            _, late = await asyncio.wait(pending, timeout=grace)
            if late:
                log.warning(
                    "reports still unacknowledged at shutdown; the producer flushes them",
                    groups=len(late),
                )
        await self._guard.stop()

    def _unseen(self, submissions: Sequence[Submission]) -> set[str]:
        """The message ids the submissions name that the store does not hold (yet)."""
        named: list[str] = []
        if self._closing:
            return set()  # every one is refused; the store may be closed already
        for submission in submissions:
            data = submission.data
            if isinstance(data, Report):
                if "message_id" in data.header.model_fields_set:
                    named.append(str(data.header.message_id))
            elif isinstance(data, Mapping):
                header = data.get("header")
                message_id = header.get("message_id") if isinstance(header, Mapping) else None
                if isinstance(message_id, str):
                    named.append(message_id)
        if not named:
            return set()
        return set(named) - self.store.known(named)

    def _admit_now(self, submission: Submission, unseen: set[str]) -> Outcome | _Prepared | None:
        """:meth:`_admit` without a coroutine for the common case; None when it must wait."""
        if self._closing:
            return None
        try:
            return self._prepare(submission, unseen)
        except _Waiting:
            return None
        except GatewayError as error:
            return error

    async def _admit(
        self, submission: Submission, deadline: float, unseen: set[str]
    ) -> Outcome | _Prepared:
        """Check one report: ready to send, the first answer again, or why not.

        ``unseen`` holds message ids the store did not have just before; emptied
        here when this waits, since the store may have changed meanwhile.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._closing:
                return ShuttingDownError(
                    "the gateway is shutting down and takes no new reports",
                    self._retry_after,
                )
            try:
                prepared = self._prepare(submission, unseen)
            except _Waiting as waiting:
                unseen.clear()
                if waiting.group.task is None:
                    self._launch(waiting.group)  # the open group: send it now
                task = waiting.group.task
                assert task is not None
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait([task], timeout=remaining)
                if not task.done():
                    return self._unavailable(
                        None, f"a message it depends on is in flight, {_late(self._timeout)}"
                    )
                if waiting.reference and _failed(waiting.group, waiting.message_id):
                    return self._unavailable(
                        None,
                        f"the broker did not acknowledge {waiting.message_id}, which this "
                        "report corrects or cancels",
                    )
                continue
            except GatewayError as error:
                return error
            return prepared

    def _prepare(self, submission: Submission, unseen: set[str]) -> _Prepared | Accepted:
        data = submission.data
        if isinstance(data, GatewayError):
            raise data
        key = submission.idempotency_key
        if isinstance(data, Report):
            check_originator(data.header.originator, self.agency)
            named = key is not None or "message_id" in data.header.model_fields_set
            fingerprint = fingerprint_of(data) if named else ""
            report = with_defaults(data, self.exchange.agreement)
        else:
            if isinstance(data, Mapping) and not isinstance(data, dict):
                data = dict(data)
            report_type = report_type_of(data)
            header = data.get("header")
            if isinstance(header, dict):
                check_originator(header.get("originator"), self.agency)
            named = key is not None or (isinstance(header, dict) and "message_id" in header)
            fingerprint = fingerprint_of(data) if named else ""
            releasable_to = self._cancelled_releasability(report_type, data)
            report = validate(
                fill_header(data, self.agency, self.exchange.agreement, releasable_to)
            )
        message_id = str(report.header.message_id)
        # A message id the gateway made up just now cannot have been used before.
        replay = self._replay(message_id, key, fingerprint, unseen) if named else None
        if replay is not None:
            return replay
        topics, kafka_key = self._route(report)
        sealed = self._sealer.seal(report, key=kafka_key, traceparent=submission.traceparent)
        header = report.header
        return _Prepared(
            str(header.event_id), tuple(header.releasable_to), sealed, topics, fingerprint, key
        )

    def _cancelled_releasability(self, report_type: str, data: dict[str, Any]) -> list[str] | None:
        """The original's releasability, for a cancellation that leaves its own out.

        Raises:
            ReportRejectedError: the cancelled message is not one of this agency's; said
                here, or validation would only say that releasable_to is missing.
        """
        if report_type != Cancellation.report_type:
            return None
        header = data.get("header")
        if not isinstance(header, dict) or "releasable_to" in header:
            return None
        try:
            cancelled = str(uuid.UUID(data.get("cancelled_message_id")))
        except (TypeError, ValueError, AttributeError):
            return None  # validation names the field
        original = self._original(cancelled)
        if original is None:
            raise self._not_ours_to_cancel(cancelled)
        return list(original.releasable_to)

    def _replay(
        self, message_id: str, key: str | None, fingerprint: str, unseen: set[str]
    ) -> Accepted | None:
        """The first answer for a retry, or None for a new report.

        ``message_id`` in ``unseen``: the store did not have it a moment ago.

        Raises:
            IdempotencyConflictError: the id or key was used for a different request, or the
                message was accepted before the idempotency window.
            _Waiting: the first attempt is still in flight.
        """
        if key is not None:
            keyed = self._replay_key(key, fingerprint)
            if keyed is not None:
                return keyed
        if message_id in self._by_id:
            raise _Waiting(self._by_id[message_id], message_id, reference=False)
        if message_id in unseen:
            return None
        first = self.store.published(message_id)
        if first is None:
            return None
        if first.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                f"message id {message_id} was already used for a different report, accepted "
                f"at {first.accepted.accepted_at.isoformat()}; a new report needs a new id",
                [FieldIssue("header.message_id", "already used for a different report")],
                message_id=message_id,
            )
        if first.accepted.accepted_at < datetime.now(UTC) - self._window:
            raise IdempotencyConflictError(
                f"message {message_id} was accepted at {first.accepted.accepted_at.isoformat()}, "
                f"before the idempotency window ({self._window}); it is not written again",
                message_id=message_id,
            )
        return dataclasses.replace(first.accepted, replayed=True)

    def _replay_key(self, key: str, fingerprint: str) -> Accepted | None:
        """The first answer for a retry by Idempotency-Key, or None when the key is new."""
        if key in self._by_key:
            group = self._by_key[key]
            keyed = next(p for p in group.items if p.idempotency_key == key)
            raise _Waiting(group, keyed.sealed.message_id, reference=False)
        use = self.store.key_use(key, datetime.now(UTC) - self._window)
        if use is None:
            return None
        if use.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                f"Idempotency-Key {key!r} was already used for a different request "
                f"(message {use.message_id}); one key names one request",
                message_id=use.message_id,
            )
        first = self.store.published(use.message_id)
        return dataclasses.replace(first.accepted, replayed=True) if first is not None else None

    def _original(self, message_id: str) -> Accepted | None:
        """A message this agency published, for a correction or cancellation to follow."""
        if message_id in self._by_id:
            raise _Waiting(self._by_id[message_id], message_id, reference=True)
        published: Published | None = self.store.published(message_id)
        return published.accepted if published is not None else None

    def _route(self, report: Report) -> tuple[list[str], str]:
        """Topics and key: the agreement's, or the original's for corrections and cancellations."""
        header = report.header
        if isinstance(report, Cancellation):
            return self._follow_cancelled(report)
        topics = self._topics(report.report_type, tuple(header.releasable_to))
        originals = self._superseded(report)
        if not originals:
            return topics, report.subject
        return topics, self._follow_superseded(originals, topics)

    def _superseded(self, report: Report) -> list[Accepted]:
        """The messages ``report`` supersedes; each must be one this agency published."""
        originals: list[Accepted] = []
        issues: list[FieldIssue] = []
        for index, link in enumerate(report.header.links):
            if link.relation is not LinkRelation.SUPERSEDES:
                continue
            original = self._original(str(link.message_id))
            if original is None:
                issues.append(
                    FieldIssue(
                        f"header.links[{index}].message_id",
                        f"{link.message_id} is not a message {self.agency} published through "
                        "this gateway: only its originator may supersede a message, once it "
                        "was accepted",
                    ),
                )
            else:
                originals.append(original)
        if issues:
            raise ReportRejectedError("the report supersedes an unknown or foreign message", issues)
        return originals

    def _follow_superseded(self, originals: list[Accepted], topics: list[str]) -> str:
        """The originals' key, once the correction goes where they went."""
        keys = sorted({o.key for o in originals})
        if len(keys) > 1:
            raise ReportRejectedError(
                "the report supersedes messages with different keys",
                [
                    FieldIssue(
                        "header.links",
                        f"the superseded messages have keys {keys}; "
                        "a correction follows one original",
                    )
                ],
            )
        for original in originals:
            went = sorted(d.topic for d in original.deliveries)
            if went != sorted(topics):
                raise ReportRejectedError(
                    "a correction must go where its original went",
                    [
                        FieldIssue(
                            "header.releasable_to",
                            f"the original {original.message_id} went to {', '.join(went)}, "
                            f"this releasability routes to {', '.join(sorted(topics))}; a "
                            "correction stays with its original to stay in order with it "
                            "(cancel the original and publish a new report instead)",
                        ),
                    ],
                )
        return keys[0]

    def _topics(self, report_type: str, releasable_to: tuple[str, ...]) -> list[str]:
        """The agreement's topics for a report; remembered, since the agreement never changes."""
        route = (report_type, releasable_to)
        topics = self._routes.get(route)
        if topics is None:
            try:
                topics = self.exchange.router.topics_for(
                    report_type, self.agency, list(releasable_to)
                )
            except AgreementError as exc:
                raise ReportRejectedError(str(exc), [_issue_of(exc)]) from None
            if len(self._routes) < _ROUTES_REMEMBERED:
                self._routes[route] = topics
        return topics

    def _follow_cancelled(self, report: Cancellation) -> tuple[list[str], str]:
        cancelled = str(report.cancelled_message_id)
        original = self._original(cancelled)
        if original is None:
            raise self._not_ours_to_cancel(cancelled)
        if set(report.header.releasable_to) != set(original.releasable_to):
            raise ReportRejectedError(
                "a cancellation goes to everyone the original went to",
                [
                    FieldIssue(
                        "header.releasable_to",
                        f"the original was released to {', '.join(original.releasable_to)}; "
                        "leave releasable_to out or give the same parties",
                    ),
                ],
            )
        return [d.topic for d in original.deliveries], original.key

    def _not_ours_to_cancel(self, cancelled: str) -> ReportRejectedError:
        return ReportRejectedError(
            "the cancellation withdraws an unknown or foreign message",
            [
                FieldIssue(
                    "cancelled_message_id",
                    f"{cancelled} is not a message {self.agency} published through this "
                    "gateway: only its originator may cancel a message, once it was accepted",
                ),
            ],
        )

    def _open_group(self, loop: asyncio.AbstractEventLoop) -> _Group:
        """The group new reports join: shared by concurrent requests, sent at the next turn."""
        group = self._open
        if group is None or group.task is not None or len(group.items) >= _GROUP_SIZE:
            group = self._open = _Group()
            loop.call_soon(self._launch, group)
        return group

    def _place(self, prepared: _Prepared, group: _Group) -> _Placed:
        message_id = prepared.sealed.message_id
        group.items.append(prepared)
        self._by_id[message_id] = group
        if prepared.idempotency_key is not None:
            self._by_key[prepared.idempotency_key] = group
        return _Placed(group, len(group.items) - 1, message_id)

    def _launch(self, group: _Group) -> None:
        if group.task is not None or not group.items:
            return
        group.task = asyncio.create_task(self._deliver(group), name="deliver reports")
        self.metrics.in_flight.inc(len(group.items))
        group.task.add_done_callback(partial(self._delivered, group))

    def _delivered(self, group: _Group, task: asyncio.Task[list[Delivered]]) -> None:
        self.metrics.in_flight.dec(len(group.items))
        for prepared in group.items:
            if self._by_id.get(prepared.sealed.message_id) is group:
                del self._by_id[prepared.sealed.message_id]
            key = prepared.idempotency_key
            if key is not None and self._by_key.get(key) is group:
                del self._by_key[key]
        if not task.cancelled():
            task.exception()  # retrieved here: the answers say it

    async def _deliver(self, group: _Group) -> list[Delivered]:
        """Produce every report, wait for acks=all, record; runs on after a client gave up."""
        started = time.perf_counter()
        sent_at = time.monotonic()
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
        if any(isinstance(r, BaseException) for r in results):
            self._guard.trouble()
        if self._guard.suspect:
            results = await self._confirm(group, results, sent_at)
        return self._record(group, results, elapsed)

    async def _confirm(
        self, group: _Group, results: list[list[Any] | BaseException], sent_at: float
    ) -> list[list[Any] | BaseException]:
        """Acks from a broker that may have lost the topics: keep only the ones it kept."""
        confirmed: list[list[Any] | BaseException] = []
        for prepared, result in zip(group.items, results, strict=True):
            if isinstance(result, BaseException):
                confirmed.append(result)
                continue
            lost = await self._guard.lost(prepared.topics, sent_at)
            confirmed.append(
                LostWriteError(
                    f"the broker acknowledged the write to {', '.join(lost)} but does not "
                    "have the topic: it lost its data, nothing was kept"
                )
                if lost
                else result
            )
        return confirmed

    def _record(
        self, group: _Group, results: list[list[Any] | BaseException], elapsed: float
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
        self.store.record(records)
        if not records:
            return delivered
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

    def _settle(self, admitted: Outcome | _Placed) -> Outcome:
        if not isinstance(admitted, _Placed):
            return admitted
        task, message_id = admitted.group.task, admitted.message_id
        if task is None or not task.done():
            self._guard.trouble()
            return self._unavailable(message_id, _late(self._timeout))
        if task.cancelled():
            return self._unavailable(message_id, "its delivery was cancelled")
        failure = task.exception()
        if failure is not None:
            raise failure  # not the broker: a fault of the gateway itself
        result = task.result()[admitted.index]
        if isinstance(result, MessageSizeTooLargeError):
            return PayloadTooLargeError(
                f"the encoded report is larger than the broker accepts: {result}",
                message_id=message_id,
            )
        if isinstance(result, KafkaError):
            return self._unavailable(message_id, f"the broker refused or failed it: {result!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    def _unavailable(self, message_id: str | None, why: str) -> BrokerUnavailableError:
        retry = (
            f"; retry with the same message id ({message_id}) to get the outcome without "
            "writing it twice"
            if message_id is not None
            else "; retry later"
        )
        return BrokerUnavailableError(f"not accepted: {why}{retry}", self._retry_after, message_id)


def _late(timeout: float) -> str:
    return (
        f"the broker did not acknowledge it within {timeout:g} s (down or slow); it may still "
        "be written"
    )


def _failed(group: _Group, message_id: str) -> bool:
    task = group.task
    if task is None or task.cancelled() or task.exception() is not None:
        return True
    return isinstance(task.result()[group.index_of(message_id)], BaseException)


def _issue_of(error: AgreementError) -> FieldIssue:
    """A routing error as a field issue: its message starts with the field path."""
    return issue_from_message(str(error))
