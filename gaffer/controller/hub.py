"""The controller's event fan-out: one numbered stream, published over XPUB and locally.

Every event gets the next sequence number of this controller incarnation and goes to the ZMQ
XPUB socket (topic frame + ``event`` envelope) and to a local EventBus (HTTP streams, tests).
XPUB tells us which topic prefixes remote subscribers hold, so producers can skip work nobody
wants (``wants``): agents forward output lines only while someone subscribes to them.

A slow remote subscriber never slows the hub: ZMQ drops what exceeds its high-water mark
(``PUB_HWM`` events queued per subscriber) and the subscriber sees the gap in sequence numbers.
A slow local subscriber is cut off by the bus. Output reaches the hub already limited by the
agents (``gaffer.agent.follow``: a few events a second per followed stream, a bounded number
of bytes each), so a subscriber that stops reading makes the controller hold at most
``PUB_HWM`` events, accumulating no faster than the agents' follow budgets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

from gaffer.common import protocol
from gaffer.common.bus import EventBus
from gaffer.common.transport import Channel
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.controller.hub")

PUB_HWM = 100_000


class EventHub:
    def __init__(self, sock: zmq.asyncio.Socket | None, bus: EventBus | None = None) -> None:
        self.bus = bus if bus is not None else EventBus()
        self._channel = Channel(sock) if sock is not None else None
        self._prefixes: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self._listeners: list[Callable[[], None]] = []
        self.seq = 0
        self.published = 0

    def start(self) -> None:
        if self._channel is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch_subscriptions())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._channel is not None:
            self._channel.close()

    def on_subscriptions_changed(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def publish(self, topic: str, data: dict[str, Any], ts: float | None = None) -> int:
        """Number and send one event; never blocks."""
        self.seq += 1
        self.published += 1
        ts = time.time() if ts is None else ts
        if self._channel is not None and self._prefixes and self.remote_wants(topic):
            body = {"seq": self.seq, "topic": topic, "ts": ts, "data": data}
            try:
                frame = protocol.encode("event", self.seq, body)
            except Exception:
                log.exception("event %s could not be encoded; not published", topic)
            else:
                self._channel.send([topic.encode(), frame])
        self.bus.publish(topic, data)
        return self.seq

    def remote_wants(self, topic: str) -> bool:
        return any(topic.startswith(prefix) for prefix in self._prefixes)

    def wants(self, topic: str) -> bool:
        """Whether any remote or local subscriber would receive ``topic``."""
        return self.remote_wants(topic) or self.bus.wants(topic)

    def holds(self, prefix: str) -> bool:
        """Whether a remote subscriber holds exactly ``prefix`` (a client's sync marker)."""
        return prefix in self._prefixes

    def subscribed_prefixes(self) -> list[str]:
        return sorted(self._prefixes)

    async def _watch_subscriptions(self) -> None:
        assert self._channel is not None
        while True:
            batch = await self._channel.recv_batch()
            changed = False
            for frames in batch:
                raw = frames[0].bytes
                if not raw or raw[0] not in (0, 1):
                    continue
                prefix = raw[1:].decode(errors="replace")
                if raw[0] == 1:
                    self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1
                elif prefix in self._prefixes:
                    self._prefixes[prefix] -= 1
                    if self._prefixes[prefix] <= 0:
                        del self._prefixes[prefix]
                changed = True
            if changed:
                for callback in self._listeners:
                    callback()

    @property
    def dropped(self) -> int:
        return self._channel.send_dropped if self._channel is not None else 0
