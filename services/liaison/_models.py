"""What the liaison API answers: pydantic models, so the OpenAPI document says it exactly.

Times are ISO 8601 in UTC. Every report and event says its ``mode``, and
``exercise`` is true for EXERCISE and TEST traffic, so no output can pass a
drill for a real event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


@lru_cache(maxsize=1024)
def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC (None stays None).

    Cached: a change on the live stream shows the same few times several times
    (created, first and last reported; received and the change's own time).
    """
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Signature(BaseModel):
    """How the report's signature verified (only ``valid`` reports are ever shown)."""

    status: str
    key_id: str | None


class Link(BaseModel):
    """A link from a report to an earlier message."""

    relation: str = Field(
        description="UPDATES, SUPERSEDES, RESPONDS_TO, RELATES_TO, CANCELS or ACKNOWLEDGES."
    )
    message_id: str
    known: bool = Field(description="Whether this store holds the message linked to.")


class KafkaCoordinates(BaseModel):
    """Where the report was read."""

    topic: str
    partition: int
    offset: int
    epoch: int


class Change(BaseModel):
    """One field that differs from the version before."""

    path: str
    before: Any = None
    after: Any = None


class ReportSummary(BaseModel):
    """One report (a message), as lists and the terminal feed show it."""

    originator: str
    message_id: str
    event_id: str
    report_type: str
    title: str
    created_at: str
    received_at: str
    mode: str
    exercise: bool
    tlp: str
    impact: str | None
    priority: str
    classification: str
    handling: list[str]
    releasable_to: list[str]
    border_sections: list[str]
    signature: Signature
    superseded_by: str | None
    cancelled_by: str | None
    seq: int = Field(description="Position in the change log when it was stored.")


class ReportDetail(ReportSummary):
    """One report with its content, links and coordinates."""

    content: dict[str, Any]
    links: list[Link]
    location: dict[str, Any] | None
    kafka: KafkaCoordinates
    changes: list[Change] = Field(
        description="Fields that differ from the report it supersedes (or the event's report "
        "before it of the same type)."
    )


class RequestInfo(BaseModel):
    """An open or answered request addressed to this agency."""

    kind: Literal["assistance", "information"]
    due_at: str
    overdue: bool
    answered_at: str | None


class EventSummary(BaseModel):
    """An event: the unit an officer sees, one line of the list."""

    originator: str
    event_id: str
    report_type: str
    title: str
    status: Literal["active", "withdrawn"]
    withdrawn_reason: str | None
    mode: str
    exercise: bool
    impact: str | None
    tlp: str
    priority: str
    border_sections: list[str]
    releasable_to: list[str]
    reports: int
    versions: int
    first_message_id: str
    current_message_id: str
    first_reported_at: str
    last_reported_at: str
    detected_at: str | None
    late: bool = Field(description="First reported more than 24 h after detection (EUROSUR).")
    request: RequestInfo | None
    seq: int = Field(description="The change log position of its last change.")


class Acknowledgement(BaseModel):
    """An acknowledgement of a report: received from a partner, or sent by an officer here."""

    direction: Literal["received", "sent"]
    party: str
    status: str
    note: str | None
    acknowledged_message_id: str
    message_id: str
    at: str
    officer: str | None


class Outgoing(BaseModel):
    """An acknowledgement or answer an officer published through the agency's gateway."""

    message_id: str
    report_type: str
    target_originator: str
    target_message_id: str
    officer: str
    status: str
    created_at: str
    accepted: dict[str, Any] = Field(description="The gateway's answer (topic, partition, …).")


class Capability(BaseModel):
    """Whether officers may do something here, and why not."""

    allowed: bool
    reason: str | None


class EventDetail(BaseModel):
    """An event with every report version, the changes between them, links and acknowledgements."""

    event: EventSummary
    reports: list[ReportDetail]
    acknowledgements: list[Acknowledgement]
    responses: list[ReportSummary] = Field(
        description="Reports (from any party) that respond to one of the event's reports."
    )
    answers: list[Outgoing] = Field(description="What officers here answered.")
    can_acknowledge: Capability
    can_answer: Capability


class Page(BaseModel, Generic[T]):
    """One page of a list; ask again with ``cursor=next_cursor`` for the next."""

    items: list[T]
    next_cursor: str | None


class Alert(BaseModel):
    """Something an officer must know that is not a report."""

    alert_id: str
    seq: int
    kind: str = Field(
        description="untrusted, not_released, duplicate_conflict, log_reset, offset_gap, "
        "offset_repeated or webhook_dead_letter."
    )
    detail: str
    at: str
    topic: str | None
    partition: int | None
    epoch: int | None
    offset: int | None
    message_id: str | None
    originator: str | None
    report_type: str | None
    signature_status: str | None


class Figures(BaseModel):
    """Figures from one kind of report."""

    reports: int
    attempts: int = Field(description="Crossing attempts (prevented, for situation reports).")
    apprehensions: int
    asylum_requests: int
    persons: int = Field(description="Persons in incidents (0 for situation reports).")


class DailySummary(BaseModel):
    """One partner's day, from its current (not superseded, not withdrawn) ACTUAL reports."""

    partner: str
    day: str
    situation: Figures | None = Field(
        description="From SituationReports whose period starts that day."
    )
    incidents: Figures | None = Field(description="From IncidentReports detected that day.")
    exercise_reports_excluded: int = Field(
        description="EXERCISE and TEST reports of that day, left out of the figures."
    )


class Replies(BaseModel):
    """What partners answered to a message of this agency (found by its id)."""

    message_id: str
    acknowledgements: list[Acknowledgement]
    responses: list[ReportSummary]
    answers_sent: list[Outgoing]
    gateway_status: dict[str, Any] | None = Field(
        description="The agency's gateway's status of the message, when it published it."
    )


class DeadLetter(BaseModel):
    """A webhook delivery that gave up (or is still being tried)."""

    delivery_id: str
    endpoint: str
    originator: str
    message_id: str
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    next_attempt_at: str
    delivered_at: str | None


class WebhookEndpoint(BaseModel):
    """A configured webhook (its secret is never shown)."""

    name: str
    url: str
    owner: str
    report_types: list[str]
    pending: int
    delivered: int
    dead: int


class PartitionState(BaseModel):
    """One followed partition."""

    topic: str
    partition: int
    epoch: int
    next_offset: int | None
    highwater: int | None
    lag: int | None
    stuck_ms: int
    epochs_started: int


class ServiceStatus(BaseModel):
    """How the service follows the bus."""

    agency: str
    group_id: str
    consuming: bool
    partitions: list[PartitionState]
    last_seq: int
    log_resets: int = Field(description="Times a broker log went backwards (broker reset).")
    alerts: int
    publishing: bool = Field(description="A gateway is configured for acks and answers.")


class SessionInfo(BaseModel):
    """Who is signed in."""

    agency: str
    officer: str
    via: Literal["cookie", "bearer"]
    expires_at: str
    csrf_token: str | None = Field(
        description="Send it as X-CSRF-Token with every state-changing request of a cookie session."
    )


class TokenInfo(BaseModel):
    """A bearer token for API clients (shown once)."""

    token: str
    agency: str
    officer: str
    expires_at: str


class Login(BaseModel):
    """An officer's credentials."""

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
