"""Waiting for the Manager's state to change: ``wait_until(predicate)`` without polling.

Whatever changes an instance or a template calls ``notify``; every waiter then checks its
predicate again. Waiters are futures on the running loop, woken all at once.
"""

from __future__ import annotations

import asyncio
from typing import Callable


class Changes:
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every change.

        The first check comes after the loop has run what is already scheduled, so an
        operation called just before (``add``, ``kill``) has converged by then.
        """

        async def loop() -> None:
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

        async with asyncio.timeout(timeout):
            await asyncio.sleep(0)
            await loop()
