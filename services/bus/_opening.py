"""Opening records (decode and verify) off the event loop, in worker processes or a thread.

Decoding (fastavro) and the Python around verification hold the GIL, so
threads do not run them in parallel: two threads open records no faster than
one. Worker processes do, and the values and results cross the process
boundary for about 3 µs a record. Each worker loads the agreement and the
schemas once, at start. With ``processes=0`` records are opened on one thread
of this process instead (tests, small machines).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from itertools import chain
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Generic, TypeVar

from services.bus._envelope import Opener
from services.bus._exchange import Exchange
from services.bus._settings import Settings

T = TypeVar("T")

Headers = tuple[tuple[str, bytes], ...]
Raw = tuple[bytes | None, Headers]
"""A record's value and headers, as they cross to a worker."""

OpenOne = Callable[[Opener, bytes | None, Headers], T]

_MIN_CHUNK = 64
_opener: Opener | None = None


def _exit_with(parent: BaseProcess) -> None:
    # A parent killed with SIGKILL cannot stop its workers: they notice and go.
    parent.join()  # returns when the parent's end of the pipe to this worker closes
    os._exit(0)


def _start_worker(settings: Settings, parent: int) -> None:
    global _opener  # noqa: PLW0603  # one opener per worker process, built once
    # Ctrl-C and a service manager's SIGTERM reach the whole process group; the
    # parent drains its batch and then stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Watched through the pipe multiprocessing keeps open from the parent (a
    # forkserver's worker is not the parent's child, so os.getppid() would not tell).
    watched = multiprocessing.parent_process()
    if watched is None or watched.pid != parent:
        os._exit(0)  # started by something else than the pool's process
    threading.Thread(
        target=_exit_with, args=(watched,), daemon=True, name="oix-opener-parent-watch"
    ).start()
    _opener = Exchange.from_settings(settings).opener
    # What is alive now (modules, schemas, the agreement) lives as long as the worker; a
    # full collection walking it paused a worker's chunk for 50-130 ms under load.
    gc.freeze()


def _ready() -> bool:
    return _opener is not None


def _open_in_worker(open_one: OpenOne[T], chunk: Sequence[Raw]) -> list[T]:
    assert _opener is not None, "worker not started"
    return _open_here(open_one, _opener, chunk)


def _open_here(open_one: OpenOne[T], opener: Opener, chunk: Sequence[Raw]) -> list[T]:
    return [open_one(opener, value, headers) for value, headers in chunk]


def _context(*, forkserver: bool, preload: Sequence[str]) -> BaseContext:
    """spawn, or a forkserver that imported the bus (and ``preload``) once, to fork from.

    The preload list is read when the server starts (once a process).
    """
    if not forkserver or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Each worker still imports the main script (Python 3.11's forkserver never preloads
    # it): what the script imports, preloaded, is then found imported.
    context.set_forkserver_preload([__name__, *preload])
    return context


class OpenerPool(Generic[T]):
    """Opens records with ``open_one`` off the event loop, keeping their order.

    ``open_one(opener, value, headers)`` must never raise for bad input (a
    poison record is a result, not an exception) and, with ``processes > 0``,
    be a module-level function (it is pickled by name to the workers, each of
    which builds its own :class:`~services.bus.Opener` from ``settings``).
    ``opener`` opens in-process when ``processes`` is 0.

    Workers are spawned, each importing OIX (about a second of CPU); with
    ``forkserver`` they fork from one server process that imported the bus
    and ``preload`` (module names) once. The server lives as long as this
    process and serves every later pool that asks for it.
    """

    def __init__(
        self,
        settings: Settings,
        open_one: OpenOne[T],
        processes: int,
        opener: Opener,
        *,
        forkserver: bool = False,
        preload: Sequence[str] = (),
    ) -> None:
        self.processes = processes
        self._open_one = open_one
        self._opener = opener
        self._executor: Executor
        if processes > 0:
            # spawn, not fork: this process runs threads (aiokafka, database drivers).
            self._executor = ProcessPoolExecutor(
                processes,
                mp_context=_context(forkserver=forkserver, preload=preload),
                initializer=_start_worker,
                initargs=(settings, os.getpid()),
            )
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="oix-open")

    async def start(self) -> None:
        """Start the workers now rather than at the first record."""
        if self.processes > 0:
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(loop.run_in_executor(self._executor, _ready) for _ in range(self.processes)),
            )

    async def open(self, raw: Sequence[Raw]) -> list[T]:
        """What ``open_one`` makes of each (value, headers), in the order given."""
        if not raw:
            return []
        loop = asyncio.get_running_loop()
        workers = max(1, self.processes)
        size = max(_MIN_CHUNK, -(-len(raw) // (2 * workers)))
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        # Worker processes open with their own opener; the thread with this one.
        work = (
            partial(_open_in_worker, self._open_one)
            if self.processes > 0
            else partial(_open_here, self._open_one, self._opener)
        )
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._executor, work, chunk) for chunk in chunks),
        )
        return list(chain.from_iterable(parts))

    def close(self) -> None:
        """Stop the workers (after the work they hold)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
