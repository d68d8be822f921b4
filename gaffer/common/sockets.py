"""ZeroMQ sockets configured the one safe way, without an event loop.

Every socket gets high-water marks, ``LINGER`` and ``MAXMSGSIZE`` so nothing queues without
bound and no oversized frame is ever allocated. Binding and connecting turn ZMQ's errors into a
ConfigError that says what failed. Nothing here imports asyncio: the blocking ``Client`` (and so
``gafferctl``) uses these on plain sockets, and ``transport`` wraps them in a ``Channel`` for the
daemons' loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zmq

from gaffer.common.endpoints import Endpoint
from gaffer.common.errors import ConfigError
from gaffer.common.protocol import MAX_MESSAGE

if TYPE_CHECKING:
    from gaffer.common.keys import KeyPair

DEFAULT_HWM = 1_000


def new_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    hwm: int = DEFAULT_HWM,
    linger: int = 0,
    maxmsgsize: int = MAX_MESSAGE,
) -> zmq.Socket:
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
