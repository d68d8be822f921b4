"""The fd keeper: holds the agent's pipe ends so managed processes outlive the agent.

A captured instance writes into a pipe whose read end the agent holds. If the agent dies, the
next write gets SIGPIPE (or blocks for ever once the pipe buffer fills). The keeper is one small
process per host, outside the agent, that holds a duplicate of every such pipe end::

    agent ──deposit(key, fds)──▶ keeper          holds duplicates, never reads them
    agent dies (EOF on its link)  keeper          drains out/err into bounded buffers
    agent' ──reclaim()─────────▶ keeper ──fds + buffered bytes──▶ agent'
                                  keeper          holds again, reads nothing

It is single-threaded (one ``selectors`` loop), bounded everywhere (held descriptors by
RLIMIT_NOFILE, buffers per stream, request sizes, the reply queue) and answers a malformed
request with an error rather than crashing. With no agent and no live stream for
``--idle-timeout`` seconds it exits by itself (``idle_left``): an output pipe is live until
its writers are gone (end of file), a stdin pipe until its reader is gone (the write end
then reports an error), and once every stream of a key has ended the key counts for nothing,
however much it buffered.

Wire: each frame is a ``!IB`` header (body length, number of descriptors) and a msgpack map.
Descriptors travel as SCM_RIGHTS in the same ``sendmsg`` as the frame's first byte, so the
kernel hands them over no later than the header; the receiver queues them and each frame takes
as many as its header declares. Requests carry ``op`` and ``id``; every reply echoes the ``id``
with ``ok`` or ``error: {code, message}``. On accept the keeper sends ``welcome`` (or
``refused`` and closes, when another agent is connected).
"""

from __future__ import annotations

import argparse
import array
import collections
import fcntl
import functools
import logging
import os
import resource
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

log = logging.getLogger("gaffer.keeper")

PROTOCOL = 1
HEADER = struct.Struct("!IB")
MAX_FDS_PER_FRAME = 253
ANC_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * array.array("i").itemsize)
MAX_REQUEST = 64 * 1024
MAX_BUFFER_KIB = 4096
MAX_REPLY = 2 * MAX_BUFFER_KIB * 1024 + 64 * 1024
MAX_KEY = 200
STREAMS = ("out", "err", "in")
DRAINED = ("out", "err")
READ_CHUNK = 65536
RECV_CHUNK = 262144
OUTBOX_HIGH = 1024 * 1024
FD_RESERVE = 64
MAX_ERROR_LOGS = 100
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_BUFFER_KIB = 64


# ----------------------------------------------------------------------------- framing


def encode_frame(body: dict[str, Any], nfds: int = 0) -> bytes:
    """One frame: header then the msgpack body."""
    data = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(data), nfds) + data


@dataclass
class Frame:
    """A frame off the wire: its decoded body, or ``error`` saying why there is none."""

    body: dict[str, Any] | None
    fds: list[int]
    error: str | None = None


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
            _close(self._fds.popleft())


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


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ----------------------------------------------------------------------------- state


class RequestError(Exception):
    """A request the keeper refuses; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Held:
    """One instance's pipe ends and what was drained from them while no agent was there."""

    fds: dict[str, int]
    buffers: dict[str, bytearray] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    eof: set[str] = field(default_factory=set)
    draining: bool = False
    watched: set[str] = field(default_factory=set)
    """Streams registered with the selector while draining."""


@dataclass(frozen=True)
class Limits:
    buffer_bytes: int
    max_fds: int
    idle_timeout: float


class _Conn:
    """The agent's connection: inbound frames, and replies waiting for the socket."""

    def __init__(self, sock: socket.socket, peer_pid: int) -> None:
        self.sock = sock
        self.peer_pid = peer_pid
        self.decoder = FrameDecoder(MAX_REQUEST)
        self.outbox: collections.deque[list[Any]] = collections.deque()
        self.outbox_bytes = 0
        self.errors = 0
        self.events = 0


# ----------------------------------------------------------------------------- the keeper


