"""Retention: where purging stored reports past their retention plugs in.

Every stored report carries ``expires_at`` (its signed ``created_at`` plus its
header's ``retention_days``, or the agreement's default), indexed per agency.
:func:`retention_round` runs once a minute in every liaison service.
"""

from __future__ import annotations

import asyncio
import contextlib

from services.bus import get_logger
from services.liaison._metrics import LiaisonMetrics
from services.liaison._store import LiaisonStore, now_ms

log = get_logger(__name__)
INTERVAL_S = 60.0


async def retention_round(store: LiaisonStore, agency: str, metrics: LiaisonMetrics) -> int:
    """One pass of retention over ``agency``'s store; returns the reports past retention.

    RETENTION PLUGS IN HERE. Today it counts what is due
    (``oix_liaison_reports_past_retention``). The purge goes in this
    function: for rows of ``liaison_message`` with ``expires_at <= now``,
    delete them with their ``liaison_link`` rows and outbox deliveries
    (an event whose reports are all gone goes too; one with reports left
    keeps its row, its current report re-chosen), record the purge as an
    alert and a change (so consoles drop it), in one transaction per chunk.
    """
    due = await store.past_retention(agency, now_ms())
    metrics.past_retention.set(due)
    return due


async def run_retention(
    store: LiaisonStore, agency: str, metrics: LiaisonMetrics, stop: asyncio.Event
) -> None:
    """Run :func:`retention_round` every :data:`INTERVAL_S` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await retention_round(store, agency, metrics)
        except Exception:
            log.exception("retention round failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INTERVAL_S)
