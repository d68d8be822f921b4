"""The controller daemon and CPython's cyclic garbage collector.

The collector walks every object it tracks on each full (oldest-generation) collection, and
runs one whenever a quarter more objects have survived since the last. A controller placing
and sending 100,000 instances makes such collections every few hundred milliseconds, and each
walked what the daemon made at startup as well (modules, classes, functions, the desired state
loaded from the store): 20 to 60 ms of a stalled loop at 1,000 agents, most of the worst stall
left once the reconcile ran in steps (``bench/reconcile.py``, part b).

``freeze_startup`` collects once, then moves every object alive into the collector's permanent
generation (``gc.freeze``), which no collection walks again. Those objects are still freed by
reference counting when their last reference goes; only a reference cycle among them would
outlive its use, and what the daemon makes at startup lives as long as the daemon. The daemon
calls it once, after ``Controller.start``; the Controller never does: the collector belongs to
the process, not to a library running in it (tests start many controllers in one process).
"""

from __future__ import annotations

import gc


def freeze_startup() -> int:
    """Collect, then freeze every object alive now; how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
