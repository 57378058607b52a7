"""Opening audited records (decode and verify), in worker processes by default.

The pool is the bus's :class:`~services.bus.OpenerPool`; what opening finds
for the audit is :func:`~services.audit._record.open_value` (a module-level
function, so worker processes find it by name).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.audit._record import AuditRecord, Headers, Opening, assemble, open_value
from services.bus import Admitted, Opener, OpenerPool, Settings

Raw = tuple[bytes | None, Headers]


class RecordOpener:
    """Opens admitted records off the event loop, keeping their order.

    With ``processes=0`` records are opened on one thread of this process
    (tests, small machines).
    """

    def __init__(self, settings: Settings, opener: Opener, processes: int) -> None:
        self.processes = processes
        self._pool = OpenerPool(settings, open_value, processes, opener)

    async def start(self) -> None:
        """Start the workers now rather than at the first record."""
        await self._pool.start()

    async def open(self, admitted: Sequence[Admitted]) -> list[AuditRecord]:
        """The records opened, in the order given."""
        if not admitted:
            return []
        openings = await self._pool.open([(r.value, tuple(r.headers)) for r, _ in admitted])
        return [
            assemble(record, epoch, opening)
            for (record, epoch), opening in zip(admitted, openings, strict=True)
        ]

    async def openings(self, raw: list[Raw]) -> list[Opening]:
        """What opening each (value, headers) finds, in the order given."""
        return await self._pool.open(raw)

    def close(self) -> None:
        """Stop the workers (after the work they hold)."""
        self._pool.close()
