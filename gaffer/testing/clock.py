"""A clock that only moves when a test says so (``gaffer.common.clock.Clock``).

``call_soon`` callbacks and ``call_later`` timers wait in this clock, not on an event loop:
``run()`` carries out what is ready now (``turn()`` only one loop turn of it), ``advance(seconds)`` moves time forward and fires each
timer that falls due, in time order (then in the order they were set), running what they make
ready before the next one. Nothing depends on real time or on how busy the machine is, so a
test that drives the Manager through a crash loop, a suspension and a rolling update runs the
same way every time, in microseconds.

``drive(awaitable)`` awaits a coroutine of the code under test (``Manager.shutdown``, say)
while carrying out what the clock holds between its steps; ``settle()`` lets tasks the code
started (an assignment's removals) run with the clock until all is quiet.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")
MAX_STEPS = 100_000
"""Callbacks one ``run`` or ``advance`` carries out at most: more means something reschedules
itself for ever, and the test should fail rather than hang."""
IDLE_TURNS = 3
"""Loop turns with nothing to run that ``settle`` takes as settled (a task woken by a future
needs one turn to run, and what it schedules another)."""


class FakeHandle:
    """What ``call_soon`` and ``call_later`` return: ``cancel()`` it, ask ``when()`` it fires."""

    __slots__ = ("_when", "_callback", "_args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._when = when
        self._callback = callback
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self._when

    def _run(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._callback(*self._args)


class FakeClock:
    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        """``start`` is the monotonic time; ``wall()`` is ``wall_offset`` ahead of it."""
        self.now = start
        self._wall_offset = wall_offset
        self._ready: deque[FakeHandle] = deque()
        self._timers: list[tuple[float, int, FakeHandle]] = []
        self._order = itertools.count()

    # ----------------------------------------------------------------- the Clock protocol

    def time(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        handle = FakeHandle(self.now, callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        handle = FakeHandle(self.now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (handle.when(), next(self._order), handle))
        return handle

    # ----------------------------------------------------------------- driving it

    def run(self) -> int:
        """Carry out every ready callback (and those they make ready); returns how many."""
        done = 0
        while self._ready:
            self._ready.popleft()._run()
            done += 1
            if done > MAX_STEPS:
                raise AssertionError(f"over {MAX_STEPS} callbacks without time moving: a loop?")
        return done

    def turn(self) -> int:
        """One loop turn: the callbacks ready now, not those they make ready; returns how many."""
        batch = list(self._ready)
        self._ready.clear()
        for handle in batch:
            handle._run()
        return len(batch)

    def advance(self, seconds: float = 0.0) -> None:
        """Move time forward by ``seconds``, firing every timer due on the way, in order."""
        if seconds < 0:
            raise ValueError(f"time only goes forward, not by {seconds}")
        target = self.now + seconds
        steps = self.run()
        while self._timers and self._timers[0][0] <= target:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            handle._run()
            steps += 1 + self.run()
            if steps > MAX_STEPS:
                raise AssertionError(f"over {MAX_STEPS} callbacks in {seconds}s: a loop?")
        self.now = target

    def next_timer(self) -> float | None:
        """When the next live timer fires (None: there is none)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """Callbacks and live timers still waiting."""
        live = sum(1 for _, _, handle in self._timers if not handle.cancelled)
        return live + sum(1 for handle in self._ready if not handle.cancelled)

    async def settle(self, rounds: int = 1000) -> None:
        """Let the event loop (tasks, futures) and this clock run, time standing still, until
        neither has had anything to do for a few turns in a row."""
        idle = 0
        for _ in range(rounds):
            await asyncio.sleep(0)
            idle = idle + 1 if self.run() == 0 else 0
            if idle >= IDLE_TURNS:
                return
        raise AssertionError(f"still busy after {rounds} turns")

    async def drive(self, awaitable: Awaitable[T], *, step: float = 0.0, rounds: int = 1000) -> T:
        """Await ``awaitable`` while running what this clock holds between its steps, moving
        time ``step`` seconds per round; AssertionError if it is not done in ``rounds``."""
        task = asyncio.ensure_future(awaitable)
        try:
            for _ in range(rounds):
                await asyncio.sleep(0)
                if task.done():
                    return task.result()
                self.advance(step)
            raise AssertionError(f"not done after {rounds} rounds of {step}s")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
