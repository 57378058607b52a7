"""The one way a test waits for something: poll a condition until it holds, with a deadline.

Never sleep-and-hope: a test that waits says what for, and fails with the
last value it saw when that does not come in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any],
    what: str | Callable[[], str] = "the condition",
    *,
    timeout: float = 60.0,
    interval: float = 0.05,
) -> Any:
    """Poll ``check()`` (sync or async) until it returns something truthy, and return that.

    Fails after ``timeout`` seconds naming ``what`` (a text, or a function that
    gives it at that moment, e.g. with a log's tail) and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], Any],
    what: str | Callable[[], str] = "the condition",
    *,
    timeout: float = 60.0,
    interval: float = 0.05,
) -> Any:
    """:func:`eventually` for synchronous fixtures, which have no event loop to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


def _timed_out(what: str | Callable[[], str], timeout: float, last: Any) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g} s waiting for {said}; last: {last!r}")
