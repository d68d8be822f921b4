"""A ``StateStore`` that refuses the writes a test names, in front of a real one.

``FailingStore`` passes every call to the store it wraps (the SQLite one, on a file in the
test's tmp dir) except the write methods named in ``failing``: those raise StoreUnavailable
before the wrapped store sees them, as an etcd store does when it has no quorum or this
controller lost its leadership. What tests check with it: an operation whose write fails
leaves the controller's memory exactly as it was, and works once the store takes writes again.
``hold`` makes a write wait (as a network store's answer does) until the test lets it go.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gaffer.common.errors import StoreUnavailable
from gaffer.controller.statestore import StateStore

WRITES = frozenset({
    "commit_puts", "put_templates", "set_count", "pause", "restart_template", "delete_templates",
    "put_node", "set_node_flags", "forget_node", "save_placement", "mark_failed",
    "next_generations", "start_numbering", "reserve_positions", "record_clean_stop",
    "put_token", "delete_token", "touch_token",
})
"""Every write method of ``StateStore``."""


class FailingStore:
    """``inner`` with the writes in ``failing`` refused (``failing = WRITES``: all of them)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.refused: list[str] = []
        """The writes refused so far, by method name."""
        self.held: dict[str, asyncio.Event] = {}
        self.waiting: list[str] = []
        """The held writes waiting now, by method name."""

    def hold(self, name: str) -> asyncio.Event:
        """Make every ``name`` write wait until the returned event is set."""
        self.held[name] = asyncio.Event()
        return self.held[name]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in WRITES:
            return method

        async def write(*args: Any, **kwargs: Any) -> Any:
            if name in self.held:
                self.waiting.append(name)
                try:
                    await self.held[name].wait()
                finally:
                    self.waiting.remove(name)
            if name in self.failing:
                self.refused.append(name)
                raise StoreUnavailable(f"the store is unavailable (test: {name} refused)")
            return await method(*args, **kwargs)

        return write
