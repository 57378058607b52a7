"""The officers' side of the store: every list and detail the API serves, scoped by agency.

Every query names the session's agency (``agency = :agency``), and every
row is checked once more against its releasability before it is shown
(:func:`~services.liaison._handling.visible_to`): an officer of one agency
never sees another's data, whatever URL or filter is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from services.liaison._handling import visible_to
from services.liaison._models import (
    Acknowledgement,
    Alert,
    Change,
    DailySummary,
    DeadLetter,
    EventSummary,
    Figures,
    KafkaCoordinates,
    Link,
    Outgoing,
    Page,
    ReportDetail,
    ReportSummary,
    iso,
)
from services.liaison._store import LiaisonStore
from services.liaison._tables import (
    alerts,
    changes,
    cursors,
    events,
    links,
    messages,
    outbox,
    outgoing,
)

_M = messages.c
_E = events.c
_A = alerts.c
_L = links.c
_O = outbox.c
_G = outgoing.c
_C = changes.c
MAX_PAGE = 500
_IGNORED_IN_CHANGES = {
    "header.message_id",
    "header.created_at",
    "header.event_version",
    "header.links",
}
_REQUEST_TYPES = ("AssistanceRequest", "RequestForInformation")


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of the event list (each list matches any of its values)."""

    partners: Sequence[str] = ()
    types: Sequence[str] = ()
    impacts: Sequence[str] = ()
    sections: Sequence[str] = ()
    modes: Sequence[str] = ()
    status: str | None = None
    since: int | None = None
    until: int | None = None
    text: str | None = None
    cursor: int | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Filters of the report list; ``ascending`` pages forward from ``cursor`` (the feed)."""

    partners: Sequence[str] = ()
    types: Sequence[str] = ()
    impacts: Sequence[str] = ()
    sections: Sequence[str] = ()
    modes: Sequence[str] = ()
    since: int | None = None
    until: int | None = None
    text: str | None = None
    cursor: int | None = None
    limit: int = 50
    ascending: bool = False


@dataclass(slots=True)
class EventReports:
    """An event's rows, for its detail."""

    event: Any
    reports: list[Any]
    link_rows: list[Any]
    known: set[str]
    acknowledgements: list[Acknowledgement] = field(default_factory=list)
    responses: list[ReportSummary] = field(default_factory=list)
    answers: list[Outgoing] = field(default_factory=list)


def split_list(value: str | None) -> list[str]:
    """A stored comma-joined list (``,A,B,`` or ``A,B``) as a list."""
    return [v for v in (value or "").split(",") if v]


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def event_summary(row: Any, at: int) -> EventSummary:
    """An event row as the API shows it; ``at`` decides what is overdue."""
    return EventSummary.model_validate(event_fields(row, at))


def event_fields(row: Any, at: int) -> dict[str, Any]:
    """:func:`event_summary` as the plain fields its ``model_dump()`` gives.

    The live stream sends one per change: building and dumping the model
    cost it four times as much, for the same JSON (a test holds them equal).
    """
    request = None
    if row.request_kind is not None and row.due_at is not None:
        request = {
            "kind": row.request_kind,
            "due_at": iso(row.due_at) or "",
            "overdue": row.answered_at is None and row.status == "active" and row.due_at < at,
            "answered_at": iso(row.answered_at),
        }
    return {
        "originator": row.originator,
        "event_id": row.event_id,
        "report_type": row.report_type,
        "title": row.title,
        "status": row.status,
        "withdrawn_reason": row.withdrawn_reason,
        "mode": row.mode,
        "exercise": row.mode != "ACTUAL",
        "impact": row.impact,
        "tlp": row.tlp,
        "priority": row.priority,
        "border_sections": split_list(row.border_section),
        "releasable_to": split_list(row.releasable_to),
        "reports": row.reports,
        "versions": row.versions,
        "first_message_id": row.first_message_id,
        "current_message_id": row.current_message_id,
        "first_reported_at": iso(row.first_reported_at) or "",
        "last_reported_at": iso(row.last_reported_at) or "",
        "detected_at": iso(row.detected_at),
        "late": bool(row.late),
        "request": request,
        "seq": row.seq,
    }


def report_summary(row: Any) -> ReportSummary:
    """A message row as lists show it."""
    return ReportSummary.model_validate(report_fields(row))


