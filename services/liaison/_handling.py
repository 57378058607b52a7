"""The rules a liaison service applies to every report: pure functions, no I/O.

- **Releasability, again** (:func:`release_problem`): the gateway routes a
  report only to the parties its ``releasable_to`` names, and Kafka ACLs keep
  other parties off a topic; the liaison checks once more, on every record,
  that the report names this agency and came on a topic that may carry it
  to this agency. A record that fails is never shown: it becomes a
  ``not_released`` alert (a policy violation) and is counted.
- **Who sees a report** (:func:`visible_to`): only officers of an agency named
  in ``releasable_to``; TLP:RED is for the named recipients only, which is
  the same rule, applied again at every query.
- **Onward delivery** (:func:`webhook_refusal`): what a webhook may forward to
  an agency system, by TLP and handling code (see ``docs/liaison.md``).
- **Due times** (:func:`due_at`): SIENA-style answer times by priority, or
  the request's own deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.bus import Agreement, TopicInfo, TopicKind

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

ANSWER_WITHIN_MS = {
    "FLASH": 8 * HOUR_MS,
    "IMMEDIATE": 8 * HOUR_MS,
    "PRIORITY": 3 * DAY_MS,
    "ROUTINE": 7 * DAY_MS,
}
"""How long a partner has to answer a request, by its handling priority (SIENA-style)."""

LATE_AFTER_MS = DAY_MS
"""An incident first reported more than this after its detection is late (EUROSUR)."""

FOLLOWS_ORIGINAL = frozenset({"Cancellation"})


def release_problem(
    agreement: Agreement,
    *,
    agency: str,
    topic: TopicInfo | None,
    originator: str,
    report_type: str,
    releasable_to: Sequence[str],
) -> str:
    """Why this report must not be shown to ``agency``'s officers; an empty string if it may.

    ``originator`` is the proven one (a valid signature); ``topic`` what the
    topic's name says.
    """
    if agency not in releasable_to:
        return (
            f"releasable_to names {', '.join(releasable_to) or 'nobody'}, not {agency}: "
            "the report was not released to this agency"
        )
    if topic is None or topic.kind is TopicKind.QUARANTINE:
        return "the record came on a topic that is not a feed or a bilateral channel"
    if topic.originator != originator:
        return (
            f"the record came on {topic.originator}'s topic but is signed by {originator}: "
            "only a party's own topics carry its reports"
        )
    if topic.kind is TopicKind.DIRECT:
        if topic.recipient != agency:
            return f"the record came on the bilateral channel to {topic.recipient}"
        return ""
    feed = topic.feed or ""
    if feed not in agreement.feeds:
        return f"the record came on feed {feed!r}, which the agreement does not have"
    if (
        report_type not in FOLLOWS_ORIGINAL
        and report_type not in agreement.feeds[feed].report_types
    ):
        return f"{report_type} is not carried by feed {feed!r}"
    if agency not in agreement.readers(originator, feed):
        return f"the agreement does not release {originator}'s {feed!r} feed to {agency}"
    return ""


def visible_to(agency: str, releasable_to: Sequence[str]) -> bool:
    """Whether officers of ``agency`` may see a report released to ``releasable_to``.

    Only the named recipients' officers see a report, whatever its TLP; for
    TLP:RED that is the marking's own rule.
    """
    return agency in releasable_to


def webhook_refusal(
    *,
    agency: str,
    owner: str,
    tlp: str,
    handling: Sequence[str],
    releasable_to: Sequence[str],
) -> str:
    """Why a report must not be forwarded to a webhook of ``owner``'s system; empty if it may.

    ``owner`` is the organisation the receiving system belongs to: the agency
    itself for its own systems, another code for a system outside it.

    - TLP:RED is for the named recipients' people only: never to a system.
    - TLP:AMBER+STRICT and AMBER stay within the recipient organisation (for
      AMBER, its need-to-know clients are people, not other systems): only
      the agency's own systems.
    - NO_ONWARD forbids dissemination beyond the parties the report names:
      only to a system of an organisation in ``releasable_to``.
    - GREEN and CLEAR go to any configured system, subject to NO_ONWARD.
    """
    if tlp == "RED":
        return "TLP:RED is for the named recipients' officers only, never forwarded to a system"
    if tlp in {"AMBER", "AMBER_STRICT"} and owner != agency:
        return f"TLP:{tlp} stays within {agency}; this system belongs to {owner}"
    if "NO_ONWARD" in handling and owner not in releasable_to:
        return (
            f"handling NO_ONWARD: {owner} is not named in releasable_to "
            f"({', '.join(releasable_to)})"
        )
    return ""


def due_at(
    priority: str, created_ms: int, deadline_ms: int | None, *, deadline_is_answer: bool
) -> int:
    """When an answer to a request is due.

    ``deadline_is_answer``: the request's own deadline is the answer's
    (a request for information's ``due_at``), and wins. Otherwise (a request
    for assistance's ``needed_from``) the earlier of the priority's answer
    time and the deadline: an answer after the help is needed is too late.
    """
    by_priority = created_ms + ANSWER_WITHIN_MS.get(priority, ANSWER_WITHIN_MS["ROUTINE"])
    if deadline_ms is None:
        return by_priority
    if deadline_is_answer:
        return deadline_ms
    return min(by_priority, deadline_ms)


def is_late(created_ms: int, detected_ms: int | None) -> bool:
    """Whether an incident first reported at ``created_ms`` came too long after its detection."""
    return detected_ms is not None and created_ms - detected_ms > LATE_AFTER_MS
