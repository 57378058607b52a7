"""The live stream: the change log, from a seq on, as server-sent events.

Each change is sent once, in seq order, with the current state of what it
concerns (the event, the report, the alert). A client that reconnects with
``Last-Event-ID`` gets every change after it: seq order is commit order
(see :mod:`._store`). New changes are noticed at once when this process
wrote them, and within ``OIX_LIAISON_STREAM_POLL_MS`` when another replica did.

The changes the consumer just committed come from the write path itself
(:class:`~services.liaison._signal.ChangeSignal`), each rendered once for
every stream: the state their batch committed, with no query. Anything else
(a client resuming further back, changes written another way) is read from
the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from services.liaison._handling import visible_to
from services.liaison._models import iso
from services.liaison._store import Logged, Row, now_ms
from services.liaison._tables import alerts, events, messages
from services.liaison._views import alert_of, event_fields, report_fields, split_list

if TYPE_CHECKING:
    from services.liaison._service import LiaisonService

_CHUNK = 200
_M = messages.c
_E = events.c
_A = alerts.c


async def stream_events(
    service: LiaisonService,
    agency: str,
    after: int,
    partners: Collection[str],
    types: Collection[str],
) -> AsyncIterator[str]:
    """Every change after ``after`` as SSE text, a chunk per read, until the service stops.

    One chunk holds every message of one read of the change log: one write
    to the connection for many changes.
    """
    signal = service.signal
    poll_s = service.liaison.stream_poll_ms / 1000
    read_foreign = -1  # the store is read first
    while not service.draining:
        generation = signal.generation
        recent = signal.since(after, _CHUNK)
        if recent:
            after = recent[-1].seq
            text = "".join(_pushed(entry, partners, types) for entry in recent)
        elif after >= signal.last_seq and read_foreign == signal.foreign:
            # Caught up with what was handed over, and nothing written another way since
            # the store was read: wait, and read the store again after a quiet poll.
            if not await signal.wait(poll_s, generation):
                read_foreign = -1
            continue
        else:
            read_foreign = signal.foreign
            before = after
            after, text = await _read(service, agency, after, partners, types)
            if after == before and not await signal.wait(poll_s, generation):
                read_foreign = -1
        if text:
            yield text


async def _read(
    service: LiaisonService,
    agency: str,
    after: int,
    partners: Collection[str],
    types: Collection[str],
) -> tuple[int, str]:
    """The changes after ``after`` read from the store: the last seq read, and their SSE text."""
    rows = await service.views.changes(agency, after, _CHUNK)
    if not rows:
        return after, ""
    found = await _load(service, agency, rows)
    chunk = []
    for row in rows:
        after = row.seq
        if partners and row.originator not in partners:
            continue
        if types and row.report_type not in types:
            continue
        data = _data(row, found)
        if data is not None:
            chunk.append(f"id: {row.seq}\nevent: {row.kind}\ndata: {data}\n\n")
    return after, "".join(chunk)


def _pushed(entry: Logged, partners: Collection[str], types: Collection[str]) -> str:
    """One committed change as SSE text for this stream's filters (rendered once for all)."""
    change = entry.change
    if partners and change["originator"] not in partners:
        return ""
    if types and change["report_type"] not in types:
        return ""
    if not entry.rendered:
        row = Row(change)
        data = _data(row, entry.rows.found)
        entry.text = None if data is None else f"id: {row.seq}\nevent: {row.kind}\ndata: {data}\n\n"
        entry.rendered = True
    return entry.text or ""


async def _load(service: LiaisonService, agency: str, rows: list[Any]) -> dict[str, Any]:
    event_keys = {(r.originator, r.event_id) for r in rows if r.event_id is not None}
    message_keys = {
        (r.originator, r.message_id)
        for r in rows
        if r.kind in {"report", "withdrawn", "acknowledgement"}
    }
    alert_ids = [r.alert_id for r in rows if r.alert_id is not None]
    found: dict[str, Any] = {"events": {}, "messages": {}, "alerts": {}}
    async with service.store.reading() as connection:
        if event_keys:
            result = await connection.execute(
                sa.select(events).where(
                    _E.agency == agency,
                    _E.event_id.in_(sorted({e for _, e in event_keys})),
                )
            )
            found["events"] = {(r.originator, r.event_id): r for r in result}
        if message_keys:
            columns = [c for c in messages.columns if c.name != "content"]
            result = await connection.execute(
                sa.select(*columns).where(
                    _M.agency == agency,
                    _M.message_id.in_(sorted({m for _, m in message_keys})),
                )
            )
            found["messages"] = {(r.originator, r.message_id): r for r in result}
        if alert_ids:
            result = await connection.execute(
                sa.select(alerts).where(_A.agency == agency, _A.alert_id.in_(alert_ids))
            )
            found["alerts"] = {r.alert_id: r for r in result}
    return found


def _data(row: Any, found: dict[str, Any]) -> str | None:
    at = now_ms()
    body: dict[str, Any] = {"seq": row.seq, "kind": row.kind, "at": iso(row.at)}
    event = found["events"].get((row.originator, row.event_id))
    if event is not None:
        if not visible_to(row.agency, split_list(event.releasable_to)):
            return None
        body["event"] = event_fields(event, at)
    message = found["messages"].get((row.originator, row.message_id))
    if message is not None:
        if not visible_to(row.agency, split_list(message.releasable_to)):
            return None
        body["report"] = report_fields(message)
    alert = found["alerts"].get(row.alert_id) if row.alert_id else None
    if alert is not None:
        body["alert"] = alert_of(alert).model_dump()
    if row.kind in {"acknowledged", "answered"}:
        body["target_message_id"] = row.message_id
    return orjson.dumps(body).decode()
