"""ZeroMQ sockets configured the one safe way, and batched receive/send.

Every socket gets high-water marks, ``LINGER`` and ``MAXMSGSIZE`` so nothing queues without
bound and no oversized frame is ever allocated. Receiving waits for readability once and then
drains with non-blocking reads (about ten times the rate of awaiting each ``recv`` on a
``zmq.asyncio`` socket); sending is non-blocking and drops (counted) when a peer's queue is
full, because a stalled peer must never stall the loop.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any, Protocol, Sequence

import zmq
import zmq.asyncio

from gaffer.common.endpoints import Endpoint
from gaffer.common.errors import ConfigError
from gaffer.common.keys import KeyPair
from gaffer.common.protocol import MAX_MESSAGE

DEFAULT_HWM = 1_000
RECV_BATCH = 1_000


def new_socket(
    ctx: zmq.asyncio.Context,
    kind: int,
    *,
    hwm: int = DEFAULT_HWM,
    linger: int = 0,
    maxmsgsize: int = MAX_MESSAGE,
) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger)
    sock.setsockopt(zmq.MAXMSGSIZE, maxmsgsize)
    return sock


def bind(sock: zmq.Socket, endpoint: Endpoint, what: str = "listen") -> str:
    """Bind ``endpoint`` (IPv6 enabled when it names an IPv6 host); the address actually
    bound (a ``*`` port resolved), or ConfigError saying why not (port in use, no such
    address) instead of a ZMQ traceback."""
    if endpoint.ipv6:
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.bind(str(endpoint))
    except zmq.ZMQError as exc:
        hint = " (is another gaffer running there?)" if exc.errno == zmq.EADDRINUSE else ""
        raise ConfigError(f"cannot {what} on {endpoint}: {exc.strerror}{hint}") from None
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def connect(sock: zmq.Socket, endpoint: Endpoint) -> None:
    """Connect to ``endpoint`` (IPv6 enabled when it names an IPv6 host); ConfigError if ZMQ
    refuses the address."""
    if endpoint.ipv6:
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.connect(str(endpoint))
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot connect to {endpoint}: {exc.strerror}") from None


def make_curve_server(sock: zmq.Socket, keys: KeyPair, domain: str) -> None:
    """Authenticate every peer through ZAP under ``domain`` and encrypt the link."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = domain.encode()


def make_curve_client(sock: zmq.Socket, keys: KeyPair, server_public: bytes) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public


def set_domain(sock: zmq.Socket, domain: str) -> None:
    """Send NULL-mechanism peers through ZAP too, so a handler can count and refuse them."""
    sock.zap_domain = domain.encode()


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


def user_id(frame: zmq.Frame) -> str | None:
    """The identity ZAP attached to a received frame (None without authentication)."""
    return _property(frame, "User-Id")


def peer_address(frame: zmq.Frame) -> str | None:
    """The IP address the frame came from, as libzmq saw it."""
    return _property(frame, "Peer-Address")


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        value = frame.get(name)
    except (zmq.ZMQError, KeyError):
        return None
    return value or None