class Keeper:
    """The keeper's loop. ``run`` returns the reason it stopped."""

    def __init__(self, listener: socket.socket, limits: Limits) -> None:
        self.limits = limits
        self._listener = listener
        self._sel = selectors.DefaultSelector()
        self._held: dict[str, Held] = {}
        self._nfds = 0
        self._agent: _Conn | None = None
        self._idle_since: float | None = time.monotonic()
        self._stop: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        listener.setblocking(False)
        self._sel.register(listener, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    def run(self) -> str:
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while self._stop is None:
            timeout = self._idle_left()
            if timeout is not None and timeout <= 0:
                self._stop = f"idle: nothing held and no agent for {self.limits.idle_timeout:g}s"
                break
            for key, mask in self._sel.select(timeout):
                try:
                    key.data(mask)
                except Exception as exc:  # a bug must not drop every held pipe with the keeper
                    log.error("internal error, carrying on: %r", exc)
        self._shutdown()
        return self._stop

    def _idle_left(self) -> float | None:
        self._idle_since, left = idle_left(
            self._agent is not None, self._nfds, self._idle_since, self.limits.idle_timeout,
            time.monotonic(),
        )
        return left

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = f"signal {signal.Signals(signum).name}"

    def _on_wake(self, mask: int) -> None:
        try:
            os.read(self._wake_r, 256)
        except BlockingIOError:
            pass

    def _shutdown(self) -> None:
        if self._agent is not None:
            self._drop_agent()
        for held in self._held.values():
            self._close_held(held)
        self._held.clear()
        self._sel.close()

    # ------------------------------------------------------------------------- connections

    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid not in (0, os.geteuid()):
            self._refuse(sock, "forbidden", f"uid {uid} may not use this keeper (it runs as uid {os.geteuid()})")
            return
        if self._agent is not None and _hung_up(self._agent.sock):
            self._read_agent()
        if self._agent is not None:
            self._refuse(
                sock, "keeper_busy",
                f"another agent (pid {self._agent.peer_pid}) is connected to this keeper",
            )
            log.warning("refused agent pid %d: agent pid %d is connected", pid, self._agent.peer_pid)
            return
        conn = self._agent = _Conn(sock, pid)
        conn.events = selectors.EVENT_READ
        self._sel.register(sock, conn.events, functools.partial(self._on_agent, conn))
        draining = sum(1 for held in self._held.values() if held.draining)
        log.info("agent pid %d connected; holding %d keys (%d draining)", pid, len(self._held), draining)
        self._send({"op": "welcome", "protocol": PROTOCOL, "pid": os.getpid(), "held": len(self._held)})

    def _refuse(self, sock: socket.socket, code: str, message: str) -> None:
        try:
            sock.send(encode_frame({"op": "refused", "error": {"code": code, "message": message}}))
        except OSError:
            pass
        sock.close()

    def _on_agent(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and self._agent is conn:
            self._flush()
        if mask & selectors.EVENT_READ and self._agent is conn:
            self._read_agent()

    def _read_agent(self) -> None:
        """Read what the agent sent (all of it if it hung up, so no deposit is lost)."""
        conn = self._agent
        assert conn is not None
        for _ in range(64):
            try:
                data, fds, truncated = recv_with_fds(conn.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("agent pid %d: %s", conn.peer_pid, exc)
                data, fds, truncated = b"", [], False
            if truncated:
                log.error("agent pid %d: descriptors were truncated in transit", conn.peer_pid)
            for frame in conn.decoder.feed(data, fds):
                self._handle(frame)
            if not data:
                self._agent_gone()
                return
            if self._agent is not conn or conn.outbox_bytes > OUTBOX_HIGH:
                return

    def _agent_gone(self) -> None:
        conn = self._agent
        assert conn is not None
        self._drop_agent()
        count = 0
        for key, held in self._held.items():
            if not held.draining:
                held.draining = True
                count += self._start_draining(key, held)
        log.info("agent pid %d gone; draining %d streams of %d keys", conn.peer_pid, count, len(self._held))

    def _drop_agent(self) -> None:
        conn = self._agent
        assert conn is not None
        self._agent = None
        self._sel.unregister(conn.sock)
        conn.decoder.close()
        for _, fds in conn.outbox:
            for fd in fds:
                _close(fd)
        conn.outbox.clear()
        conn.sock.close()

    def _send(self, body: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
        """Send now if the socket takes it; queue the rest (with private duplicates of fds)."""
        conn = self._agent
        if conn is None:
            return
        data = memoryview(encode_frame(body, len(fds)))
        if not conn.outbox:
            try:
                sent = send_with_fds(conn.sock, data, fds)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return
            if sent == len(data):
                return
            if sent:
                data, fds = data[sent:], ()
        conn.outbox.append([data, [os.dup(fd) for fd in fds]])
        conn.outbox_bytes += len(data)
        self._watch_agent()

    def _flush(self) -> None:
        conn = self._agent
        assert conn is not None
        while conn.outbox:
            data, fds = conn.outbox[0]
            try:
                sent = send_with_fds(conn.sock, data, fds)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                conn.outbox_bytes = 0
                for _, queued in conn.outbox:
                    for fd in queued:
                        _close(fd)
                conn.outbox.clear()
                break
            for fd in fds:
                _close(fd)
            conn.outbox[0] = [data[sent:], []]
            conn.outbox_bytes -= sent
            if sent == len(data):
                conn.outbox.popleft()
        self._watch_agent()

    def _watch_agent(self) -> None:
        """Write interest while replies wait; read interest only while the reply queue is short."""
        conn = self._agent
        assert conn is not None
        events = selectors.EVENT_WRITE if conn.outbox else 0
        if conn.outbox_bytes <= OUTBOX_HIGH:
            events |= selectors.EVENT_READ
        if events != conn.events:
            conn.events = events
            self._sel.modify(conn.sock, events, functools.partial(self._on_agent, conn))

    # ------------------------------------------------------------------------- requests

    def _handle(self, frame: Frame) -> None:
        body = frame.body or {}
        rid = body.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            rid = None
        try:
            if frame.error is not None:
                raise RequestError("invalid_request", frame.error)
            op = body.get("op")
            handler = self._ops().get(op) if isinstance(op, str) else None
            if handler is None:
                known = ", ".join(self._ops())
                raise RequestError("invalid_request", f"op: unknown operation {op!r} (use {known})")
            if frame.fds and op != "deposit":
                raise RequestError("invalid_request", f"{op}: takes no descriptors, got {len(frame.fds)}")
            handler(rid, body, frame.fds)
        except RequestError as exc:
            for fd in frame.fds:
                _close(fd)
            self._log_error(exc.message)
            self._send({"id": rid, "error": {"code": exc.code, "message": exc.message}})

    def _ops(self) -> dict[str, Callable[[int | None, dict[str, Any], list[int]], None]]:
        return {
            "deposit": self._op_deposit,
            "release": self._op_release,
            "reclaim": self._op_reclaim,
            "status": self._op_status,
        }

    def _log_error(self, message: str) -> None:
        conn = self._agent
        if conn is None:
            return
        conn.errors += 1
        if conn.errors <= MAX_ERROR_LOGS:
            log.warning("agent pid %d: request refused: %s", conn.peer_pid, message)

    def _op_deposit(self, rid: int | None, body: dict[str, Any], fds: list[int]) -> None:
        key = _key(body, "deposit")
        streams = body.get("streams")
        if not isinstance(streams, list) or not streams:
            raise RequestError("invalid_request", "deposit.streams: must be a non-empty list of stream names")
        if len(streams) != len(fds):
            raise RequestError(
                "invalid_request", f"deposit.streams: names {len(streams)} streams but {len(fds)} descriptors came"
            )
        for index, (name, fd) in enumerate(zip(streams, fds)):
            _check_stream(f"deposit.streams[{index}]", name, fd)
        if len(set(streams)) != len(streams):
            raise RequestError("invalid_request", "deposit.streams: a stream is named twice")
        old = self._held.get(key)
        in_use = self._nfds - (len(old.fds) if old else 0)
        if in_use + len(fds) > self.limits.max_fds:
            raise RequestError(
                "keeper_full", f"the keeper holds {self._nfds} descriptors, its limit is {self.limits.max_fds}"
            )
        if old is not None:
            self._forget(key)
        held = Held(dict(zip(streams, fds)))
        self._held[key] = held
        self._nfds += len(fds)
        self._send({"id": rid, "ok": True})

    def _op_release(self, rid: int | None, body: dict[str, Any], fds: list[int]) -> None:
        key = _key(body, "release")
        streams = body.get("streams")
        if streams is not None and (
            not isinstance(streams, list) or any(s not in STREAMS for s in streams)
        ):
            raise RequestError("invalid_request", f"release.streams: must be a list of {', '.join(STREAMS)}")
        held = self._held.get(key)
        if held is not None and streams is not None:
            for name in streams:
                self._close_stream(held, name)
            if held.fds:
                self._send({"id": rid, "ok": True, "held": True})
                return
        if held is not None:
            self._forget(key)
        self._send({"id": rid, "ok": True, "held": held is not None})

    def _op_reclaim(self, rid: int | None, body: dict[str, Any], fds: list[int]) -> None:
        """Hand every held descriptor back with what was drained; then only hold again."""
        count = 0
        for key, held in list(self._held.items()):
            if held.draining:
                for name in held.watched:
                    self._sel.unregister(held.fds[name])
                held.watched.clear()
                held.draining = False
            names = list(held.fds)
            item = {
                "key": key,
                "streams": names,
                "buffered": {name: bytes(buf) for name, buf in held.buffers.items() if buf},
                "dropped": {name: n for name, n in held.dropped.items() if n},
                "eof": sorted(held.eof),
            }
            self._send({"id": rid, "item": item}, [held.fds[name] for name in names])
            held.buffers.clear()
            held.dropped.clear()
            held.eof.clear()
            count += 1
            if not held.fds:
                del self._held[key]
        log.info("reclaim: handed back %d keys", count)
        self._send({"id": rid, "ok": True, "count": count})

    def _op_status(self, rid: int | None, body: dict[str, Any], fds: list[int]) -> None:
        reply: dict[str, Any] = {
            "id": rid,
            "ok": True,
            "pid": os.getpid(),
            "keys": len(self._held),
            "fds": self._nfds,
            "max_fds": self.limits.max_fds,
            "buffer_bytes": self.limits.buffer_bytes,
            "draining": sum(1 for held in self._held.values() if held.draining),
            "buffered": sum(len(b) for held in self._held.values() for b in held.buffers.values()),
        }
        if "key" in body:
            held = self._held.get(_key(body, "status"))
            reply["key"] = None if held is None else {
                "streams": sorted(held.fds),
                "eof": sorted(held.eof),
                "draining": held.draining,
                "buffered": {name: len(buf) for name, buf in held.buffers.items()},
                "dropped": dict(held.dropped),
            }
        self._send(reply)

    # ------------------------------------------------------------------------- holding

    def _forget(self, key: str) -> None:
        held = self._held.pop(key)
        self._close_held(held)

    def _close_held(self, held: Held) -> None:
        for name in list(held.fds):
            self._close_stream(held, name)

    def _close_stream(self, held: Held, name: str) -> None:
        fd = held.fds.pop(name, None)
        if fd is None:
            return
        if name in held.watched:
            held.watched.discard(name)
            self._sel.unregister(fd)
        self._nfds -= 1
        _close(fd)

    def _start_draining(self, key: str, held: Held) -> int:
        """Read out/err into buffers; watch stdin's write end for its reader going away
        (epoll reports an error on it then), so a finished process holds nothing here."""
        count = 0
        for name in STREAMS:
            fd = held.fds.get(name)
            if fd is None:
                continue
            os.set_blocking(fd, False)
            callback = self._on_pipe if name in DRAINED else self._on_stdin
            self._sel.register(fd, selectors.EVENT_READ, functools.partial(callback, key, held, name))
            held.watched.add(name)
            count += name in DRAINED
        return count

    def _on_stdin(self, key: str, held: Held, name: str, mask: int) -> None:
        """The write end of a stdin pipe polls as ready only when its reader is gone."""
        fd = held.fds.get(name)
        if fd is None or not held.draining:
            return
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            self._close_stream(held, name)
            held.eof.add(name)
            log.info("%s.%s: its reader is gone", key, name)

    def _on_pipe(self, key: str, held: Held, name: str, mask: int) -> None:
        """Read one chunk; keep only the newest ``buffer_bytes``; note EOF and let go."""
        fd = held.fds.get(name)
        if fd is None or not held.draining:
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("%s.%s: read failed (%s); treating as closed", key, name, exc)
            data = b""
        if not data:
            self._close_stream(held, name)
            held.eof.add(name)
            log.info("%s.%s: end of output (its writers are gone)", key, name)
            return
        buf = held.buffers.get(name)
        if buf is None:
            buf = held.buffers[name] = bytearray()
        buf += data
        excess = len(buf) - self.limits.buffer_bytes
        if excess > 0:
            del buf[:excess]
            held.dropped[name] = held.dropped.get(name, 0) + excess


def idle_left(
    agent: bool, live_fds: int, idle_since: float | None, timeout: float, now: float
) -> tuple[float | None, float | None]:
    """(idle since, seconds left before exiting): idle is no agent and no live descriptor.

    Idle starts at the first moment both hold and is forgotten as soon as either stops
    holding; ``seconds left`` is None while not idle (wait for events, no timeout)."""
    if agent or live_fds:
        return None, None
    since = now if idle_since is None else idle_since
    return since, since + timeout - now


def _key(body: dict[str, Any], op: str) -> str:
    key = body.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise RequestError("invalid_request", f"{op}.key: must be a string of 1 to {MAX_KEY} characters")
    return key


def _check_stream(where: str, name: Any, fd: int) -> None:
    """A stream must be a pipe end of the right direction: out/err read ends, in a write end."""
    if name not in STREAMS:
        raise RequestError("invalid_request", f"{where}: {name!r} is not one of {', '.join(STREAMS)}")
    try:
        mode = os.fstat(fd).st_mode
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError as exc:
        raise RequestError("invalid_request", f"{where}: descriptor unusable: {exc.strerror}") from None
    if not stat.S_ISFIFO(mode):
        raise RequestError("invalid_request", f"{where}: descriptor for {name!r} is not a pipe")
    wanted = os.O_WRONLY if name == "in" else os.O_RDONLY
    if access != wanted:
        end = "write" if name == "in" else "read"
        raise RequestError("invalid_request", f"{where}: descriptor for {name!r} must be a pipe's {end} end")


def _hung_up(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(events & (select.POLLHUP | select.POLLRDHUP) for _, events in poller.poll(0))


# ----------------------------------------------------------------------------- startup


class StartupError(Exception):
    """The keeper cannot start; ``busy`` when another keeper already serves the socket."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


def lock_path(path: str) -> str:
    """The lock file beside the socket; it holds the serving keeper's pid."""
    return path + ".lock"


def take_lock(path: str) -> int:
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartupError(f"another keeper (pid {owner}) already serves {path}", busy=True) from None
    return fd


def bind(path: str) -> socket.socket:
    """Listen on ``path`` (mode 0600); a stale socket there is replaced, anything else refused."""
    if len(os.fsencode(path)) > 107:
        raise StartupError(f"--socket: {path!r} is longer than the 107 bytes a unix socket path allows")
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise StartupError(f"--socket: {path!r} exists and is not a socket")
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"--socket: cannot listen on {path!r}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def fd_budget(requested: int | None) -> int:
    """Descriptors the keeper may hold: half of what RLIMIT_NOFILE leaves (reclaim may dup)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    budget = max(0, (soft - FD_RESERVE) // 2)
    return budget if requested is None else min(requested, budget)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gaffer.agent.keeper", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="unix socket path (in the agent's state dir)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
                        help="exit after this many seconds with nothing held and no agent")
    parser.add_argument("--buffer-kib", type=int, default=DEFAULT_BUFFER_KIB,
                        help="newest output kept per stream while no agent is connected")
    parser.add_argument("--max-fds", type=int, help="hold at most this many descriptors")
    parser.add_argument("--ready-fd", type=int, help="write 'ready' or 'error: ...' here once listening")
    parser.add_argument("--detach", action="store_true", help="fork into the background once listening")
    return parser


def _limits(args: argparse.Namespace) -> Limits:
    if not 0 < args.idle_timeout <= 86400:
        raise StartupError("--idle-timeout: must be more than 0 and at most 86400 seconds")
    if not 1 <= args.buffer_kib <= MAX_BUFFER_KIB:
        raise StartupError(f"--buffer-kib: must be 1 to {MAX_BUFFER_KIB}")
    if args.max_fds is not None and args.max_fds < 1:
        raise StartupError("--max-fds: must be at least 1")
    return Limits(args.buffer_kib * 1024, fd_budget(args.max_fds), args.idle_timeout)


def _report(ready_fd: int | None, line: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, line.encode() + b"\n")
        os.close(ready_fd)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keeper[%(process)d] %(levelname)s: %(message)s")
    try:
        limits = _limits(args)
        lock_fd = take_lock(args.socket)
        listener = bind(args.socket)
    except StartupError as exc:
        log.error("%s", exc)
        _report(args.ready_fd, ("busy: " if exc.busy else "error: ") + str(exc))
        return 3 if exc.busy else 2
    if args.detach and os.fork() > 0:
        os._exit(0)
    if args.detach:
        os.chdir("/")
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    inode = os.stat(args.socket).st_ino
    log.info(
        "listening on %s (idle timeout %gs, %d KiB per stream, up to %d descriptors)",
        args.socket, limits.idle_timeout, limits.buffer_bytes // 1024, limits.max_fds,
    )
    _report(args.ready_fd, f"ready {os.getpid()}")
    reason = Keeper(listener, limits).run()
    try:
        if os.stat(args.socket).st_ino == inode:
            os.unlink(args.socket)
    except FileNotFoundError:
        pass
    log.info("exiting: %s", reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
