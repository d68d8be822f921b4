"""The keeper process's loop: it holds pipe ends for the agent, and drains them while no agent is there.

It is single-threaded (one ``epoll`` loop), bounded everywhere (held descriptors by
RLIMIT_NOFILE, buffers per stream, request sizes, the reply queue) and answers a malformed
request with an error rather than crashing. With no agent and no live stream for
``--idle-timeout`` seconds it exits by itself (``idle_left``): an output pipe is live until
its writers are gone (end of file), a stdin pipe until its reader is gone (the write end
then reports an error), and once every stream of a key has ended the key counts for nothing,
however much it buffered.

Requests (``op``): ``deposit`` (a key and its pipe ends), ``release`` (all of a key, or some
streams), ``reclaim`` (every key handed back with fresh descriptors and drained bytes, one
``item`` frame each, then ``ok``), ``status`` (counters, and one key's details).

It runs on the builtin modules under the standard ones (``_socket``, ``_signal``, ``select``'s
epoll rather than ``socket``, ``signal`` and ``selectors``): those bring ``enum``,
``collections`` and ``functools`` along, about 1 MB of a keeper that must stay under 10 MB.
"""

from __future__ import annotations

import _signal
import _socket
import fcntl
import os
import select
import stat
import struct
import time

from gaffer.agent.keeper.framing import (
    MAX_KEY,
    MAX_REQUEST,
    PROTOCOL,
    STREAMS,
    Frame,
    FrameDecoder,
    close_fd,
    encode_frame,
    recv_with_fds,
    send_with_fds,
)
from gaffer.agent.keeper.logline import log
from gaffer.agent.keeper.poller import READ, WRITE, Poller

TYPE_CHECKING = False  # typing itself is not imported: see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable

    from gaffer.agent.keeper.poller import Handler

DRAINED = ("out", "err")
READ_CHUNK = 65536
OUTBOX_HIGH = 1024 * 1024
MAX_ERROR_LOGS = 100
SIGNAL_NAMES = {_signal.SIGTERM: "SIGTERM", _signal.SIGINT: "SIGINT"}


class RequestError(Exception):
    """A request the keeper refuses; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Held:
    """One instance's pipe ends and what was drained from them while no agent was there.

    ``watched``: the streams registered with the selector while draining."""

    __slots__ = ("fds", "buffers", "dropped", "eof", "draining", "watched")

    def __init__(self, fds: dict[str, int]) -> None:
        self.fds = fds
        self.buffers: dict[str, bytearray] = {}
        self.dropped: dict[str, int] = {}
        self.eof: set[str] = set()
        self.draining = False
        self.watched: set[str] = set()


class Limits:
    """What one keeper may hold: bytes buffered per stream, descriptors, idle seconds."""

    __slots__ = ("buffer_bytes", "max_fds", "idle_timeout")

    def __init__(self, buffer_bytes: int, max_fds: int, idle_timeout: float) -> None:
        self.buffer_bytes = buffer_bytes
        self.max_fds = max_fds
        self.idle_timeout = idle_timeout


class _Conn:
    """The agent's connection: inbound frames, and replies waiting for the socket."""

    def __init__(self, sock: _socket.socket, peer_pid: int) -> None:
        self.sock = sock
        self.peer_pid = peer_pid
        self.decoder = FrameDecoder(MAX_REQUEST)
        self.outbox: list[list[Any]] = []
        self.outbox_bytes = 0
        self.errors = 0
        self.events = 0
        self.handler: Handler = _ignore


class Keeper:
    """The keeper's loop. ``run`` returns the reason it stopped."""

    def __init__(self, listener: _socket.socket, limits: Limits) -> None:
        self.limits = limits
        self._listener = listener
        self._sel = Poller()
        self._held: dict[str, Held] = {}
        self._nfds = 0
        self._agent: _Conn | None = None
        self._idle_since: float | None = time.monotonic()
        self._stop: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        listener.setblocking(False)
        self._sel.register(listener.fileno(), READ, self._on_accept)
        self._sel.register(self._wake_r, READ, self._on_wake)

    def run(self) -> str:
        _signal.set_wakeup_fd(self._wake_w)
        for signum in SIGNAL_NAMES:
            _signal.signal(signum, self._on_signal)
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
        while self._stop is None:
            timeout = self._idle_left()
            if timeout is not None and timeout <= 0:
                self._stop = f"idle: nothing held and no agent for {self.limits.idle_timeout:g}s"
                break
            for handler, mask in self._sel.select(timeout):
                try:
                    handler(mask)
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
        self._stop = f"signal {SIGNAL_NAMES.get(signum, signum)}"

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
            fd, _ = self._listener._accept()  # what socket.socket.accept calls: close-on-exec
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
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
        conn.handler = lambda mask: self._on_agent(conn, mask)
        conn.events = READ
        self._sel.register(sock.fileno(), conn.events, conn.handler)
        draining = sum(1 for held in self._held.values() if held.draining)
        log.info("agent pid %d connected; holding %d keys (%d draining)", pid, len(self._held), draining)
        self._send({"op": "welcome", "protocol": PROTOCOL, "pid": os.getpid(), "held": len(self._held)})

    def _refuse(self, sock: _socket.socket, code: str, message: str) -> None:
        try:
            sock.send(encode_frame({"op": "refused", "error": {"code": code, "message": message}}))
        except OSError:
            pass
        sock.close()

    def _on_agent(self, conn: _Conn, mask: int) -> None:
        if mask & WRITE and self._agent is conn:
            self._flush()
        if mask & READ and self._agent is conn:
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
        self._sel.unregister(conn.sock.fileno())
        conn.decoder.close()
        for _, fds in conn.outbox:
            for fd in fds:
                close_fd(fd)
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
                        close_fd(fd)
                conn.outbox.clear()
                break
            for fd in fds:
                close_fd(fd)
            conn.outbox[0] = [data[sent:], []]
            conn.outbox_bytes -= sent
            if sent == len(data):
                del conn.outbox[0]
        self._watch_agent()

    def _watch_agent(self) -> None:
        """Write interest while replies wait; read interest only while the reply queue is short."""
        conn = self._agent
        assert conn is not None
        events = WRITE if conn.outbox else 0
        if conn.outbox_bytes <= OUTBOX_HIGH:
            events |= READ
        if events != conn.events:
            conn.events = events
            self._sel.modify(conn.sock.fileno(), events, conn.handler)

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
                close_fd(fd)
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
        close_fd(fd)

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
            self._sel.register(fd, READ, _bind(callback, key, held, name))
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


def _ignore(mask: int) -> None:
    """The handler of a connection not registered yet."""


def _bind(callback: Callable[[str, Held, str, int], None], key: str, held: Held, name: str) -> Handler:
    """``callback`` with its stream named: the handler of one held descriptor."""
    return lambda mask: callback(key, held, name, mask)


def _hung_up(sock: _socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(events & (select.POLLHUP | select.POLLRDHUP) for _, events in poller.poll(0))

