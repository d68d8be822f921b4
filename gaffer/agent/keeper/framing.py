"""The keeper's frame codec, shared by the keeper (server.py) and the agent (client.py).

Wire: each frame is a ``!IB`` header (body length, number of descriptors) and a msgpack map
(packed by ``packing``, plain Python: see there why not the msgpack package).
Descriptors travel as SCM_RIGHTS in the same ``sendmsg`` as the frame's first byte, so the
kernel hands them over no later than the header; the receiver queues them and each frame takes
as many as its header declares. Requests carry ``op`` and ``id``; every reply echoes the ``id``
with ``ok`` or ``error: {code, message}``. On accept the keeper sends ``welcome`` (or
``refused`` and closes, when another agent is connected).

A keeper outlives the agent that started it, so a new agent talks to a keeper started by an
older one: this format is kept byte for byte within a ``PROTOCOL`` (tests/fixtures holds a
recorded conversation of protocol 1 that today's code must reproduce).

Both sides use this module, the keeper on a bare ``_socket.socket`` and the agent on a
``socket.socket`` (its subclass): the keeper imports neither ``socket`` (with ``enum``, about
0.6 MB) nor ``array`` and ``collections`` (0.5 MB), so descriptors are packed with ``struct``.
"""

from __future__ import annotations

import os
import struct
from _socket import CMSG_SPACE, MSG_CMSG_CLOEXEC, MSG_CTRUNC, SCM_RIGHTS, SOL_SOCKET

from gaffer.agent.keeper.packing import UnpackError, pack, unpack

TYPE_CHECKING = False  # typing itself is not imported: see the package docstring
if TYPE_CHECKING:
    from typing import Any

    from _socket import socket

PROTOCOL = 1
HEADER = struct.Struct("!IB")
MAX_FDS_PER_FRAME = 253
FD_SIZE = struct.calcsize("i")
ANC_SPACE = CMSG_SPACE(MAX_FDS_PER_FRAME * FD_SIZE)
MAX_REQUEST = 64 * 1024
MAX_BUFFER_KIB = 4096
MAX_REPLY = 2 * MAX_BUFFER_KIB * 1024 + 64 * 1024
MAX_KEY = 200
STREAMS = ("out", "err", "in")
RECV_CHUNK = 262144


def encode_frame(body: dict[str, Any], nfds: int = 0) -> bytes:
    """One frame: header then the msgpack body."""
    data = pack(body)
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
        self._fds: list[int] = []
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
        taken = self._fds[:count]
        del self._fds[:count]
        return taken

    def _untake(self, fds: list[int]) -> None:
        self._fds[:0] = fds

    def close(self) -> None:
        """Close descriptors that arrived but were never claimed by a frame."""
        fds, self._fds = self._fds, []
        for fd in fds:
            close_fd(fd)


def _decode(raw: bytes, fds: list[int], declared: int) -> Frame:
    if len(fds) != declared:
        return Frame(None, fds, f"frame declared {declared} descriptors but {len(fds)} arrived")
    try:
        body = unpack(raw)
    except UnpackError as exc:
        return Frame(None, fds, f"body is not msgpack: {exc}")
    if not isinstance(body, dict):
        return Frame(None, fds, f"body must be a map, got {type(body).__name__}")
    return Frame(body, fds)


def recv_with_fds(sock: socket, size: int = RECV_CHUNK) -> tuple[bytes, list[int], bool]:
    """One ``recvmsg``: data, descriptors (close-on-exec), and whether some were truncated."""
    data, ancillary, flags, _ = sock.recvmsg(size, ANC_SPACE, MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, cdata in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            count = len(cdata) // FD_SIZE
            fds.extend(struct.unpack_from(f"{count}i", cdata))
    return data, fds, bool(flags & MSG_CTRUNC)


def send_with_fds(sock: socket, data: bytes | memoryview, fds: list[int] | tuple[int, ...]) -> int:
    """One ``sendmsg``; the descriptors go with the first byte sent."""
    if fds:
        return sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    return sock.send(data)


def close_fd(fd: int) -> None:
    """Close ``fd``, ignoring one that is already closed."""
    try:
        os.close(fd)
    except OSError:
        pass
