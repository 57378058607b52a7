"""The one publish pipeline behind both front doors (HTTP and the SDK).

validate → fill the header → idempotency → route (corrections and
cancellations follow their original) → seal (encode, sign) → produce with
acks=all → record → answer. A report is accepted only once the broker has
acknowledged it and the gateway has recorded it; anything else is an answer
that says why, never a silent loss.

Two halves: :mod:`._admission` decides whether and where a report goes (the
first three steps and the routing); :mod:`._delivery` sends admitted reports
in groups, records and settles them. The pipeline runs a request's reports
through both, and makes a report wait for a message it depends on while that
one is in flight.

A retry of a message whose stored coordinates are stale (a finding says the
broker lost it, or they belong to an earlier broker epoch: the log they name
was replaced) is published again, and answered with its new coordinates
(``replayed`` false), never with coordinates that name another record or none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from services.bus import Exchange, Settings, get_logger, trace_id_of
from services.gateway._admission import Admission, Submission, Waiting
from services.gateway._claims import claim_check
from services.gateway._delivery import GROUP_SIZE, GroupDelivery, Placed, Prepared, late
from services.gateway._errors import GatewayError, NotFoundError, ShuttingDownError
from services.gateway._metrics import Metrics
from services.gateway._results import Accepted, Outcome
from services.gateway._settings import GatewaySettings
from services.gateway._store import PartnerAck, Store

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Status:
    """Where a message went and which partners acknowledged it."""

    accepted: Accepted
    acknowledgements: list[PartnerAck]
    awaiting: list[str]
    """Parties it was released to that have not acknowledged it yet."""


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
        settings: Settings,
        bootstrap: str | None,
    ) -> None:
        self.exchange = exchange
        self.agency = agency
        self.store = store
        self.metrics = metrics
        self._timeout = gateway.publish_timeout
        self._retry_after = gateway.retry_after
        self._delivery = GroupDelivery(
            producer,
            store,
            metrics,
            timeout=gateway.publish_timeout,
            retry_after=gateway.retry_after,
            broker_check_interval=gateway.broker_check_interval,
            settings=settings,
            bootstrap=bootstrap,
            recreate_topics=gateway.recreate_topics,
        )
        self._admission = Admission(
            exchange,
            agency,
            store=store,
            delivery=self._delivery,
            window=gateway.idempotency_window,
            claims=claim_check(exchange.agreement, gateway),
        )
        self._closing = False

    @property
    def in_flight(self) -> int:
        """Reports sent and not yet acknowledged (or failed)."""
        return self._delivery.in_flight

    async def start(self) -> None:
        """Verify the broker (reports are answered 503 until it is), then watch it."""
        await self._delivery.start()

    @property
    def broker_problem(self) -> str | None:
        """Why reports are answered 503 right now (the broker is not verified), or None."""
        return self._delivery.gate.problem

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
        delivery = self._delivery
        admitted: list[Outcome | Placed] = []
        # Message ids of the next reports that the store does not hold: one query
        # for a group instead of one per report. Only trusted until the next await
        # (another task may record one meanwhile), so it is emptied then.
        unseen: set[str] = set()
        snapshot_end = 0
        for index, submission in enumerate(submissions):
            if index >= snapshot_end:
                snapshot_end = index + GROUP_SIZE
                unseen = self._unseen(submissions[index:snapshot_end])
            checked = self._admit_now(submission, unseen)
            if checked is None:
                checked = await self._admit(submission, deadline, unseen)
            if not isinstance(checked, Prepared):
                admitted.append(checked)
                continue
            group = delivery.open_group(loop)
            admitted.append(delivery.place(checked, group))
            if len(group.items) >= GROUP_SIZE:
                delivery.launch(group)
                # Let the group go out while the rest is checked: the broker
                # works on it meanwhile.
                await asyncio.sleep(0)
                snapshot_end = index + 1
        await delivery.delivered_all({a.group for a in admitted if isinstance(a, Placed)})
        outcomes = [delivery.settle(a) if isinstance(a, Placed) else a for a in admitted]
        self._count(submissions, outcomes)
        return outcomes

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
        released = published.accepted.releasable_to
        # Only recipients' acknowledgements count (the reader records no others now;
        # a store written before it did may hold some).
        acks = [a for a in self.store.acknowledgements(message_id) if a.party in released]
        acked = {a.party for a in acks}
        awaiting = [p for p in released if p not in acked]
        return Status(published.accepted, acks, awaiting)

    async def close(self, grace: float) -> None:
        """Take no new reports; wait up to ``grace`` s for those in flight."""
        self._closing = True
        await self._delivery.close(grace)

    def _unseen(self, submissions: Sequence[Submission]) -> set[str]:
        if self._closing:
            return set()  # every one is refused; the store may be closed already
        return self._admission.unseen(submissions)

    def _admit_now(self, submission: Submission, unseen: set[str]) -> Outcome | Prepared | None:
        """:meth:`_admit` without a coroutine for the common case; None when it must wait."""
        if self._closing:
            return None
        try:
            return self._fresh(submission, self._admission.prepare(submission, unseen), unseen)
        except Waiting:
            return None
        except GatewayError as error:
            return error

    def _fresh(
        self, submission: Submission, checked: Prepared | Accepted, unseen: set[str]
    ) -> Prepared | Accepted:
        """``checked``, unless it is a first answer whose coordinates are stale: then re-sealed.

        Raises:
            GatewayError, Waiting: as :meth:`Admission.prepare`.
        """
        if not isinstance(checked, Accepted) or not checked.replayed:
            return checked
        stored = self.store.published(checked.message_id)
        current = self.store.broker_epoch().epoch
        if stored is None or not (stored.lost or stored.broker_epoch < current):
            return checked
        why = (
            "a finding says the broker lost it"
            if stored.lost
            else f"its coordinates belong to broker epoch {stored.broker_epoch}, the broker's "
            f"log was replaced since (epoch {current})"
        )
        log.warning(
            "publishing a retried report again: its first write is gone",
            message_id=checked.message_id,
            why=why,
            first=[[d.topic, d.partition, d.offset] for d in checked.deliveries],
        )
        self.metrics.republished.inc()
        if submission.idempotency_key is not None:
            self.store.release_key(submission.idempotency_key, checked.message_id)
        return self._admission.prepare(submission, {*unseen, checked.message_id})

    async def _admit(
        self, submission: Submission, deadline: float, unseen: set[str]
    ) -> Outcome | Prepared:
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
                prepared = self._fresh(
                    submission, self._admission.prepare(submission, unseen), unseen
                )
            except Waiting as waiting:
                unseen.clear()
                if waiting.group.task is None:
                    self._delivery.launch(waiting.group)  # the open group: send it now
                task = waiting.group.task
                assert task is not None
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait([task], timeout=remaining)
                if not task.done():
                    return self._delivery.unavailable(
                        None, f"a message it depends on is in flight, {late(self._timeout)}"
                    )
                if waiting.reference and waiting.group.failed(waiting.message_id):
                    return self._delivery.unavailable(
                        None,
                        f"the broker did not acknowledge {waiting.message_id}, which this "
                        "report corrects or cancels",
                    )
                continue
            except GatewayError as error:
                return error
            return prepared
