"""Lanes: a few threads that run the execs of a burst of spawns side by side.

glibc's ``posix_spawn`` clones the caller with ``CLONE_VFORK``: the calling thread waits until
the child has exec'd, about half of what a spawn costs the agent in a burst (``gaffer start``
of 1,000). ``os.posix_spawn`` releases the GIL for that wait, so ``count`` threads wait for
``count`` children at once.

A burst is prepared first (everything in Python, on the loop's thread), then ``run`` splits its
execs across the lanes, the calling thread being one of them, and returns when all have run;
then each spawn is finished in order. The phases do not overlap on purpose: a lane needs the
GIL after every exec, and a loop thread busy with Python would keep it for a whole switch
interval (5 ms) each time, which costs far more than the waits save. While the loop's thread
runs its own share, or waits for the others, the lanes get the GIL at once.

Only execs run here (``spawning.Exec.run`` on the fast path): everything else of a spawn, and
every Popen, stays on the loop's thread. The threads are created at the first burst, never for
a single spawn, and ``close`` (the owner's close path: ``Processes.close``) ends them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

MAX_LANES = 4


def default_count() -> int:
    """``MAX_LANES`` or the CPUs this process may run on, whichever is fewer."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_LANES, cpus))


class Lanes:
    """``count`` lanes: the caller's thread and ``count - 1`` threads, started at the first
    ``run`` of more than one task. Closed (or one lane), ``run`` runs every task itself."""

    def __init__(self, count: int | None = None) -> None:
        self.count = default_count() if count is None else max(1, count)
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run every task, ``count`` at a time, and return when all have. A task that raises
        leaves the rest of its lane's share unrun (its owner runs them), then raises here."""
        lanes = min(self.count, len(tasks))
        if lanes < 2 or self._closed:
            for task in tasks:
                task()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.count - 1, thread_name_prefix="gaffer-lane")
        shares = [tasks[i::lanes] for i in range(lanes)]
        futures = [self._pool.submit(_run_all, share) for share in shares[1:]]
        try:
            _run_all(shares[0])
        finally:
            for future in futures:
                future.result()

    def close(self) -> None:
        """End the threads (after any share still running); later runs use the caller's."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _run_all(tasks: Sequence[Callable[[], None]]) -> None:
    for task in tasks:
        task()
