"""The consume loop: fetch, open, batch and write, each stage working while the others do.

Three stages, in the spirit of FastStream's split of fetching, the consume
loop and consuming one message, and of aiokafka's producer, where an
accumulator fills batches that a sender drains:

- **fetch** (:meth:`~services.bus.Follower.fetch`): records admitted by the
  continuity check, slice by slice;
- **open**: the caller's ``open_records`` turns them into items (decoding and
  verifying in worker processes), up to :data:`MAX_OPENING` fetches at once,
  taken back in fetch order so each partition stays in order;
- **accumulate and write**: items join a :class:`~services.bus.Batch`; a due
  batch is handed to the caller's ``write`` in a task of its own while the next
  one fills. The next batch keeps filling past due while the writer is busy and
  waits for it only when full, so at most two batches are in memory and the
  store sees one writer.

Nothing is acknowledged before ``write`` returns; a revoked partition's
pending items are dropped (never acknowledged, so read again by its next
owner); a :class:`~services.bus.PositionConflictError` from ``write`` drops
everything held and repositions from the caller's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiokafka import TopicPartition

from services.bus._batch import Batch, BatchLimits
from services.bus._continuity import Admitted, Position, Slice
from services.bus._errors import PositionConflictError
from services.bus._logging import get_logger
from services.bus._signals import cancel_and_wait

log = get_logger(__name__)
T = TypeVar("T")

IDLE_POLL_MS = 200
"""The longest a fetch waits while nothing is pending."""
OPENING_POLL_MS = 5
"""How long a fetch waits while records are being opened (take them back soon), and at
first while a due batch waits for the writer (start the next write soon)."""
MAX_OPENING = 2
"""Fetches being opened at once before the loop waits for the oldest."""


class Followed(Protocol):
    """What the loop needs of a :class:`~services.bus.Follower`."""

    @property
    def done(self) -> bool: ...
    async def fetch(self, timeout_ms: int) -> list[Slice]: ...
    def follows(self, piece: Slice) -> bool: ...
    def acknowledge(self, positions: Mapping[TopicPartition, Position]) -> None: ...
    async def commit(self) -> None: ...
    async def reposition(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Opening(Generic[T]):
    """One fetch's slices on their way through ``open_records`` (events travel along)."""

    slices: list[Slice]
    task: asyncio.Future[Sequence[T]]


