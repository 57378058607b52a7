"""The gateway forgets idempotency keys once their window has passed, while it runs.

A key older than ``OIX_GATEWAY_IDEMPOTENCY_WINDOW`` no longer replays
anything (``Store.key_use`` ignores it), so keeping it is keeping data for
nothing: the store drops them at start and this task again every
:data:`FORGET_EVERY_S` seconds (at most once per window), so a gateway that
runs for months holds a day of keys, not months. The published reports'
rows hold no report content (ids, type, key, coordinates, releasability):
they stay so that a known message id is never written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.bus import get_logger, wait_set
from services.gateway._store import Store

log = get_logger(__name__)
FORGET_EVERY_S = 3600.0


class KeyForgetter:
    """Drops expired idempotency keys from ``store`` periodically, until stopped."""

    def __init__(
        self,
        store: Store,
        window: timedelta,
        *,
        every_s: float = FORGET_EVERY_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.window = window
        self.every_s = min(every_s, max(window.total_seconds(), 0.01))
        self.clock = clock
        self.forgotten = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin forgetting in the background."""
        self._task = asyncio.create_task(self._run(), name="forget idempotency keys")

    async def stop(self) -> None:
        """Stop (after the round in progress)."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def forget_once(self) -> int:
        """Drop the keys older than the window now; returns how many."""
        dropped = self.store.forget_keys_before(self.clock() - self.window)
        self.forgotten += dropped
        return dropped

    async def _run(self) -> None:
        while not self._stop.is_set():
            await wait_set(self._stop, self.every_s)
            if self._stop.is_set():
                return
            try:
                dropped = self.forget_once()
            except Exception:  # a locked file: the next round tries again
                log.exception("forgetting expired idempotency keys failed")
                continue
            if dropped:
                log.info("idempotency keys forgotten", keys=dropped)
