"""Decoding and verifying records in worker processes.

Decoding (fastavro) and the Python around verification hold the GIL, so
threads do not run them in parallel: two threads open records no faster than
one. Worker processes do, and the values and results cross the process
boundary for about 3 µs a record. Each worker loads the agreement and the
schemas once, at start. With ``processes=0`` records are opened on one thread
of this process instead (tests, small machines).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from itertools import chain as concat

from services.audit._record import AuditRecord, Headers, KafkaRecord, Opening, assemble, open_value
from services.bus import Exchange, Opener, Settings

Admitted = tuple[KafkaRecord, int]
"""A record the tracker admitted, with its epoch."""

Raw = tuple[bytes | None, Headers]

_MIN_CHUNK = 64
_opener: Opener | None = None


def _exit_with(parent: int) -> None:
    # A parent killed with SIGKILL cannot stop its workers: they notice and go.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _start_worker(settings: Settings, parent: int) -> None:
    global _opener  # noqa: PLW0603  # one opener per worker process, built once
    # Ctrl-C and a service manager's SIGTERM reach the whole process group; the
    # parent drains its batch and then stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The parent's pid comes from the parent: if it died while this worker was
    # starting, os.getppid() would already name the reaper.
    threading.Thread(
        target=_exit_with, args=(parent,), daemon=True, name="oix-audit-parent-watch"
    ).start()
    _opener = Exchange.from_settings(settings).opener


def _ready() -> bool:
    return _opener is not None


def _open_raw(chunk: Sequence[Raw]) -> list[Opening]:
    assert _opener is not None, "worker not started"
    return _open_here(_opener, chunk)


def _open_here(opener: Opener, chunk: Sequence[Raw]) -> list[Opening]:
    return [open_value(opener, value, headers) for value, headers in chunk]


class RecordOpener:
    """Opens admitted records off the event loop, keeping their order."""

    def __init__(self, settings: Settings, opener: Opener, processes: int) -> None:
        self.processes = processes
        self._opener = opener
        self._executor: Executor
        if processes > 0:
            # spawn, not fork: this process runs threads (aiokafka, the database driver).
            self._executor = ProcessPoolExecutor(
                processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(settings, os.getpid()),
            )
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="oix-audit-open")

    async def start(self) -> None:
        """Start the workers now rather than at the first record."""
        if self.processes > 0:
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(loop.run_in_executor(self._executor, _ready) for _ in range(self.processes)),
            )

    async def open(self, admitted: list[Admitted]) -> list[AuditRecord]:
        """The records opened, in the order given."""
        if not admitted:
            return []
        openings = await self.openings([(r.value, tuple(r.headers)) for r, _ in admitted])
        return [
            assemble(record, epoch, opening)
            for (record, epoch), opening in zip(admitted, openings, strict=True)
        ]

    async def openings(self, raw: list[Raw]) -> list[Opening]:
        """What opening each (value, headers) finds, in the order given."""
        if not raw:
            return []
        loop = asyncio.get_running_loop()
        workers = max(1, self.processes)
        size = max(_MIN_CHUNK, -(-len(raw) // (2 * workers)))
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        # Worker processes open with their own opener; the thread with this one.
        work = _open_raw if self.processes > 0 else partial(_open_here, self._opener)
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._executor, work, chunk) for chunk in chunks),
        )
        return list(concat.from_iterable(parts))

    def close(self) -> None:
        """Stop the workers (after the work they hold)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
