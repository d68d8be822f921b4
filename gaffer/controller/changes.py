"""Waiting for the cluster to change: a report, an ack, a node coming or going.

Requests that wait for a state (``drain`` until the node is empty, ``wait`` for a one-off's
exit) re-check it each time something changed, rather than polling. ``close`` wakes every
waiter for good: a stopping controller leaves no request waiting.
"""

from __future__ import annotations

import asyncio


class Changes:
    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False

    async def wait(self, timeout: float) -> bool:
        """Return when something changes or after ``timeout`` seconds: True; False at once
        once closed (the waiter should give up)."""
        if self.closed:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await waiter
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()
        return not self.closed

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.notify()
