"""Stopping a service: Ctrl-C and SIGTERM mean drain, then stop; tasks stopped by cancelling.

Ctrl-C and a service manager's SIGTERM both set an event the service drains on;
a task that waits on an event and is stopped by cancelling it waits with
:func:`wait_set`, and whoever stops it by cancelling uses :func:`cancel_and_wait`.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets on SIGINT or SIGTERM (instead of raising)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``event``; True when it is set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that returns
    normally when the task is cancelled just as the event is set, the
    cancellation is lost, and whoever cancelled the task to stop it waits
    forever (a gateway's shutdown hung so). ``asyncio.timeout`` keeps it.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task``, wait for its end, and raise what it raised besides being cancelled.

    Not ``task.cancel()`` then ``await task`` inside ``suppress(CancelledError)``:
    when the caller is itself cancelled while it waits, that suppress swallows
    the caller's cancellation along with the task's, the caller carries on,
    and whoever cancelled it waits for a stop that never comes.
    """
    task.cancel()
    await asyncio.wait({task})  # raises the caller's own cancellation, never the task's
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error
