"""The agent's sd_notify socket: ``READY=1`` from an instance's processes makes it ready.

A template with ``notify = true`` has its processes started with ``NOTIFY_SOCKET`` naming one
unix datagram socket per agent (``notify.sock`` in a 0700 directory: the agent's state dir),
as systemd does, so daemons that call ``sd_notify(0, "READY=1")`` (or run ``systemd-notify
--ready``) work unchanged. The socket has ``SO_PASSCRED`` on: the kernel stamps every datagram
with the sender's pid, which cannot be forged, and ``owner_of`` maps it to an instance (the
instance's own pid, or any process of its session or below it: a worker the daemon forked, a
``systemd-notify`` its script ran).

What a datagram says (newline-separated ``KEY=VALUE``): ``READY=1`` is acted on; ``STATUS=``,
``STOPPING=1`` and the rest are logged at debug and otherwise ignored. Datagrams are bounded
(``MAX_DATAGRAM``; a longer one is cut and dropped), at most ``MAX_BATCH`` are read per wakeup
so a flood cannot hold the loop, and nothing a sender writes can raise out of the reader.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Callable

log = logging.getLogger("gaffer.notify")

SOCKET_NAME = "notify.sock"
MAX_DATAGRAM = 4_096
MAX_BATCH = 256
MAX_DEPTH = 64
"""Parents walked up from a sender to find the instance it belongs to."""
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(_CREDS.size)

OnReady = Callable[[int, str], None]
"""Told the sender's pid and the datagram's text when it says ``READY=1``."""


def parse(data: bytes) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a datagram (bad bytes replaced, lines without ``=`` dropped)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def says_ready(data: bytes) -> bool:
    return parse(data).get("READY") == "1"


class NotifySocket:
    """One bound datagram socket, read on the loop; ``close`` unbinds it."""

    def __init__(self, directory: Path, on_ready: OnReady) -> None:
        self.path = directory / SOCKET_NAME
        self._on_ready = on_ready
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0
        self.dropped = 0

    def open(self) -> str:
        """Bind (replacing a socket an earlier agent left) and start reading; the path."""
        if self._sock is not None:
            return str(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        return str(self.path)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_BATCH):
            try:
                data, ancillary, flags, _ = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket: %s", exc)
                return
            self._take(data, ancillary, flags)

    def _take(self, data: bytes, ancillary: list, flags: int) -> None:
        self.received += 1
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _CREDS.size:
                pid = _CREDS.unpack_from(payload)[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                _close_fds(payload)  # FDSTORE is not supported: never keep what a sender passed
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not pid:
            self.dropped += 1
            log.debug("notify socket: dropped a datagram (too long, or no sender)")
            return
        if says_ready(data):
            self._on_ready(pid, data.decode("utf-8", "replace").strip())
        else:
            log.debug("notify socket: pid %d says %r", pid, data[:200])

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass


def _close_fds(payload: bytes) -> None:
    fds = array.array("i")
    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def owner_of(pid: int, leaders: Callable[[int], object | None]) -> object | None:
    """What ``leaders`` gives for the instance ``pid`` belongs to: ``pid`` itself, its session
    (every instance leads one) or, for a process that made a session of its own, the nearest
    ancestor that is a leader (at most MAX_DEPTH up). None when no instance owns it, or it is
    gone already."""
    owner = leaders(pid)
    if owner is not None:
        return owner
    stat = _stat(pid)
    if stat is None:
        return None
    ppid, sid = stat
    owner = leaders(sid)
    for _ in range(MAX_DEPTH):
        if owner is not None or ppid <= 1:
            return owner
        owner = leaders(ppid)
        stat = _stat(ppid)
        if stat is None:
            return owner
        ppid = stat[0]
    return owner


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) from /proc/<pid>/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None
