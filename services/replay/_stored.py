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
from services.replay._errors import SelectionError
from services.replay._kafka import ReadStats
from services.replay._record import Replayed, StoredFacts, open_replayed, raw_replayed
from services.replay._select import Selection


async def read_store(
    scan: RecordScan,
    exchange: Exchange,
    selection: Selection,
    *,
    checks: bool = True,
    raw: bool = False,
    stats: ReadStats | None = None,
    stop: asyncio.Event | None = None,
    epoch: int | None = None,
) -> AsyncGenerator[Replayed]:
    """The selected stored records in chain order (topic, partition, epoch, offset).

    ``epoch`` keeps one epoch of the partitions (e.g. the newest, to compare
    with the log the broker serves). ``raw``: neither decode nor verify again;
    the row's type, ids and recorded signature status are shown. Use with
    :func:`contextlib.aclosing`.

    Raises:
        SelectionError: ``raw`` with a filter on the report's content.
    """
    stats = stats if stats is not None else ReadStats()
    if raw and selection.needs_content:
        raise SelectionError(
            "--raw: the event id and mode filters need decoded reports; drop --raw"
        )
    wanted = selection.scan_filter(selection.topics)
    if epoch is not None:
        wanted = dataclasses.replace(wanted, epoch=epoch)
    opener = exchange.opener if checks else None
    codec = exchange.codec
    async for row in scan.records(wanted):
        stats.read += 1
        facts = StoredFacts.of(row)
        replayed = (
            raw_replayed("store", facts, epoch=row.epoch, stored=row)
            if raw
            else open_replayed(codec, opener, "store", facts, epoch=row.epoch, stored=row)
        )
        if selection.keeps(replayed):
            stats.kept += 1
            stats.undecodable += replayed.undecodable
            yield replayed
        if stop is not None and stop.is_set():
            return
