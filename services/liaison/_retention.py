"""Retention: stored reports past their retention are purged, once a minute.

Every stored report carries ``expires_at`` (its signed ``created_at`` plus its
header's ``retention_days``, or the agreement's default), indexed per agency.
:func:`retention_round` runs once a minute in every liaison service and
purges what is due, in one transaction per chunk under the agency's
change-log lock: the report's row, its links and its webhook deliveries go
(the payload holds the report); an event whose reports are all gone goes
too; one with reports left is re-pointed at its latest remaining report and
its search text is rebuilt from the remaining reports' titles (the purged
report's words must not stay searchable). Each purged report is a
``purged`` change (consoles drop it) and each round that purged something
one ``retention_purge`` alert saying how many.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.bus import get_logger, wait_set
from services.liaison._metrics import LiaisonMetrics
from services.liaison._store import LiaisonStore, now_ms
from services.liaison._tables import alerts, changes, events, links, messages, outbox

log = get_logger(__name__)
INTERVAL_S = 60.0
PURGE_CHUNK = 500
"""Reports purged per transaction."""

_M = messages.c
_E = events.c
_SEARCH_MAX = 8000


async def retention_round(
    store: LiaisonStore, agency: str, metrics: LiaisonMetrics, at: int | None = None
) -> int:
    """One pass of retention over ``agency``'s store (at ``at``, ms); returns how many it purged."""
    moment = now_ms() if at is None else at
    purged = 0
    while True:
        done = await purge_chunk(store, agency, moment, PURGE_CHUNK)
        purged += done
        if done < PURGE_CHUNK:
            break
    metrics.past_retention.set(await store.past_retention(agency, moment))
    if purged:
        log.info("liaison_purged", agency=agency, reports=purged)
    return purged


async def purge_chunk(store: LiaisonStore, agency: str, at: int, limit: int) -> int:
    """Purge up to ``limit`` of ``agency``'s reports whose ``expires_at`` is ``at`` or before."""
    async with store.writing(agency) as (connection, last):
        due = (
            await connection.execute(
                sa.select(_M.originator, _M.message_id, _M.event_id, _M.report_type)
                .where(_M.agency == agency, _M.expires_at <= at)
                .order_by(_M.expires_at, _M.seq)
                .limit(limit),
            )
        ).all()
        if not due:
            return 0
        for originator, message_id, _, _ in due:
            await _delete_message(connection, agency, originator, message_id)
        for originator, event_id in sorted({(r.originator, r.event_id) for r in due}):
            await _refold_event(connection, agency, originator, event_id)
        seq = last[0]
        rows: list[dict[str, Any]] = []
        for originator, message_id, event_id, report_type in due:
            seq += 1
            rows.append(
                _change(
                    agency,
                    seq,
                    "purged",
                    at,
                    originator=originator,
                    event_id=event_id,
                    message_id=message_id,
                    report_type=report_type,
                )
            )
        seq += 1
        alert_id = str(uuid.uuid4())
        await connection.execute(
            alerts.insert().values(
                agency=agency,
                alert_id=alert_id,
                seq=seq,
                kind="retention_purge",
                detail=f"{len(due)} report(s) past their retention purged",
                at=at,
            ),
        )
        rows.append(_change(agency, seq, "alert", at, alert_id=alert_id))
        await connection.execute(changes.insert(), rows)
        last[0] = seq
    return len(due)


def _change(
    agency: str,
    seq: int,
    kind: str,
    at: int,
    *,
    originator: str | None = None,
    event_id: str | None = None,
    message_id: str | None = None,
    report_type: str | None = None,
    alert_id: str | None = None,
) -> dict[str, Any]:
    return {
        "agency": agency,
        "seq": seq,
        "kind": kind,
        "originator": originator,
        "event_id": event_id,
        "message_id": message_id,
        "report_type": report_type,
        "alert_id": alert_id,
        "at": at,
    }


async def _delete_message(
    connection: AsyncConnection, agency: str, originator: str, message_id: str
) -> None:
    for table in (links, outbox, messages):
        c = table.c
        await connection.execute(
            sa.delete(table).where(
                c.agency == agency, c.originator == originator, c.message_id == message_id
            ),
        )


async def _refold_event(
    connection: AsyncConnection, agency: str, originator: str, event_id: str
) -> None:
    """Drop an event left without reports; re-point one that keeps some at what remains."""
    remaining = (
        await connection.execute(
            sa.select(_M.message_id, _M.report_type, _M.title, _M.created_at)
            .where(_M.agency == agency, _M.originator == originator, _M.event_id == event_id)
            .order_by(_M.seq),
        )
    ).all()
    where = (_E.agency == agency, _E.originator == originator, _E.event_id == event_id)
    if not remaining:
        await connection.execute(sa.delete(events).where(*where))
        return
    reports = [r for r in remaining if r.report_type != "Cancellation"] or list(remaining)
    current = reports[-1]
    search = " ".join(r.title for r in remaining).lower()[-_SEARCH_MAX:]
    await connection.execute(
        sa.update(events)
        .where(*where)
        .values(
            first_message_id=remaining[0].message_id,
            current_message_id=current.message_id,
            report_type=current.report_type,
            title=current.title,
            reports=len(remaining),
            first_reported_at=min(r.created_at for r in remaining),
            last_reported_at=max(r.created_at for r in remaining),
            search=search,
        ),
    )


async def run_retention(
    store: LiaisonStore, agency: str, metrics: LiaisonMetrics, stop: asyncio.Event
) -> None:
    """Run :func:`retention_round` every :data:`INTERVAL_S` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await retention_round(store, agency, metrics)
        except Exception:
            log.exception("retention round failed; trying again later")
        await wait_set(stop, INTERVAL_S)
