"""A wake-up call for the live streams and the webhook deliverer: the store has new changes."""

from __future__ import annotations

import asyncio
import contextlib


class ChangeSignal:
    """Wakes every waiter when :meth:`changed` is called (after a commit)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        """The store committed something new."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after ``timeout`` seconds (changes by other replicas)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
