"""Admission: may a report go out, and where to: idempotency, corrections, routing.

A report is validated and its header filled in; a retry (same message id, or
same Idempotency-Key) gets the first answer instead of a second write; a
correction or cancellation must name a message this agency published, and
goes where that original went, with its key, to stay in order with it; any
other report goes where the agreement routes it. What comes out is sealed
(encoded, signed) and handed to :mod:`._delivery`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.bus import (
    AgreementError,
    Cancellation,
    Exchange,
    FieldIssue,
    LinkRelation,
    Report,
    get_logger,
    issue_from_message,
)
from services.gateway._claims import ClaimCheck
from services.gateway._delivery import Group, GroupDelivery, Prepared
from services.gateway._errors import (
    GatewayError,
    IdempotencyConflictError,
    InternalError,
    ReportRejectedError,
)
from services.gateway._intake import (
    check_originator,
    fill_header,
    fingerprint_of,
    report_type_of,
    validate,
    with_defaults,
)
from services.gateway._message_ids import ForeignIds
from services.gateway._results import Accepted
from services.gateway._store import Published, Store

log = get_logger(__name__)
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


class Waiting(Exception):  # noqa: N818  # control flow, not an error
    """The report refers to a message that is in flight right now: wait for it, then retry."""

    def __init__(self, group: Group, message_id: str, *, reference: bool) -> None:
        self.group = group
        self.message_id = message_id
        self.reference = reference
        """True when the report corrects or cancels that message; False for a retry of it."""


class Admission:
    """Decides for one agency's reports: refused, the first answer again, or ready to send."""

    def __init__(
        self,
        exchange: Exchange,
        agency: str,
        *,
        store: Store,
        delivery: GroupDelivery,
        window: timedelta,
        claims: ClaimCheck | None = None,
    ) -> None:
        self.exchange = exchange
        self.agency = agency
        self.store = store
        self._delivery = delivery
        self._sealer = exchange.sealer(agency)
        self._window = window
        self._claims = claims
        self._foreign = ForeignIds()
        self._routes: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    def unseen(self, submissions: Sequence[Submission]) -> set[str]:
        """The message ids the submissions name that the store does not hold (yet)."""
        named: list[str] = []
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
        unseen = set(named) - self.store.known(named)
        self._foreign.look_up(self.store, unseen)
        return unseen

    def prepare(self, submission: Submission, unseen: set[str]) -> Prepared | Accepted:
        """Check one report: sealed and routed, ready to send, or the first answer again.

        ``unseen`` holds message ids the store did not have a moment ago.

        Raises:
            GatewayError: the report is refused, with the reason (an unforeseen
                failure is an :class:`InternalError` for this report alone, so a
                batch still answers for the reports already on the bus).
            Waiting: it depends on a message in flight (its original, or its first attempt).
        """
        try:
            return self._prepare(submission, unseen)
        except (GatewayError, Waiting):
            raise
        except Exception as exc:
            log.exception("checking a report failed")
            raise InternalError(
                f"the gateway failed to check this report ({type(exc).__name__}); it was not "
                "published"
            ) from exc

    def _prepare(self, submission: Submission, unseen: set[str]) -> Prepared | Accepted:
        data = submission.data
        if isinstance(data, GatewayError):
            raise data
        key = submission.idempotency_key
        if isinstance(data, Report):
            check_originator(data.header.originator, self.agency)
            chosen = "message_id" in data.header.model_fields_set
            named = key is not None or chosen
            fingerprint = fingerprint_of(data) if named else ""
            report = with_defaults(data, self.exchange.agreement)
        else:
            if isinstance(data, Mapping) and not isinstance(data, dict):
                data = dict(data)
            report_type = report_type_of(data)
            header = data.get("header")
            if isinstance(header, dict):
                check_originator(header.get("originator"), self.agency)
            chosen = isinstance(header, dict) and "message_id" in header
            named = key is not None or chosen
            fingerprint = fingerprint_of(data) if named else ""
            releasable_to = self._cancelled_releasability(report_type, data)
            report = validate(
                fill_header(data, self.agency, self.exchange.agreement, releasable_to)
            )
        message_id = str(report.header.message_id)
        # A message id the gateway made up just now cannot have been used before.
        replay = (
            self._replay(message_id, key, fingerprint, unseen, chosen=chosen) if named else None
        )
        if replay is not None:
            return replay
        if self._claims is not None:
            self._claims.check(report)
        topics, kafka_key = self._route(report)
        sealed = self._sealer.seal(report, key=kafka_key, traceparent=submission.traceparent)
        header = report.header
        return Prepared(
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
        self,
        message_id: str,
        key: str | None,
        fingerprint: str,
        unseen: set[str],
        *,
        chosen: bool,
    ) -> Accepted | None:
        """The first answer for a retry, or None for a new report.

        ``message_id`` in ``unseen``: the store did not have it a moment ago;
        ``chosen``: the client chose it (one the gateway made up is new anyway).

        Raises:
            IdempotencyConflictError: the id or key was used for a different request, or the
                message was accepted before the idempotency window; another party
                was seen using the id (:class:`MessageIdTakenError`).
            Waiting: the first attempt is still in flight.
        """
        if key is not None:
            keyed = self._replay_key(key, fingerprint)
            if keyed is not None:
                return keyed
        in_flight = self._delivery.group_of(message_id)
        if in_flight is not None:
            raise Waiting(in_flight, message_id, reference=False)
        first = None if message_id in unseen else self.store.published(message_id)
        if first is None:
            if chosen:
                self._foreign.refuse(self.store, message_id, self.agency, unseen)
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
        group = self._delivery.group_of_key(key)
        if group is not None:
            keyed = next(p for p in group.items if p.idempotency_key == key)
            raise Waiting(group, keyed.sealed.message_id, reference=False)
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
        in_flight = self._delivery.group_of(message_id)
        if in_flight is not None:
            raise Waiting(in_flight, message_id, reference=True)
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


def _issue_of(error: AgreementError) -> FieldIssue:
    """A routing error as a field issue: its message starts with the field path."""
    return issue_from_message(str(error))
