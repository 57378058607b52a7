"""A wake-up call for the live streams and the webhook deliverer: the store has new changes.

The consumer's commits also hand over their changes with the rows they
concern (:class:`~services.liaison._store.Logged`): the streams send the
latest ones from here instead of reading them back from the store. Changes
written another way (an officer's acknowledgement, a dead letter, another
replica) are not here; a stream that meets the gap reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable

from services.liaison._store import Logged

KEEP = 4096
"""Changes kept for the streams: one that falls further behind reads the store."""


class ChangeSignal:
    """Wakes every waiter when :meth:`changed` is called (after a commit)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._event = asyncio.Event()
        self._keep = keep
        self._recent: dict[int, Logged] = {}
        self._order: deque[int] = deque()

    def changed(self, logged: Iterable[Logged] = ()) -> None:
        """The store committed something new (``logged``: those changes, in seq order)."""
        recent, order = self._recent, self._order
        for entry in logged:
            recent[entry.seq] = entry
            order.append(entry.seq)
        while len(order) > self._keep:
            recent.pop(order.popleft(), None)
        event, self._event = self._event, asyncio.Event()
        event.set()

    def since(self, after: int, limit: int) -> list[Logged]:
        """The changes right after ``after``, in order, up to the first one not kept here."""
        found: list[Logged] = []
        recent = self._recent
        seq = after + 1
        while len(found) < limit:
            entry = recent.get(seq)
            if entry is None:
                break
            found.append(entry)
            seq += 1
        return found

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after ``timeout`` seconds (changes by other replicas)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
