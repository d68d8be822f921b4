"""An in-process event bus: dot-separated topics, prefix subscriptions, bounded queues.

Publishing never blocks and never fails: each subscription has a bounded queue, and a
subscriber that lets it fill up is cut off (its next read raises SubscriberTooSlow) rather
than slowing the publisher or anyone else. Every event carries a sequence number from one
counter per bus, so a subscriber can tell it missed something and resync.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from gaffer.common.errors import SubscriberTooSlow, SubscriptionClosed

DEFAULT_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    topic: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "topic": self.topic, "ts": self.ts, "data": self.data}


def topic_matches(topic: str, prefix: str) -> bool:
    """``prefix`` selects ``topic`` if it is empty, equal, or a prefix at any character."""
    return topic.startswith(prefix)


class Subscription:
    """One subscriber's bounded view of the bus; iterate it with ``async for``."""

    def __init__(self, bus: "EventBus", prefixes: tuple[str, ...], maxsize: int) -> None:
        self._bus = bus
        self.prefixes = prefixes
        self.maxsize = maxsize
        self._queue: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.too_slow = False
        self.delivered = 0

    def matches(self, topic: str) -> bool:
        return any(topic.startswith(p) for p in self.prefixes)

    def _offer(self, event: Event) -> bool:
        if self.closed:
            return False
        if len(self._queue) >= self.maxsize:
            self.too_slow = True
            self.close()
            return False
        self._queue.append(event)
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Event | None:
        """The next queued event or None.

        Once closed and drained it raises SubscriberTooSlow if the bus cut this subscriber
        off, SubscriptionClosed if it was closed on purpose; ``async for`` simply ends then.
        """
        if self._queue:
            self.delivered += 1
            return self._queue.popleft()
        self._raise_if_closed()
        return None

    async def get(self) -> Event:
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _raise_if_closed(self) -> None:
        if self.too_slow:
            raise SubscriberTooSlow(
                f"subscriber to {list(self.prefixes)} fell {self.maxsize} events behind and was cut off"
            )
        if self.closed:
            raise SubscriptionClosed(f"subscription to {list(self.prefixes)} is closed")

    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self._wake()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, clock: Any = time.time) -> None:
        self._subs: list[Subscription] = []
        self._clock = clock
        self.seq = 0
        self.published = 0
        self.cut_off = 0

    def subscribe(self, prefixes: str | Iterable[str] = "", maxsize: int = DEFAULT_QUEUE) -> Subscription:
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        sub = Subscription(self, tuple(prefixes) or ("",), maxsize)
        self._subs.append(sub)
        return sub

    def wants(self, topic: str) -> bool:
        """Whether anyone would receive ``topic``: lets producers skip building events."""
        for sub in self._subs:
            if sub.matches(topic):
                return True
        return False

    def publish(self, topic: str, data: dict[str, Any]) -> Event:
        self.seq += 1
        self.published += 1
        event = Event(self.seq, topic, self._clock(), data)
        for sub in list(self._subs):
            if sub.matches(topic) and not sub._offer(event) and sub.too_slow:
                self.cut_off += 1
        return event

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subs.remove(sub)
        except ValueError:
            pass

    @property
    def subscribers(self) -> int:
        return len(self._subs)
