"""Long pure computations in steps, so the controller's loop never stalls behind one.

Placing 100,000 slots takes about a tenth of a second of CPU; done in one go on the loop, every
heartbeat and client waits that long. A worker thread does not help: it holds the GIL, and the
loop thread then waits up to the interpreter's switch interval (5 ms) each time it wants the GIL
back, dozens of times per turn of the loop. So the long pure functions (``schedule``,
``reconcile``) are written as generators that ``yield`` between chunks of work (``CHUNK`` items
or so) and ``return`` their value; nothing about them changes but where they may pause.

- ``finish(steps)`` runs them to the end at once: the same value, for tests and small inputs.
- ``run_sliced(steps)`` (the controller's shell) runs them on the loop, handing the loop back
  whenever ``budget`` seconds of work have passed, so its worst stall is about one budget.

Inputs must not change while the steps run: the callers pass frozen values or copies.
"""

from __future__ import annotations

import asyncio
import time
from operator import itemgetter
from typing import Generator, Iterator, Sequence, TypeVar

from gaffer.common.model import Slot

T = TypeVar("T")
Item = TypeVar("Item")
Steps = Generator[None, None, T]
"""A computation in steps: ``yield`` (no value) between chunks, ``return`` the result."""

CHUNK = 1_024
"""Items handled between two chances to pause: a millisecond or two of placing."""
BUDGET = 0.004
"""Seconds of work ``run_sliced`` does before it lets the loop run."""


def chunks(items: Sequence[Item], size: int = CHUNK) -> Iterator[Sequence[Item]]:
    """``items`` in consecutive slices of ``size``: loop over one, then ``yield``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end; its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


async def run_sliced(steps: Steps[T], budget: float = BUDGET) -> T:
    """Run ``steps`` on the loop, yielding to it after every ``budget`` seconds of work."""
    clock = time.monotonic  # the loop's time() stands still while a callback runs
    started = clock()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if clock() - started >= budget:
            await asyncio.sleep(0)
            started = clock()


def sorted_slots(slots: list[Slot]) -> Steps[list[Slot]]:
    """``sorted(slots)``, by template then ordinal, in steps: each template's slots sorted by
    ordinal alone (integers compare far faster than tuples; 100,000 at once stall a loop)."""
    by_name: dict[str, list[Slot]] = {}
    for part in chunks(slots):
        for slot in part:
            found = by_name.get(slot[0])
            if found is None:
                by_name[slot[0]] = [slot]
            else:
                found.append(slot)
        yield
    out: list[Slot] = []
    for name in sorted(by_name):
        group = by_name[name]
        group.sort(key=_SECOND)
        out.extend(group)
        yield
    return out


_SECOND = itemgetter(1)
