"""The controller's event fan-out: one stream numbered by position, published over XPUB and locally.

Every event gets the next position (``eventlog``: positions never go backwards, also across
restarts, since the store reserves them in blocks, ``Positions``), is held in the event log for
``replay``, and goes to the ZMQ XPUB socket and to a local EventBus (HTTP streams, tests). XPUB
tells us what remote subscribers hold, so producers can skip work nobody wants (``wants``):
agents forward output lines only while someone subscribes to them. Remote subscribers come in
two kinds:

- **feeds** (``feeds``; what ``gaffer.client`` subscribes to): a subscription's events packed
  into batches, one ``[key, batch]`` message per subscription per loop turn (at most
  ``BATCH_EVENTS`` events), chained by one ``prev``. A reader pays for a message once, not per
  event: most of what reading cost.
- **plain topic prefixes** (raw pyzmq subscribers): one ``[topic, event]`` message per event,
  sent at once. ``prev`` chains: such an event carries, for each subscribed prefix its topic
  matches, the position of the previous event matching that prefix (0: none known to this
  incarnation). A subscriber of that prefix whose last event is older knows, from this one
  event, that it missed something it wanted, and replays exactly that; events its prefixes
  filter out never look missed.

A slow remote subscriber never slows the hub: ZMQ drops what exceeds its high-water mark
(``PUB_HWM`` messages queued per subscriber: events, or batches) and the subscriber sees the
gap in ``prev``. A slow local subscriber is cut off by the bus. Output reaches the hub already
limited by the agents (``gaffer.agent.follow``: a few events a second per followed stream, a
bounded number of bytes each), so a subscriber that stops reading makes the controller hold at
most ``PUB_HWM`` messages, accumulating no faster than the agents' follow budgets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import zmq
import zmq.asyncio

from gaffer.common import protocol
from gaffer.common.bus import EventBus
from gaffer.common.errors import StorageError
from gaffer.common.transport import Channel
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.eventlog import EventLog
from gaffer.controller.feeds import Feeds, parse_key
from gaffer.controller.position_rows import BLOCK

log = logging.getLogger("gaffer.controller.hub")

PUB_HWM = 100_000
MAX_PREV = 64
"""Entries of one event's ``prev`` map; a prefix left out is "unknown" (the reader replays)."""
RETRY_EVERY = 4_096
"""Positions numbered between two tries to reserve a block when the store refuses."""