def report_fields(row: Any) -> dict[str, Any]:
    """:func:`report_summary` as the plain fields its ``model_dump()`` gives.

    See :func:`event_fields`.
    """
    return {
        "originator": row.originator,
        "message_id": row.message_id,
        "event_id": row.event_id,
        "report_type": row.report_type,
        "title": row.title,
        "created_at": iso(row.created_at) or "",
        "received_at": iso(row.received_at) or "",
        "mode": row.mode,
        "exercise": row.mode != "ACTUAL",
        "tlp": row.tlp,
        "impact": row.impact,
        "priority": row.priority,
        "classification": row.classification,
        "handling": split_list(row.handling),
        "releasable_to": split_list(row.releasable_to),
        "border_sections": split_list(row.border_section),
        "signature": {"status": row.signature_status, "key_id": row.key_id},
        "superseded_by": row.superseded_by,
        "cancelled_by": row.cancelled_by,
        "seq": row.seq,
    }


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Fields that differ between two versions of a report (ids and times of the message aside)."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(before, "", old)
    _flatten(after, "", new)
    return [
        Change(path=path, before=old.get(path), after=new.get(path))
        for path in sorted(set(old) | set(new))
        if path not in _IGNORED_IN_CHANGES and old.get(path) != new.get(path)
    ]


def _ack_of_row(row: Any, acknowledged: str) -> Acknowledgement:
    content = orjson.loads(row.content)
    return Acknowledgement(
        direction="received",
        party=row.originator,
        status=str(content.get("status", "")),
        note=content.get("note"),
        acknowledged_message_id=acknowledged,
        message_id=row.message_id,
        at=iso(row.created_at) or "",
        officer=None,
    )


def _outgoing(row: Any) -> Outgoing:
    return Outgoing(
        message_id=row.message_id,
        report_type=row.report_type,
        target_originator=row.target_originator,
        target_message_id=row.target_message_id,
        officer=row.officer,
        status=row.status,
        created_at=iso(row.created_at) or "",
        accepted=orjson.loads(row.accepted),
    )


def _sent_ack(row: Any) -> Acknowledgement:
    return Acknowledgement(
        direction="sent",
        party=row.agency,
        status=row.status,
        note=None,
        acknowledged_message_id=row.target_message_id,
        message_id=row.message_id,
        at=iso(row.created_at) or "",
        officer=row.officer,
    )


