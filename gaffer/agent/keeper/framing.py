"""The keeper's frame codec, shared by the keeper (server.py) and the agent (client.py).

Wire: each frame is a ``!IB`` header (body length, number of descriptors) and a msgpack map.
Descriptors travel as SCM_RIGHTS in the same ``sendmsg`` as the frame's first byte, so the
kernel hands them over no later than the header; the receiver queues them and each frame takes
as many as its header declares. Requests carry ``op`` and ``id``; every reply echoes the ``id``
with ``ok`` or ``error: {code, message}``. On accept the keeper sends ``welcome`` (or
``refused`` and closes, when another agent is connected).

A keeper outlives the agent that started it, so a new agent talks to a keeper started by an
older one: this format is kept byte for byte within a ``PROTOCOL`` (tests/fixtures holds a
recorded conversation of protocol 1 that today's code must reproduce).
"""

from __future__ import annotations

import array
import collections
import os
import socket
import struct

import msgpack

TYPE_CHECKING = False  # typing itself is not imported: see the package docstring
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
HEADER = struct.Struct("!IB")
MAX_FDS_PER_FRAME = 253
ANC_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * array.array("i").itemsize)
MAX_REQUEST = 64 * 1024
MAX_BUFFER_KIB = 4096
MAX_REPLY = 2 * MAX_BUFFER_KIB * 1024 + 64 * 1024
MAX_KEY = 200
STREAMS = ("out", "err", "in")
RECV_CHUNK = 262144


def encode_frame(body: dict[str, Any], nfds: int = 0) -> bytes:
    """One frame: header then the msgpack body."""
    data = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(data), nfds) + data


class Frame:
    """A frame off the wire: its decoded body, or ``error`` saying why there is none."""

    __slots__ = ("body", "fds", "error")

    def __init__(self, body: dict[str, Any] | None, fds: list[int], error: str | None = None) -> None:
        self.body = body
        self.fds = fds
        self.error = error

    def __repr__(self) -> str:
        return f"Frame(body={self.body!r}, fds={self.fds!r}, error={self.error!r})"


class FrameDecoder:
    """Splits a byte stream into frames and gives each the descriptors its header declared.

    Bodies longer than ``max_body`` are skipped (the length says where the next frame starts)
    and reported as an error frame, so one bad request never desynchronises the stream.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._skip = 0

    def feed(self, data: bytes, fds: list[int]) -> list[Frame]:
        self._fds.extend(fds)
        if self._skip:
            used = min(self._skip, len(data))
            self._skip -= used
            data = data[used:]
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER.size:
            length, nfds = HEADER.unpack_from(self._buf)
            taken = self._take(nfds)
            if length > self.max_body:
                rest = len(self._buf) - HEADER.size
                self._skip = max(0, length - rest)
                del self._buf[: HEADER.size + min(length, rest)]
                error = f"frame of {length} bytes exceeds the {self.max_body} byte limit"
                frames.append(Frame(None, taken, error))
                continue
            if len(self._buf) < HEADER.size + length:
                self._untake(taken)
                break
            raw = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            frames.append(_decode(raw, taken, nfds))
        return frames

    def _take(self, count: int) -> list[int]:
        return [self._fds.popleft() for _ in range(min(count, len(self._fds)))]

    def _untake(self, fds: list[int]) -> None:
        self._fds.extendleft(reversed(fds))

    def close(self) -> None:
        """Close descriptors that arrived but were never claimed by a frame."""
        while self._fds:
            close_fd(self._fds.popleft())


def _decode(raw: bytes, fds: list[int], declared: int) -> Frame:
    if len(fds) != declared:
        return Frame(None, fds, f"frame declared {declared} descriptors but {len(fds)} arrived")
    try:
        body = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        return Frame(None, fds, f"body is not msgpack: {exc}")
    if not isinstance(body, dict):
        return Frame(None, fds, f"body must be a map, got {type(body).__name__}")
    return Frame(body, fds)


def recv_with_fds(sock: socket.socket, size: int = RECV_CHUNK) -> tuple[bytes, list[int], bool]:
    """One ``recvmsg``: data, descriptors (close-on-exec), and whether some were truncated."""
    data, ancillary, flags, _ = sock.recvmsg(size, ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, cdata in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
            fds.extend(got)
    return data, fds, bool(flags & socket.MSG_CTRUNC)


def send_with_fds(sock: socket.socket, data: bytes | memoryview, fds: list[int] | tuple[int, ...]) -> int:
    """One ``sendmsg``; the descriptors go with the first byte sent."""
    if fds:
        return sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    return sock.send(data)



def close_fd(fd: int) -> None:
    """Close ``fd``, ignoring one that is already closed."""
    try:
        os.close(fd)
    except OSError:
        pass
