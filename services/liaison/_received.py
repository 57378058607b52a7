"""What a liaison service learns from one Kafka record: pure, and never raising.

:func:`open_one` runs in worker processes (the bus's
:class:`~services.bus.OpenerPool`): it decodes and verifies the record and,
for a trusted report, derives everything the store and the API need (its
one-line title, search text, section, figures, deadlines) so the event loop
only folds reports into events and writes them. A record that cannot be
trusted, or whose content cannot be read, comes back as a :class:`Received`
without facts: an alert, never a report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from services.bus import H_MESSAGE_ID, H_ORIGINATOR, H_TYPE, Opener

Headers = tuple[tuple[str, bytes], ...]

_SEARCH_FIELDS = (
    "narrative",
    "summary",
    "justification",
    "question",
    "risk",
    "notes",
    "note",
    "conditions",
    "means_note",
    "reason_text",
    "recommended_actions",
    "coordinating_authority",
)
_SEARCH_MAX = 4000


class Figures(NamedTuple):
    """What a report adds to the daily summary of its partner."""

    day_ms: int
    attempts: int
    apprehensions: int
    asylum_requests: int
    persons: int


class Facts(NamedTuple):
    """A trusted report, as the store keeps it."""

    originator: str
    message_id: str
    event_id: str
    event_version: int
    report_type: str
    created_ms: int
    mode: str
    tlp: str
    impact: str | None
    priority: str
    classification: str
    handling: tuple[str, ...]
    releasable_to: tuple[str, ...]
    retention_days: int | None
    sections: tuple[str, ...]
    title: str
    search: str
    content: str
    links: tuple[tuple[str, str], ...]
    """(relation, message id) of every link, plus ACKNOWLEDGES / CANCELS for those types."""
    target_id: str | None
    """The message a Cancellation cancels or an Acknowledgement acknowledges."""
    detected_ms: int | None
    requested_from: tuple[str, ...]
    """Who a request asks: AssistanceRequest.requested_from, RequestForInformation.addressed_to."""
    deadline_ms: int | None
    figures: Figures | None


class Received(NamedTuple):
    """What opening one record found; ``facts`` only when it can be trusted and read."""

    signature_status: str
    problem: str
    key_id: str | None
    claimed_originator: str | None
    claimed_message_id: str | None
    claimed_type: str | None
    value_sha256: str
    facts: Facts | None

    @property
    def trusted(self) -> bool:
        """Decoded, read and signed by the originator it names."""
        return self.facts is not None


def _text(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode(errors="replace")


def open_one(opener: Opener, value: bytes | None, headers: Headers) -> Received:
    """Decode, verify and read one record (a module-level function: workers find it by name)."""
    opened = opener.open(value, headers)
    found = opened.headers
    key_id = _text(found, "oix-key-id")
    digest = hashlib.sha256(value or b"").hexdigest()
    base = Received(
        str(opened.verification.status),
        opened.problem,
        key_id,
        _text(found, H_ORIGINATOR),
        _text(found, H_MESSAGE_ID),
        _text(found, H_TYPE),
        digest,
        None,
    )
    if not opened.trusted or opened.decoded is None:
        return base
    try:
        facts = read_facts(opened.decoded.report_type, opened.decoded.record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return base._replace(problem=f"content cannot be read: {type(exc).__name__}: {exc}")
    return base._replace(facts=facts)


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _day(moment_ms: int) -> int:
    return moment_ms - moment_ms % 86_400_000


def _words(symbol: str) -> str:
    return symbol.replace("_", " ").lower()


def read_facts(report_type: str, record: dict[str, Any]) -> Facts:
    """Everything the liaison derives from a decoded report (Avro data, current schema)."""
    header = record["header"]
    links = [(str(link["relation"]), str(link["message_id"])) for link in header["links"]]
    target: str | None = None
    if report_type == "Cancellation":
        target = str(record["cancelled_message_id"])
        links.append(("CANCELS", target))
    elif report_type == "Acknowledgement":
        target = str(record["acknowledged_message_id"])
        links.append(("ACKNOWLEDGES", target))
    created = _ms(header["created_at"])
    assert created is not None
    requested: tuple[str, ...] = ()
    deadline: int | None = None
    if report_type == "AssistanceRequest":
        requested = tuple(record["requested_from"])
        deadline = _ms(record["needed_from"])
    elif report_type == "RequestForInformation":
        requested = (record["addressed_to"],)
        deadline = _ms(record["due_at"])
    detected = None
    if report_type == "IncidentReport":
        detected = _ms(record["detected_at"])
    elif report_type == "SeriousIncidentReport":
        detected = _ms(record["occurred_at"])
    title = describe(report_type, record)
    search_parts = [title, header.get("originating_unit") or "", header.get("purpose") or ""]
    search_parts += [str(record[f]) for f in _SEARCH_FIELDS if record.get(f)]
    location = record.get("location") or record.get("deployed_to")
    if location and location.get("description"):
        search_parts.append(location["description"])
    sections = _sections(report_type, record)
    search_parts += sections
    return Facts(
        originator=str(header["originator"]),
        message_id=str(header["message_id"]),
        event_id=str(header["event_id"]),
        event_version=int(header["event_version"]),
        report_type=report_type,
        created_ms=created,
        mode=str(header["mode"]),
        tlp=str(header["tlp"]),
        impact=None if header["impact"] is None else str(header["impact"]),
        priority=str(header["priority"]),
        classification=str(header["classification"]),
        handling=tuple(str(h) for h in header["handling"]),
        releasable_to=tuple(str(r) for r in header["releasable_to"]),
        retention_days=header["retention_days"],
        sections=tuple(sections),
        title=title,
        search=" ".join(search_parts).lower()[:_SEARCH_MAX],
        content=orjson.dumps({"type": report_type, **record}).decode(),
        links=tuple(links),
        target_id=target,
        detected_ms=detected,
        requested_from=requested,
        deadline_ms=deadline,
        figures=_figures(report_type, record),
    )


def _sections(report_type: str, record: dict[str, Any]) -> list[str]:
    if report_type == "SituationReport":
        return [s["border_section"] for s in record["sections"]]
    if report_type == "EarlyWarning":
        return list(record["affected_sections"])
    location = record.get("location") or record.get("deployed_to")
    return [location["border_section"]] if location else []


def _figures(report_type: str, record: dict[str, Any]) -> Figures | None:
    if report_type == "SituationReport":
        start = _ms(record["period_start"])
        assert start is not None
        sections = record["sections"]
        return Figures(
            _day(start),
            sum(s["attempts_prevented"] for s in sections),
            sum(s["apprehensions"] for s in sections),
            sum(s["asylum_requests"] for s in sections),
            0,
        )
    if report_type == "IncidentReport":
        detected = _ms(record["detected_at"])
        assert detected is not None
        persons = int(record["persons"]["total"])
        category = record["category"]
        actions = set(record["actions_taken"])
        return Figures(
            _day(detected),
            persons if category == "ILLEGAL_CROSSING_ATTEMPT" else 0,
            persons if category == "APPREHENSION" or "APPREHENDED" in actions else 0,
            persons
            if category == "ASYLUM_REQUEST_AT_BORDER" or "ASYLUM_PROCEDURE_STARTED" in actions
            else 0,
            persons,
        )
    return None


def _incident(record: dict[str, Any]) -> str:
    persons = record["persons"]["total"]
    section = record["location"]["border_section"]
    return f"{_words(record['category']).capitalize()}: {persons} persons at {section}"


def _serious(record: dict[str, Any]) -> str:
    return (
        f"Serious incident, {_words(record['category'])}, at "
        f"{record['location']['border_section']} ({_words(record['status'])})"
    )


def _situation(record: dict[str, Any]) -> str:
    sections = record["sections"]
    start = record["period_start"]
    day = start.strftime("%Y-%m-%d") if isinstance(start, datetime) else str(start)
    return (
        f"Situation {day}: {sum(s['attempts_prevented'] for s in sections)} attempts "
        f"prevented, {sum(s['apprehensions'] for s in sections)} apprehensions, "
        f"{sum(s['asylum_requests'] for s in sections)} asylum requests "
        f"({len(sections)} sections)"
    )


def _assistance(record: dict[str, Any]) -> str:
    most = record["officers_max"]
    officers = f"{record['officers_min']}-{most}" if most else f"{record['officers_min']}"
    return (
        f"Request for assistance to {', '.join(record['requested_from'])}: {officers} "
        f"officers at {record['location']['border_section']} ({_words(record['urgency'])})"
    )


_TITLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "IncidentReport": _incident,
    "SeriousIncidentReport": _serious,
    "SituationReport": _situation,
    "AssistanceRequest": _assistance,
    "AssistanceResponse": lambda r: (
        f"Answer to a request for assistance: {_words(r['decision'])}, "
        f"{r['officers_offered']} officers offered"
    ),
    "DeploymentNotice": lambda r: (
        f"Deployment of {r['officers']} officers to {r['host_agency']} "
        f"({r['deployed_to']['border_section']})"
    ),
    "EarlyWarning": lambda r: f"Early warning, {_words(r['risk_category'])}: {_clip(r['risk'])}",
    "RequestForInformation": lambda r: (
        f"Request for information to {r['addressed_to']}: {_clip(r['question'])}"
    ),
    "Acknowledgement": lambda r: (
        f"{_words(r['status']).capitalize()}: {r['acknowledged_message_id']}"
    ),
    "Cancellation": lambda r: f"Withdrawn ({_words(r['reason'])}): {r['cancelled_message_id']}",
}


def describe(report_type: str, record: dict[str, Any]) -> str:
    """One line an officer reads first."""
    title = _TITLES.get(report_type)
    return report_type if title is None else title(record)


def _clip(text: str, size: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= size else line[: size - 1] + "…"
