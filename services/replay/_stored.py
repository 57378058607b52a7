"""Reading history from the audit store: the same selection, streamed page by page.

Every stored value is decoded again with today's released schemas (the
bytes are exactly those that were on the wire), and with checks its
signature is verified again with the agreement's keys in force; without
checks the status the audit consumer found when it stored the record is
shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator

from services.audit import RecordScan
from services.bus import Exchange
from services.replay._kafka import ReadStats
from services.replay._record import Replayed, StoredFacts, open_replayed
from services.replay._select import Selection


async def read_store(
    scan: RecordScan,
    exchange: Exchange,
    selection: Selection,
    *,
    checks: bool = True,
    stats: ReadStats | None = None,
    stop: asyncio.Event | None = None,
    epoch: int | None = None,
) -> AsyncGenerator[Replayed]:
    """The selected stored records in chain order (topic, partition, epoch, offset).

    ``epoch`` keeps one epoch of the partitions (e.g. the newest, to compare
    with the log the broker serves). Use with :func:`contextlib.aclosing`.
    """
    stats = stats if stats is not None else ReadStats()
    wanted = selection.scan_filter(selection.topics)
    if epoch is not None:
        wanted = dataclasses.replace(wanted, epoch=epoch)
    opener = exchange.opener if checks else None
    codec = exchange.codec
    async for row in scan.records(wanted):
        stats.read += 1
        replayed = open_replayed(
            codec, opener, "store", StoredFacts.of(row), epoch=row.epoch, stored=row
        )
        if selection.keeps(replayed):
            stats.kept += 1
            stats.undecodable += replayed.report is None
            yield replayed
        if stop is not None and stop.is_set():
            return
