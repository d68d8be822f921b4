"""Time as something passed in: the loop's clock for the daemons, a fake one for tests.

Code that decides takes ``now`` as an argument; code that acts (the Manager) takes a ``Clock``
in its constructor and never reads time or schedules a callback any other way, so a test can
drive it with ``gaffer.testing.clock.FakeClock`` and no real time passes.

``time()`` is the monotonic clock of timers and deadlines (the loop's); ``wall()`` is seconds
since the epoch, for what people read (event timestamps, start times, uptimes).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float: ...

    def wall(self) -> float: ...

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Cancellable: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable: ...


class LoopClock:
    """The running loop's clock and scheduling, and ``time.time`` for the wall clock.

    The methods are the loop's own bound methods (no extra call per use: the Manager's spawn
    path reads the clock and schedules a callback for every instance).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        self.time = loop.time
        self.wall = time.time
        self.call_soon = loop.call_soon
        self.call_later = loop.call_later
