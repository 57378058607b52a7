"""Keeping the garbage collector off what a process built before its long work.

CPython's full collection walks every tracked object. A process that has
imported its libraries and loaded its agreement holds a few hundred thousand
of them for good; a replay then allocates several objects a record, and each
full collection walks the whole heap again for nothing. ``gc.freeze`` moves
what exists now to a generation the collector never scans.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[int]:
    """Collect once, then keep every object alive now out of collections until the end.

    Wrap the long work that follows setup. Yields how many objects are frozen.
    Frozen objects dropped meanwhile are still freed by reference counting;
    cycles among them wait for the end, when the collector sees them again.
    """
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
