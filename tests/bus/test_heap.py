"""Freezing the setup's heap out of the garbage collector's passes, for the long work only."""

from __future__ import annotations

import gc
import weakref

from services.bus import frozen_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_the_heap_is_frozen_inside_and_given_back_after() -> None:
    garbage, held = Node(), Node()
    garbage_ref, held_ref = weakref.ref(garbage), weakref.ref(held)
    del garbage  # garbage in a cycle before the block: collected on entering it
    with frozen_heap() as frozen:
        assert garbage_ref() is None
        assert frozen > 0
        assert gc.get_freeze_count() > 0
        del held
        gc.collect()
        assert held_ref() is not None  # frozen: out of the collector's reach
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert held_ref() is None  # given back: collected again