class Positions:
    """The positions this incarnation may use, reserved in the store ahead of need.

    The next block is reserved when half of the current one is used, so a store that refuses
    a write (full disk) has half a block of events' time to recover (tried again every
    ``RETRY_EVERY`` positions). Should it refuse for that long, numbering goes on past the
    reservation (events are never held back) and the error says that a crash now could make a
    restarted controller reuse positions.

    Publishing never waits for the store: a reservation runs as a task of its own (one at a
    time, owned here and cancelled by ``stop``) while numbering goes on.
    """

    def __init__(self, reserved: int, reserve: Callable[[], Awaitable[int]]) -> None:
        self.reserved = reserved
        self._reserve = reserve
        self._next_try = reserved - BLOCK // 2
        self._task: asyncio.Task | None = None

    def used(self, position: int) -> None:
        """Note that ``position`` was numbered; reserve more when it is time."""
        if position < self._next_try or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._reserve_more(position))

    async def _reserve_more(self, position: int) -> None:
        try:
            try:
                self.reserved = await self._reserve()
            except StorageError as exc:
                self._next_try = position + RETRY_EVERY
                if position > self.reserved:
                    log.error(
                        "event position %d is past the %d reserved (%s): a crash now could make the "
                        "next controller reuse positions", position, self.reserved, exc.message,
                    )
                return
            self._next_try = self.reserved - BLOCK // 2
        finally:
            self._task = None

    async def settled(self) -> None:
        """Wait for the reservation under way, if any (for tests)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)


class EventHub:
    def __init__(
        self,
        sock: zmq.asyncio.Socket | None,
        bus: EventBus | None = None,
        events: EventLog | None = None,
        positions: Positions | None = None,
    ) -> None:
        """``events``: the log that numbers and holds events (a fresh one from position 1 by
        default); ``positions``: the store's reservation it numbers within (none: in memory)."""
        self.bus = bus if bus is not None else EventBus()
        self.log = events if events is not None else EventLog()
        self._positions = positions
        self._channel = Channel(sock) if sock is not None else None
        self._prefixes: dict[str, int] = {}
        """Per-event subscriptions (plain topic prefixes): subscribers holding each."""
        self._feeds = Feeds()
        """Batched subscriptions (feed keys: the client's)."""
        self._flushing = False
        self._latest: dict[str, int] = {}
        """Per subscribed prefix, the position of the newest event matching it (``prev``)."""
        self._held: set[str] = set()
        """Every prefix held, per event or in a feed (``wants``, ``holds``)."""
        self._task: asyncio.Task | None = None
        self._listeners: list[Callable[[], None]] = []
        self.published = 0
        self._local: dict[str, int] = {}
        """Prefixes subscribers in this process hold (HTTP streams): ``hold`` / ``release``."""

    def start(self) -> None:
        if self._channel is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch_subscriptions())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._positions is not None:
            await self._positions.stop()
        self._flush()
        if self._channel is not None:
            self._channel.close()

    def on_subscriptions_changed(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    @property
    def seq(self) -> int:
        """The last position numbered (the log's ``last``)."""
        return self.log.last

    def publish(self, topic: str, data: dict[str, Any], ts: float | None = None) -> int:
        """Number, hold and send one event; its position. Never blocks. Feeds get it in their
        next batch: at the latest when the loop turns (``_flush``, scheduled once per burst)."""
        ts = time.time() if ts is None else ts
        position = self.log.append(topic, ts, data).seq
        self.published += 1
        if self._positions is not None:
            self._positions.used(position)
        if self._feeds:
            self._batch(position, topic, ts, data)
        if self._channel is not None and self._prefixes:
            prev = self._chain(topic, position)
            if prev:
                body = {"seq": position, "topic": topic, "ts": ts, "data": data, "prev": prev}
                try:
                    frame = protocol.encode_checked("event", position, body)
                except Exception:
                    log.exception("event %s could not be encoded; not published", topic)
                else:
                    self._channel.send([topic.encode(), frame])
        if self.bus.wants(topic):  # no local subscriber (the usual case): no bus event to build
            self.bus.publish(topic, data)
        return position

    def _batch(self, position: int, topic: str, ts: float, data: dict[str, Any]) -> None:
        channel = self._channel
        assert channel is not None
        for frames in self._feeds.add(position, topic, ts, data):
            channel.send(frames)
        if not self._flushing and self._feeds.pending:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send every pending batch (once per loop turn while events come)."""
        self._flushing = False
        if self._channel is not None:
            for frames in self._feeds.flush():
                self._channel.send(frames)

    def _chain(self, topic: str, position: int) -> dict[str, int]:
        """``prev`` for an event at ``position``: for each subscribed prefix ``topic`` matches
        (at most MAX_PREV), the newest earlier position matching it; empty when no remote
        subscriber wants the event."""
        prev: dict[str, int] = {}
        latest = self._latest
        for prefix in self._prefixes:
            if topic.startswith(prefix):
                if len(prev) < MAX_PREV:
                    prev[prefix] = latest.get(prefix, 0)
                latest[prefix] = position
        return prev

    def remote_wants(self, topic: str) -> bool:
        return any(topic.startswith(prefix) for prefix in self._held)

    def wants(self, topic: str) -> bool:
        """Whether any remote or local subscriber would receive ``topic``."""
        return self.remote_wants(topic) or self.bus.wants(topic)

    def holds(self, prefix: str) -> bool:
        """Whether a remote subscriber holds exactly ``prefix`` (a client's sync marker)."""
        return prefix in self._held

    def subscribed_prefixes(self) -> list[str]:
        """Every prefix remote subscribers hold, per event or in a feed."""
        return sorted(self._held)

    async def _watch_subscriptions(self) -> None:
        assert self._channel is not None
        while True:
            batch = await self._channel.recv_batch()
            changed = False
            for frames in batch:
                raw = frames[0].bytes
                if not raw or raw[0] not in (0, 1):
                    continue
                changed = True
                feed = parse_key(raw[1:])
                if feed is not None:
                    if raw[0] == 1:
                        self._feeds.subscribe(raw[1:], feed)
                    else:
                        self._feeds.unsubscribe(raw[1:])
                    continue
                prefix = raw[1:].decode(errors="replace")
                if raw[0] == 1:
                    self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1
                elif prefix in self._prefixes:
                    self._prefixes[prefix] -= 1
                    if self._prefixes[prefix] <= 0:
                        del self._prefixes[prefix]
                        self._latest.pop(prefix, None)
            if changed:
                self._held = set(self._prefixes) | self._feeds.prefixes()
                for callback in self._listeners:
                    callback()

    def hold(self, prefix: str) -> None:
        """A subscriber in this process (an HTTP stream, reading ``bus``) wants ``prefix``:
        agents forward the output it selects while anyone holds it (``local_prefixes``)."""
        self._local[prefix] = self._local.get(prefix, 0) + 1
        if self._local[prefix] == 1:
            for callback in self._listeners:
                callback()

    def release(self, prefix: str) -> None:
        """The end of one ``hold`` of ``prefix``."""
        held = self._local.get(prefix, 0) - 1
        if held > 0:
            self._local[prefix] = held
            return
        if self._local.pop(prefix, None) is not None:
            for callback in self._listeners:
                callback()

    def local_prefixes(self) -> list[str]:
        return sorted(self._local)

    @property
    def dropped(self) -> int:
        return self._channel.send_dropped if self._channel is not None else 0

    def status(self) -> dict[str, int]:
        """The ``event_log`` map of ``status``: position, horizon, events held, the bound,
        and local subscribers cut off for falling behind."""
        return {**self.log.status(), "dropped_subscribers": self.bus.cut_off}
