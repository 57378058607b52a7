"""How reports form events: the unit an officer sees. Pure: the store loads and saves the states.

An event is identified by (originator, event id). A report joins the event
its header names, or, when it supersedes or updates a report of the same
originator that is already known under another event, that report's event
(a partner that forgot to repeat the event id). Then:

- a report that **supersedes** one of the event's reports is a new version
  (``versions`` counts them); the report it replaces keeps its place in the
  history, marked ``superseded_by``;
- any other report (an **update**) extends the event's timeline;
- the latest report that is not a cancellation is the event's current one:
  it gives the event its title, type, impact, section, mode and TLP;
- a **cancellation** of the event's first report or of its current one
  withdraws the event; of another report, marks only that report cancelled;
- a request addressed to this agency (an AssistanceRequest naming it in
  ``requested_from``, a RequestForInformation ``addressed_to`` it) makes the
  event an open request with a due time, until an officer answers it;
- an incident first reported more than 24 h after its detection is late.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.liaison._handling import due_at, is_late
from services.liaison._received import Facts

ACTIVE = "active"
WITHDRAWN = "withdrawn"

REQUEST_KINDS = {"AssistanceRequest": "assistance", "RequestForInformation": "information"}


def joined(sections: tuple[str, ...]) -> str | None:
    """Sections as stored: ``,A,B,`` (a filter matches ``,A,``), or None without any."""
    return f",{','.join(sections)}," if sections else None


@dataclass(slots=True)
class EventState:
    """One event as the store keeps it (``liaison_event``)."""

    originator: str
    event_id: str
    seq: int
    first_seq: int
    report_type: str
    title: str
    status: str
    withdrawn_reason: str | None
    first_message_id: str
    current_message_id: str
    reports: int
    versions: int
    mode: str
    impact: str | None
    tlp: str
    priority: str
    border_section: str | None
    releasable_to: str
    first_reported_at: int
    last_reported_at: int
    detected_at: int | None
    late: bool
    request_kind: str | None
    due_at: int | None
    answered_at: int | None
    search: str
    stored: bool = True
    """False until the store has a row for it."""

    @property
    def key(self) -> tuple[str, str]:
        """(originator, event id)."""
        return (self.originator, self.event_id)


def _request(agency: str, facts: Facts) -> tuple[str | None, int | None]:
    kind = REQUEST_KINDS.get(facts.report_type)
    if kind is None or agency not in facts.requested_from:
        return None, None
    return kind, due_at(
        facts.priority,
        facts.created_ms,
        facts.deadline_ms,
        deadline_is_answer=facts.report_type == "RequestForInformation",
    )


def new_event(agency: str, event_id: str, facts: Facts) -> EventState:
    """The event a report opens."""
    kind, due = _request(agency, facts)
    cancelled = facts.report_type == "Cancellation"
    return EventState(
        originator=facts.originator,
        event_id=event_id,
        seq=0,
        first_seq=0,
        report_type=facts.report_type,
        title=facts.title,
        status=WITHDRAWN if cancelled else ACTIVE,
        withdrawn_reason=facts.title if cancelled else None,
        first_message_id=facts.message_id,
        current_message_id=facts.message_id,
        reports=1,
        versions=1,
        mode=facts.mode,
        impact=facts.impact,
        tlp=facts.tlp,
        priority=facts.priority,
        border_section=joined(facts.sections),
        releasable_to=",".join(facts.releasable_to),
        first_reported_at=facts.created_ms,
        last_reported_at=facts.created_ms,
        detected_at=facts.detected_ms,
        late=is_late(facts.created_ms, facts.detected_ms),
        request_kind=kind,
        due_at=due,
        answered_at=None,
        search=facts.search,
        stored=False,
    )


def add_report(agency: str, event: EventState, facts: Facts, *, supersedes: bool) -> None:
    """``facts`` joins ``event``: a new version when it supersedes one of its reports."""
    event.reports += 1
    if supersedes:
        event.versions += 1
    event.last_reported_at = max(event.last_reported_at, facts.created_ms)
    event.search = f"{event.search} {facts.search}"[-8000:]
    if facts.report_type == "Cancellation":
        return
    event.current_message_id = facts.message_id
    event.report_type = facts.report_type
    event.title = facts.title
    event.mode = facts.mode
    event.impact = facts.impact
    event.tlp = facts.tlp
    event.priority = facts.priority
    event.border_section = joined(facts.sections)
    event.releasable_to = ",".join(facts.releasable_to)
    if facts.detected_ms is not None and event.detected_at is None:
        event.detected_at = facts.detected_ms
        event.late = is_late(event.first_reported_at, facts.detected_ms)
    kind, due = _request(agency, facts)
    if kind is not None and supersedes:
        # A corrected request: its deadline is the correction's.
        event.request_kind, event.due_at = kind, due


def cancel(event: EventState, cancelled_message_id: str, cancellation: Facts) -> bool:
    """A cancellation of one of ``event``'s reports; True when it withdraws the event."""
    if cancelled_message_id in {event.first_message_id, event.current_message_id}:
        event.status = WITHDRAWN
        event.withdrawn_reason = cancellation.title
        return True
    return False
