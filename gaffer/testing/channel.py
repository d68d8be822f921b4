"""Channels in memory: a controller and agents talk without sockets in unit tests.

Each ``MemoryChannel`` has the interface of ``gaffer.common.transport.Channel`` (the
``MessageChannel`` protocol: ``recv_batch``, ``drain``, ``send``, ``close``, the counters),
and is bounded like it, so what the code under test does with a full or closed peer is what
it does in production::

    MemoryRouter.channel ◄──[peer, payload]── dealer = router.connect()   (ROUTER / DEALER)
                         ──[peer, payload]──► dealer receives [payload]
    a, b = channel_pair()                                                   (one to one)

- Every inbox holds at most ``hwm`` messages. A DEALER's send to a full (or closed) router
  returns False and counts ``send_dropped``, as ``zmq.Again`` does on a non-blocking send; a
  ROUTER's send to a full or gone peer is dropped silently (counted in ``MemoryRouter.lost``),
  as a ROUTER without ``ROUTER_MANDATORY`` does. A message over ``maxmsgsize`` is refused by
  the receiver (counted in ``oversized``), as ``ZMQ_MAXMSGSIZE`` refuses it.
- What the router receives carries the connection's ``User-Id`` and ``Peer-Address``
  (``connect(user_id=...)``), as ZAP stamps them on real frames.
- Delivery appends to the receiver's inbox and wakes its reader on a later loop turn (or
  calls ``on_readable`` there, for callback-driven readers such as the simulated agent):
  nobody handles a message inside the sender's call, as with a real socket.
- ``recv_batch``'s timeout runs on the clock given (a ``FakeClock`` in tests), or the loop's.

Nothing here opens a descriptor.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections import deque
from typing import Any, Callable, Mapping

import zmq

from gaffer.common.clock import Cancellable, Clock
from gaffer.common.protocol import MAX_MESSAGE
from gaffer.common.transport import DEFAULT_HWM, RECV_BATCH


class MemoryFrame:
    """A received frame: ``bytes``, ``buffer`` and ``get(property)`` as on a ``zmq.Frame``."""

    __slots__ = ("bytes", "_properties")

    def __init__(self, data: builtins.bytes, properties: Mapping[str, str] | None = None) -> None:
        self.bytes = data
        self._properties = properties or {}

    @property
    def buffer(self) -> memoryview:
        return memoryview(self.bytes)

    def get(self, name: str) -> Any:
        """A connection property; KeyError when the connection has none (as ``zmq`` does)."""
        return self._properties[name]


Deliver = Callable[[list[builtins.bytes]], bool]


class MemoryChannel:
    """One end of an in-memory connection (see the module docstring)."""

    def __init__(
        self,
        *,
        hwm: int = DEFAULT_HWM,
        maxmsgsize: int = MAX_MESSAGE,
        clock: Clock | None = None,
    ) -> None:
        self.hwm = hwm
        self.maxmsgsize = maxmsgsize
        self._clock = clock
        self._inbox: deque[list[MemoryFrame]] = deque()
        self._deliver: Deliver | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._notify: asyncio.Handle | None = None
        self.on_readable: Callable[[], None] | None = None
        """Called on a later loop turn when messages arrived (a callback-driven reader)."""
        self.closed = False
        self.sent = 0
        self.received = 0
        self.send_dropped = 0
        self.oversized = 0

    # ----------------------------------------------------------------- the Channel interface

    async def recv_batch(self, limit: int = RECV_BATCH, timeout: float | None = None) -> list[list[MemoryFrame]]:
        """Up to ``limit`` messages, waiting (up to ``timeout`` seconds) for the first."""
        while True:
            if self.closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "the channel is closed")
            batch = self.drain(limit)
            if batch or timeout is not None and timeout <= 0:
                return batch
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer: Cancellable | None = None
            if timeout is not None:
                later = self._clock.call_later if self._clock is not None else loop.call_later
                timer = later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if timeout is not None and not self._inbox and not self.closed:
                return []

    def drain(self, limit: int = RECV_BATCH) -> list[list[MemoryFrame]]:
        batch = []
        inbox = self._inbox
        while inbox and len(batch) < limit:
            batch.append(inbox.popleft())
        self.received += len(batch)
        return batch

    def send(self, frames: list[builtins.bytes]) -> bool:
        """Hand one message to the peer without blocking; False (and counted) if it cannot."""
        if self.closed or self._deliver is None or not self._deliver(list(frames)):
            self.send_dropped += 1
            return False
        self.sent += 1
        return True

    def close(self, linger: int = 0) -> None:
        """Close this end: its reader wakes (and finds it closed), the peer's sends fail
        (``linger`` is ZeroMQ's: nothing queues here)."""
        if self.closed:
            return
        self.closed = True
        self._inbox.clear()
        if self._notify is not None:
            self._notify.cancel()
        _wake(self._waiter)

    # ----------------------------------------------------------------- receiving side

    @property
    def queued(self) -> int:
        """Messages waiting in this end's inbox."""
        return len(self._inbox)

    def _accept(self, frames: list[MemoryFrame]) -> bool:
        """Put one message in the inbox; False if closed or full (HWM)."""
        if self.closed or len(self._inbox) >= self.hwm:
            return False
        if sum(len(f.bytes) for f in frames) > self.maxmsgsize:
            self.oversized += 1
            return True  # the sender's queue took it; the receiver refuses it
        self._inbox.append(frames)
        _wake(self._waiter)
        if self.on_readable is not None and self._notify is None:
            self._notify = asyncio.get_running_loop().call_soon(self._readable)
        return True

    def _readable(self) -> None:
        self._notify = None
        if self.on_readable is not None and self._inbox and not self.closed:
            self.on_readable()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MemoryRouter:
    """A ROUTER in memory: ``channel`` is its own end; ``connect()`` makes a DEALER peer."""

    def __init__(self, *, hwm: int = DEFAULT_HWM, maxmsgsize: int = MAX_MESSAGE, clock: Clock | None = None) -> None:
        self.channel = MemoryChannel(hwm=hwm, maxmsgsize=maxmsgsize, clock=clock)
        self.channel._deliver = self._route
        self._hwm = hwm
        self._maxmsgsize = maxmsgsize
        self._clock = clock
        self._peers: dict[builtins.bytes, MemoryChannel] = {}
        self._ids = itertools.count(1)
        self.lost = 0
        """Messages the router sent to a peer that was gone or full (dropped, as ZMQ does)."""

    def connect(self, *, user_id: str | None = None, address: str = "127.0.0.1") -> MemoryChannel:
        """A new DEALER connection (a fresh routing id, as a new socket gets)."""
        peer = b"\x00mem%08d" % next(self._ids)
        dealer = MemoryChannel(hwm=self._hwm, maxmsgsize=self._maxmsgsize, clock=self._clock)
        properties = {"Peer-Address": address}
        if user_id is not None:
            properties["User-Id"] = user_id
        router = self.channel

        def to_router(frames: list[builtins.bytes]) -> bool:
            return router._accept([MemoryFrame(peer), *(MemoryFrame(f, properties) for f in frames)])

        dealer._deliver = to_router
        self._peers[peer] = dealer
        return dealer

    def peers(self) -> list[builtins.bytes]:
        """Routing ids of the connections still open."""
        return [peer for peer, dealer in self._peers.items() if not dealer.closed]

    def _route(self, frames: list[builtins.bytes]) -> bool:
        if not frames:
            return False
        dealer = self._peers.get(frames[0])
        if dealer is None or dealer.closed:
            self._peers.pop(frames[0], None)
            self.lost += 1
            return True
        if not dealer._accept([MemoryFrame(f) for f in frames[1:]]):
            self.lost += 1
        return True


def channel_pair(
    *, hwm: int = DEFAULT_HWM, maxmsgsize: int = MAX_MESSAGE, clock: Clock | None = None,
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two ends, each sending to the other (DEALER to DEALER): a full or closed end makes the
    other's send return False."""
    a = MemoryChannel(hwm=hwm, maxmsgsize=maxmsgsize, clock=clock)
    b = MemoryChannel(hwm=hwm, maxmsgsize=maxmsgsize, clock=clock)
    a._deliver = lambda frames: b._accept([MemoryFrame(f) for f in frames])
    b._deliver = lambda frames: a._accept([MemoryFrame(f) for f in frames])
    return a, b
