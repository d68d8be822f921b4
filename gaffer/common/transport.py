"""Batched receive/send on ZeroMQ sockets, for the daemons' event loops.

The sockets themselves are configured in ``sockets`` (re-exported here). Receiving waits for
readability once and then drains with non-blocking reads (about ten times the rate of awaiting
each ``recv`` on a ``zmq.asyncio`` socket); sending is non-blocking and drops (counted) when a peer's queue is
full, because a stalled peer must never stall the loop.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any, Protocol, Sequence

import zmq

from gaffer.common.sockets import (  # re-exported: the daemons import them from here
    DEFAULT_HWM,
    bind,
    connect,
    make_curve_client,
    make_curve_server,
    new_socket,
    peer_address,
    set_domain,
    user_id,
)

RECV_BATCH = 1_000


class Frame(Protocol):
    """A received frame as the channels' users read it (``zmq.Frame``, or a test's fake)."""

    @property
    def bytes(self) -> builtins.bytes: ...

    @property
    def buffer(self) -> memoryview: ...

    def get(self, name: str) -> Any: ...


class MessageChannel(Protocol):
    """What the controller's server, the agent's link and the client use of a ``Channel``:
    batched receive, non-blocking bounded send, counters. ``gaffer.testing.channel`` gives an
    in-memory one, so a controller and simulated agents talk without sockets in unit tests."""

    sent: int
    received: int
    send_dropped: int

    async def recv_batch(self, limit: int = ..., timeout: float | None = ...) -> Sequence[Sequence[Frame]]: ...

    def drain(self, limit: int = ...) -> Sequence[Sequence[Frame]]: ...

    def send(self, frames: list[bytes]) -> bool: ...

    def close(self, linger: int = 0) -> None: ...


class Channel:
    """One socket with batched, non-blocking I/O and counters of what it dropped.

    The socket is driven synchronously (non-blocking calls on the raw socket) and woken by its
    ZMQ file descriptor, which is edge-triggered: *any* call on the socket, a send included,
    may consume the signal that input arrived. So every wake-up re-reads ``ZMQ_EVENTS``, and
    every send checks whether it just swallowed a pending wake-up: a receiver never sleeps
    while a message waits.

    Waits use ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11, ``wait_for``
    swallows a cancellation that arrives just as the awaited event is set, and the task
    that owns the channel (an agent's link) then never stops.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self._raw = zmq.Socket.shadow(sock.underlying)
        self._loop = asyncio.get_running_loop()
        self._fd = self._raw.getsockopt(zmq.FD)
        self._readable = asyncio.Event()
        self._loop.add_reader(self._fd, self._check)
        self._closed = False
        self.sent = 0
        self.received = 0
        self.send_dropped = 0

    def _check(self) -> None:
        if self._closed:
            return
        try:
            ready = self._raw.getsockopt(zmq.EVENTS) & zmq.POLLIN
        except zmq.ZMQError:
            ready = True
        if ready:
            self._readable.set()

    async def recv_batch(self, limit: int = RECV_BATCH, timeout: float | None = None) -> list[list[zmq.Frame]]:
        """Drain up to ``limit`` messages, waiting (up to ``timeout`` seconds) for the first."""
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "the channel is closed")
            batch = self.drain(limit)
            if batch:
                return batch
            self._readable.clear()
            self._check()
            if self._readable.is_set():
                continue
            left = None if deadline is None else deadline - self._loop.time()
            if left is not None and left <= 0:
                return []
            try:
                async with asyncio.timeout(left):
                    await self._readable.wait()
            except TimeoutError:
                return self.drain(limit)

    def drain(self, limit: int = RECV_BATCH) -> list[list[zmq.Frame]]:
        batch: list[list[zmq.Frame]] = []
        raw = self._raw
        while len(batch) < limit:
            try:
                batch.append(raw.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        self.received += len(batch)
        return batch

    def send(self, frames: list[bytes]) -> bool:
        """Queue one message without blocking; False (and counted) if the peer is full or gone."""
        try:
            self._raw.send_multipart(frames, zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            self.send_dropped += 1
            return False
        finally:
            self._check()
        self.sent += 1
        return True

    def close(self, linger: int = 0) -> None:
        """Close the socket; ``linger`` ms to deliver what is still queued (0: drop it)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self._readable.set()
            self.sock.close(linger=linger)
