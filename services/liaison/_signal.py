"""A wake-up call for the live streams and the webhook deliverer: the store has new changes.

The consumer's commits also hand over their changes with the rows they
concern (:class:`~services.liaison._store.Logged`): the streams send the
latest ones from here instead of reading them back from the store. Changes
written another way (an officer's acknowledgement, a dead letter, another
replica) are not here; a stream that meets the gap reads the store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from services.bus import wait_set
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
        self.generation = 0
        """Counts the calls of :meth:`changed`: a waiter that read it before looking for
        changes misses none that came meanwhile."""
        self.last_seq = 0
        """The last seq handed over with its change."""
        self.foreign = 0
        """Counts changes written another way (announced without them): read the store."""

    def changed(self, logged: Iterable[Logged] = ()) -> None:
        """The store committed something new (``logged``: those changes, in seq order)."""
        recent, order = self._recent, self._order
        handed = False
        for entry in logged:
            handed = True
            if self._keep:
                recent[entry.seq] = entry
                order.append(entry.seq)
            self.last_seq = max(self.last_seq, entry.seq)
        if not handed:
            self.foreign += 1
        while len(order) > self._keep:
            recent.pop(order.popleft(), None)
        self.generation += 1
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

    async def wait(self, timeout: float, seen: int | None = None) -> bool:
        """Return at the next change, or after ``timeout`` seconds (changes by other replicas).

        With ``seen`` (a :attr:`generation` read earlier), return at once if a change came
        since. True when woken by a change.
        """
        if seen is not None and seen != self.generation:
            return True
        return await wait_set(self._event, timeout)
