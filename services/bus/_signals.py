"""Stopping a service: Ctrl-C and SIGTERM mean drain, then stop; tasks stopped by cancelling.

Ctrl-C and a service manager's SIGTERM both set an event the service drains on;
a task that waits on an event and is stopped by cancelling it waits with
:func:`wait_set`.
"""

from __future__ import annotations

import asyncio
import signal

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