class Pipeline(Generic[T]):
    """One run of :meth:`~services.bus.Follower.consume` (see there for the contract)."""

    def __init__(
        self,
        follower: Followed,
        write: Callable[[Batch[T]], Awaitable[None]],
        *,
        open_records: Callable[[list[Admitted]], Awaitable[Sequence[T]]],
        limits: BatchLimits,
        weight: Callable[[T], int],
        on_fetched: Callable[[Sequence[Slice]], None] | None = None,
    ) -> None:
        self._follower = follower
        self._write = write
        self._open_records = open_records
        self._limits = limits
        self._weight = weight
        self._on_fetched = on_fetched
        self.batch: Batch[T] = Batch(limits, weight)
        """The batch being filled."""
        self._opening: deque[_Opening[T]] = deque()
        self._writing: asyncio.Task[None] | None = None
        self._write_started = 0.0

    # -- what the follower calls ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items in the batch being filled."""
        return len(self.batch)

    async def settled(self) -> None:
        """Wait for the batch being written, whatever its outcome."""
        task = self._writing
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget what is pending for ``partitions``: it was never acknowledged."""
        dropped = self.batch.drop(partitions)
        if dropped:
            log.info("pending records of revoked partitions dropped", records=dropped)

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, drain_timeout_s: float) -> None:
        """Consume until ``stop`` is set or the follower is done, then drain."""
        try:
            while not stop.is_set() and not self._follower.done:
                await self._step()
            await self._drain(drain_timeout_s)
        finally:
            for pending in self._opening:
                pending.task.cancel()
            self._opening.clear()
            writing = self._writing
            if writing is not None and not writing.done():
                # Stopping: the unfinished write's own failure is dropped, as ever (its batch
                # and positions were not committed, so they are read again); a cancellation
                # of this task while it waits is kept (cancel_and_wait).
                with contextlib.suppress(Exception):
                    await cancel_and_wait(writing)

    async def _step(self) -> None:
        writing = self._writing is not None and not self._writing.done()
        # A due batch keeps filling while the one before it is written, so fetching and
        # opening go on meanwhile; only a full one waits for the writer.
        if self.batch.due and (self.batch.full or not writing):
            await self._finish_write()
            if self.batch.due:
                self._start_write()
            writing = self._writing is not None
        remaining = self.batch.remaining_ms()
        timeout = IDLE_POLL_MS if remaining is None else min(remaining, IDLE_POLL_MS)
        if writing and self.batch.due:
            # Soon after the write started, then less and less often: a store that is down
            # (the write retrying) is not polled hot. Never 0: that would spin.
            waited_ms = (time.monotonic() - self._write_started) * 1000
            timeout = min(IDLE_POLL_MS, max(OPENING_POLL_MS, round(waited_ms / 4)))
        if self._opening:
            timeout = min(timeout, OPENING_POLL_MS)
        slices = await self._follower.fetch(timeout)
        if slices:
            self._open(slices)
        if self._on_fetched is not None:
            self._on_fetched(slices)
        await self._take_opened(wait=len(self._opening) > MAX_OPENING)
        if self._writing is not None and self._writing.done():
            await self._finish_write()

    def _open(self, slices: list[Slice]) -> None:
        admitted: list[Admitted] = [(r, s.epoch) for s in slices for r in s.records]
        if admitted:
            task: asyncio.Future[Sequence[T]] = asyncio.ensure_future(self._open_records(admitted))
        else:
            task = asyncio.get_running_loop().create_future()
            task.set_result([])
        self._opening.append(_Opening(slices, task))

    async def _take_opened(self, *, wait: bool) -> None:
        """Move opened items into the batch, oldest fetch first (each partition stays in order)."""
        while self._opening:
            head = self._opening[0]
            if not head.task.done():
                if not wait:
                    return
                await asyncio.wait({head.task})
                wait = False
            self._opening.popleft()
            items = head.task.result()
            start = 0
            for piece in head.slices:
                count = len(piece.records)
                chunk = items[start : start + count]
                start += count
                # A rebalance or repositioning while these were opened: the partition
                # was positioned again from the caller's store; drop them.
                if self._follower.follows(piece):
                    self.batch.add(piece.partition, chunk, piece.events, piece.position)

    async def _drain(self, timeout_s: float) -> None:
        """Write what is pending within ``timeout_s``; whatever is left is read again later."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._opening:
                    await self._take_opened(wait=True)
                await self._finish_write()
                if not self.batch.empty:
                    self._start_write()
                    await self._finish_write()
        except TimeoutError:
            log.warning(
                "drain timed out; unstored records will be read again at the next start",
                pending=len(self.batch),
            )
        await self._follower.commit()

    # -- the writer ------------------------------------------------------------------------

    def _start_write(self) -> None:
        assert self._writing is None
        batch, self.batch = self.batch, Batch(self._limits, self._weight)
        self._write_started = time.monotonic()
        self._writing = asyncio.create_task(self._written(batch), name="oix-consume-write")

    async def _written(self, batch: Batch[T]) -> None:
        await self._write(batch)
        self._follower.acknowledge(batch.positions)

    async def _finish_write(self) -> None:
        task = self._writing
        if task is None:
            return
        try:
            await task
        except PositionConflictError as exc:
            log.warning("store positions moved under this consumer; repositioning", error=str(exc))
            self.batch.drop()
            for pending in self._opening:
                pending.task.cancel()
            self._opening.clear()
            await self._follower.reposition()
        finally:
            if self._writing is task:
                self._writing = None