class Views:
    """Read-only queries of one store, each scoped by the agency it is given."""

    def __init__(self, store: LiaisonStore) -> None:
        self.store = store

    async def events(self, agency: str, query: EventQuery, at: int) -> Page[EventSummary]:
        """A page of events, newest change first."""
        conditions: list[Any] = [_E.agency == agency]
        for column, values in (
            (_E.originator, query.partners),
            (_E.report_type, query.types),
            (_E.impact, query.impacts),
            (_E.mode, query.modes),
        ):
            if values:
                conditions.append(column.in_(list(values)))
        if query.sections:
            conditions.append(sa.or_(*[_E.border_section.like(f"%,{s},%") for s in query.sections]))
        if query.status:
            conditions.append(_E.status == query.status)
        if query.since is not None:
            conditions.append(_E.last_reported_at >= query.since)
        if query.until is not None:
            conditions.append(_E.last_reported_at < query.until)
        if query.text:
            conditions.append(_E.search.like(_like(query.text), escape="\\"))
        if query.cursor is not None:
            conditions.append(_E.seq < query.cursor)
        limit = max(1, min(query.limit, MAX_PAGE))
        statement = sa.select(events).where(*conditions).order_by(_E.seq.desc()).limit(limit + 1)
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            event_summary(r, at) for r in rows if visible_to(agency, split_list(r.releasable_to))
        ]
        return Page[EventSummary](
            items=items, next_cursor=str(rows[-1].seq) if more and rows else None
        )

    async def reports(self, agency: str, query: ReportQuery) -> Page[ReportSummary]:
        """A page of reports, by the order they were stored (newest first unless ascending)."""
        conditions: list[Any] = [_M.agency == agency]
        for column, values in (
            (_M.originator, query.partners),
            (_M.report_type, query.types),
            (_M.impact, query.impacts),
            (_M.mode, query.modes),
        ):
            if values:
                conditions.append(column.in_(list(values)))
        if query.sections:
            conditions.append(sa.or_(*[_M.border_section.like(f"%,{s},%") for s in query.sections]))
        if query.since is not None:
            conditions.append(_M.created_at >= query.since)
        if query.until is not None:
            conditions.append(_M.created_at < query.until)
        if query.text:
            conditions.append(sa.func.lower(_M.title).like(_like(query.text), escape="\\"))
        if query.cursor is not None:
            conditions.append(_M.seq > query.cursor if query.ascending else _M.seq < query.cursor)
        limit = max(1, min(query.limit, MAX_PAGE))
        order = _M.seq.asc() if query.ascending else _M.seq.desc()
        columns = [c for c in messages.columns if c.name != "content"]
        statement = sa.select(*columns).where(*conditions).order_by(order).limit(limit + 1)
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [report_summary(r) for r in rows if visible_to(agency, split_list(r.releasable_to))]
        return Page[ReportSummary](
            items=items, next_cursor=str(rows[-1].seq) if more and rows else None
        )

    async def event_row(self, agency: str, originator: str, event_id: str) -> Any:
        """The event's row, if this agency may see it."""
        async with self.store.reading() as connection:
            row = (
                await connection.execute(
                    sa.select(events).where(
                        _E.agency == agency, _E.originator == originator, _E.event_id == event_id
                    )
                )
            ).first()
        if row is None or not visible_to(agency, split_list(row.releasable_to)):
            return None
        return row

    async def event_reports(
        self, agency: str, originator: str, event_id: str
    ) -> EventReports | None:
        """The event, its reports in order, their links and what refers to them."""
        event = await self.event_row(agency, originator, event_id)
        if event is None:
            return None
        async with self.store.reading() as connection:
            reports = (
                await connection.execute(
                    sa.select(messages)
                    .where(
                        _M.agency == agency, _M.originator == originator, _M.event_id == event_id
                    )
                    .order_by(_M.seq)
                )
            ).all()
            reports = [r for r in reports if visible_to(agency, split_list(r.releasable_to))]
            ids = [r.message_id for r in reports]
            link_rows = (
                await connection.execute(
                    sa.select(links).where(
                        _L.agency == agency,
                        _L.originator == originator,
                        _L.message_id.in_(ids),
                    )
                )
            ).all()
            targets = sorted({row.target_id for row in link_rows})
            known = set()
            if targets:
                found = await connection.execute(
                    sa.select(_M.message_id).where(_M.agency == agency, _M.message_id.in_(targets))
                )
                known = {row.message_id for row in found}
            found_reports = EventReports(event, list(reports), list(link_rows), known)
            await self._referring(connection, agency, ids, found_reports)
        return found_reports

    async def _referring(
        self, connection: Any, agency: str, ids: list[str], into: EventReports
    ) -> None:
        """Acknowledgements, responses and answers that refer to ``ids``."""
        if not ids:
            return
        referring = (
            await connection.execute(
                sa.select(_L.originator, _L.message_id, _L.relation, _L.target_id).where(
                    _L.agency == agency,
                    _L.target_id.in_(ids),
                    _L.relation.in_(["ACKNOWLEDGES", "RESPONDS_TO"]),
                )
            )
        ).all()
        by_id: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in referring:
            by_id.setdefault((row.originator, row.message_id), []).append(
                (row.relation, row.target_id)
            )
        if by_id:
            rows = (
                await connection.execute(
                    sa.select(messages).where(
                        _M.agency == agency,
                        _M.message_id.in_(sorted({m for _, m in by_id})),
                    )
                )
            ).all()
            for row in sorted(rows, key=lambda r: r.seq):
                relations = by_id.get((row.originator, row.message_id))
                if not relations or not visible_to(agency, split_list(row.releasable_to)):
                    continue
                if row.report_type == "Acknowledgement":
                    target = next(t for _, t in relations)
                    into.acknowledgements.append(_ack_of_row(row, target))
                else:
                    into.responses.append(report_summary(row))
        sent = (
            await connection.execute(
                sa.select(outgoing)
                .where(_G.agency == agency, _G.target_message_id.in_(ids))
                .order_by(_G.created_at)
            )
        ).all()
        for row in sent:
            if row.report_type == "Acknowledgement":
                into.acknowledgements.append(_sent_ack(row))
            else:
                into.answers.append(_outgoing(row))

    async def report(self, agency: str, originator: str, message_id: str) -> Any:
        """One message row, if this agency may see it."""
        async with self.store.reading() as connection:
            row = (
                await connection.execute(
                    sa.select(messages).where(
                        _M.agency == agency,
                        _M.originator == originator,
                        _M.message_id == message_id,
                    )
                )
            ).first()
        if row is None or not visible_to(agency, split_list(row.releasable_to)):
            return None
        return row

    async def report_links(self, agency: str, originator: str, message_id: str) -> list[Link]:
        """A report's links, each saying whether the store holds its target."""
        async with self.store.reading() as connection:
            rows = (
                await connection.execute(
                    sa.select(_L.relation, _L.target_id).where(
                        _L.agency == agency,
                        _L.originator == originator,
                        _L.message_id == message_id,
                    )
                )
            ).all()
            targets = sorted({r.target_id for r in rows})
            known: set[str] = set()
            if targets:
                found = await connection.execute(
                    sa.select(_M.message_id).where(_M.agency == agency, _M.message_id.in_(targets))
                )
                known = {r.message_id for r in found}
        return [
            Link(relation=r.relation, message_id=r.target_id, known=r.target_id in known)
            for r in rows
        ]

    async def requests(self, agency: str, state: str, at: int) -> list[EventSummary]:
        """Requests to this agency (``open``, ``answered`` or ``all``), soonest due first."""
        conditions: list[Any] = [_E.agency == agency, _E.request_kind.is_not(None)]
        if state == "open":
            conditions += [_E.answered_at.is_(None), _E.status == "active"]
        elif state == "answered":
            conditions.append(_E.answered_at.is_not(None))
        statement = sa.select(events).where(*conditions).order_by(_E.due_at).limit(MAX_PAGE)
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            event_summary(r, at) for r in rows if visible_to(agency, split_list(r.releasable_to))
        ]

    async def replies(
        self, agency: str, message_id: str
    ) -> tuple[list[Acknowledgement], list[ReportSummary], list[Outgoing]]:
        """Acknowledgements and responses that refer to ``message_id`` (any originator's)."""
        into = EventReports(None, [], [], set())
        async with self.store.reading() as connection:
            await self._referring(connection, agency, [message_id], into)
        return into.acknowledgements, into.responses, into.answers

    async def summary(
        self, agency: str, since: int, until: int, partners: Sequence[str]
    ) -> list[DailySummary]:
        """Figures per partner and day from current SituationReports and IncidentReports."""
        conditions: list[Any] = [
            _M.agency == agency,
            _M.report_type.in_(["SituationReport", "IncidentReport"]),
            _M.superseded_by.is_(None),
            _M.cancelled_by.is_(None),
            _M.figures.is_not(None),
            # The figures' day (period start, detection) is before the report's creation.
            _M.created_at >= since,
        ]
        if partners:
            conditions.append(_M.originator.in_(list(partners)))
        statement = sa.select(
            _M.originator, _M.report_type, _M.mode, _M.figures, _M.releasable_to, _M.event_id
        ).where(*conditions)
        withdrawn_statement = sa.select(_E.originator, _E.event_id).where(
            _E.agency == agency, _E.status == "withdrawn"
        )
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
            withdrawn = {
                (r.originator, r.event_id) for r in await connection.execute(withdrawn_statement)
            }
        days: dict[tuple[str, int], dict[str, Any]] = {}
        for row in rows:
            if (row.originator, row.event_id) in withdrawn:
                continue
            if not visible_to(agency, split_list(row.releasable_to)):
                continue
            day, attempts, apprehensions, asylum, persons = (int(v) for v in row.figures.split(","))
            if not since <= day < until:
                continue
            entry = days.setdefault(
                (row.originator, day),
                {"SituationReport": None, "IncidentReport": None, "excluded": 0},
            )
            if row.mode != "ACTUAL":
                entry["excluded"] += 1
                continue
            figures = entry[row.report_type] or [0, 0, 0, 0, 0]
            figures[0] += 1
            figures[1] += attempts
            figures[2] += apprehensions
            figures[3] += asylum
            figures[4] += persons
            entry[row.report_type] = figures
        result = []
        for (partner, day), entry in sorted(
            days.items(), key=lambda item: (item[0][1], item[0][0])
        ):
            result.append(
                DailySummary(
                    partner=partner,
                    day=(iso(day) or "")[:10],
                    situation=_figures(entry["SituationReport"]),
                    incidents=_figures(entry["IncidentReport"]),
                    exercise_reports_excluded=entry["excluded"],
                )
            )
        return result

    async def alerts(self, agency: str, cursor: int | None, limit: int) -> Page[Alert]:
        """A page of alerts, newest first."""
        limit = max(1, min(limit, MAX_PAGE))
        conditions: list[Any] = [_A.agency == agency]
        if cursor is not None:
            conditions.append(_A.seq < cursor)
        statement = sa.select(alerts).where(*conditions).order_by(_A.seq.desc()).limit(limit + 1)
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page[Alert](
            items=[alert_of(r) for r in rows],
            next_cursor=str(rows[-1].seq) if more and rows else None,
        )

    async def alert(self, agency: str, alert_id: str) -> Alert | None:
        """One alert."""
        async with self.store.reading() as connection:
            row = (
                await connection.execute(
                    sa.select(alerts).where(_A.agency == agency, _A.alert_id == alert_id)
                )
            ).first()
        return None if row is None else alert_of(row)

    async def count_alerts(self, agency: str, kind: str | None = None) -> int:
        """How many alerts (of ``kind``) the store holds."""
        conditions: list[Any] = [_A.agency == agency]
        if kind is not None:
            conditions.append(_A.kind == kind)
        async with self.store.reading() as connection:
            value = (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(alerts).where(*conditions)
                )
            ).scalar()
        return int(value or 0)

    async def changes(self, agency: str, after: int, limit: int) -> list[Any]:
        """Change log entries after ``after``, in order."""
        statement = (
            sa.select(changes)
            .where(_C.agency == agency, _C.seq > after)
            .order_by(_C.seq)
            .limit(limit)
        )
        async with self.store.reading() as connection:
            return list((await connection.execute(statement)).all())

    async def last_seq(self, agency: str) -> int:
        """The change log's last seq (0 when empty)."""
        async with self.store.reading() as connection:
            value = (
                await connection.execute(
                    sa.select(cursors.c.last_seq).where(cursors.c.agency == agency)
                )
            ).scalar()
        return int(value or 0)

    async def deliveries(self, agency: str, status: str | None) -> list[DeadLetter]:
        """Webhook deliveries (``dead`` ones: the dead-letter list), newest first."""
        conditions: list[Any] = [_O.agency == agency]
        if status is not None:
            conditions.append(_O.status == status)
        statement = (
            sa.select(outbox).where(*conditions).order_by(_O.created_at.desc()).limit(MAX_PAGE)
        )
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            DeadLetter(
                delivery_id=r.delivery_id,
                endpoint=r.endpoint,
                originator=r.originator,
                message_id=r.message_id,
                status=r.status,
                attempts=r.attempts,
                last_error=r.last_error,
                created_at=iso(r.created_at) or "",
                next_attempt_at=iso(r.next_attempt_at) or "",
                delivered_at=iso(r.delivered_at),
            )
            for r in rows
        ]

    async def delivery_counts(self, agency: str) -> dict[tuple[str, str], int]:
        """Deliveries by (endpoint, status)."""
        statement = (
            sa.select(_O.endpoint, _O.status, sa.func.count())
            .where(_O.agency == agency)
            .group_by(_O.endpoint, _O.status)
        )
        async with self.store.reading() as connection:
            rows = (await connection.execute(statement)).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def message_count(self, agency: str) -> int:
        """Reports stored."""
        async with self.store.reading() as connection:
            value = (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(messages).where(_M.agency == agency)
                )
            ).scalar()
        return int(value or 0)


