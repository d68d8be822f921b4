"""heap.freeze_startup: garbage collected first, then what is alive out of every collection."""

from __future__ import annotations

import gc
import weakref

from gaffer.controller.heap import freeze_startup


class Box:
    """A container the collector tracks."""


def test_freeze_startup_collects_cycles_first_then_freezes_what_is_alive():
    """A garbage cycle made before is freed, not frozen; a live object is frozen."""
    cycle = Box()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    del cycle
    alive = Box()
    try:
        frozen = freeze_startup()
        assert gone() is None
        assert frozen == gc.get_freeze_count() > 0
        assert not any(obj is alive for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(obj is alive for obj in gc.get_objects())