def _figures(values: list[int] | None) -> Figures | None:
    if values is None:
        return None
    reports, attempts, apprehensions, asylum, persons = values
    return Figures(
        reports=reports,
        attempts=attempts,
        apprehensions=apprehensions,
        asylum_requests=asylum,
        persons=persons,
    )


def alert_of(row: Any) -> Alert:
    """An alert row as the API shows it."""
    return Alert(
        alert_id=row.alert_id,
        seq=row.seq,
        kind=row.kind,
        detail=row.detail,
        at=iso(row.at) or "",
        topic=row.topic,
        partition=row.kafka_partition,
        epoch=row.epoch,
        offset=row.kafka_offset,
        message_id=row.message_id,
        originator=row.originator,
        report_type=row.report_type,
        signature_status=row.signature_status,
    )


def report_detail(row: Any, link_list: list[Link], changes_list: list[Change]) -> ReportDetail:
    """A message row with its content, links and the changes from the version before."""
    content = orjson.loads(row.content)
    location = content.get("location") or content.get("deployed_to")
    summary = report_summary(row)
    return ReportDetail(
        **summary.model_dump(),
        content=content,
        links=link_list,
        location=location,
        kafka=KafkaCoordinates(
            topic=row.topic, partition=row.kafka_partition, offset=row.kafka_offset, epoch=row.epoch
        ),
        changes=changes_list,
    )
