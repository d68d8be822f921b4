"""The agent's side of the fd keeper (server.py is the other): deposit, release, reclaim.

``deposit`` and ``release`` are synchronous calls that put the request on the wire at once
(the Manager spawns and reaps in plain callbacks) and return a future for the keeper's answer,
so deposits pipeline instead of paying a round trip each. A failed answer nobody awaited is
logged, not lost. ``reclaim`` is awaited: it returns every held descriptor with the bytes the
keeper drained while no agent was there.

Errors, all GafferErrors::

    KeeperError              "keeper_error"
    ├── KeeperUnavailable    "keeper_unavailable"  cannot start, cannot connect, or connection lost
    ├── KeeperBusy           "keeper_busy"         another agent is connected to the keeper
    └── KeeperRejected       "keeper_rejected"     the keeper refused a request; ``reason`` is its code
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import logging
import os
import resource
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gaffer.agent import reaper
from gaffer.agent.keeper.framing import (
    MAX_KEY,
    MAX_REPLY,
    STREAMS,
    Frame,
    FrameDecoder,
    close_fd,
    encode_frame,
    recv_with_fds,
    send_with_fds,
)
from gaffer.common.errors import KeeperBusy, KeeperError, KeeperRejected, KeeperUnavailable

log = logging.getLogger("gaffer.keeper_client")

OUTBOX_LIMIT = 4 * 1024 * 1024
OUTBOX_FDS = 4096
LOG_ROTATE_BYTES = 1024 * 1024
GAFFER_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the gaffer package


@dataclass(frozen=True)
class Reclaimed:
    """One key handed back: live descriptors, and what was drained from them meanwhile.

    ``buffered`` holds the newest bytes per stream (older ones were dropped, ``dropped``
    counts them); a stream in ``eof`` reached end of output and has no descriptor any more.
    """

    fds: dict[str, int]
    buffered: dict[str, bytes] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    eof: set[str] = field(default_factory=set)

    def close(self) -> None:
        """Close the descriptors (when the instance is not adopted)."""
        for fd in self.fds.values():
            close_fd(fd)


@dataclass(eq=False)
class _Pending:
    op: str
    future: asyncio.Future[Any]
    items: dict[str, Reclaimed] = field(default_factory=dict)


class KeeperClient:
    """One agent's connection to the keeper. Use inside a running event loop."""

    def __init__(self, sock: socket.socket, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.keeper_pid: int | None = None
        self.lost: asyncio.Future[str] = loop.create_future()
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._decoder = FrameDecoder(MAX_REPLY)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_fds = 0
        self._outbox_fd_limit = min(OUTBOX_FDS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
        self._writing = False
        self._welcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        loop.add_reader(self._fd, self._on_readable)

    # ------------------------------------------------------------------------- connecting

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        spawn: bool = True,
        idle_timeout: float | None = None,
        buffer_kib: int | None = None,
        max_fds: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> "KeeperClient":
        """Connect to the keeper at ``path``, starting a detached one first if none runs.

        Raises KeeperBusy if another agent is connected, KeeperUnavailable if no keeper can be
        reached or started within ``timeout`` seconds. The other options only apply to a keeper
        started here; a running keeper keeps its own.
        """
        path = os.fspath(path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in range(3):
            try:
                return await cls._open(path, loop, deadline)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if not spawn or attempt == 2:
                    raise KeeperUnavailable(f"no keeper at {path}: {exc.strerror}") from None
            except OSError as exc:
                raise KeeperUnavailable(f"cannot connect to the keeper at {path}: {exc.strerror or exc}") from None
            line = await spawn_keeper(
                path,
                idle_timeout=idle_timeout,
                buffer_kib=buffer_kib,
                max_fds=max_fds,
                log_path=log_path,
                timeout=max(0.1, deadline - loop.time()),
            )
            if line.startswith("error:"):
                raise KeeperUnavailable(f"cannot start the keeper at {path}: {line[6:].strip()}")
        raise KeeperUnavailable(f"no keeper at {path}")

    @classmethod
    async def _open(cls, path: str, loop: asyncio.AbstractEventLoop, deadline: float) -> "KeeperClient":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        client = cls(sock, path, loop)
        try:
            welcome = await asyncio.wait_for(client._welcome, max(0.01, deadline - loop.time()))
        except asyncio.TimeoutError:
            client.close()
            raise KeeperUnavailable(f"the keeper at {path} did not answer in time") from None
        except BaseException:
            client.close()
            raise
        client.keeper_pid = welcome.get("pid")
        return client

    # ------------------------------------------------------------------------- requests

    def deposit(self, key: str, fds: Mapping[str, int]) -> asyncio.Future[None]:
        """Give the keeper duplicates of an instance's pipe ends (``out``/``err`` read ends,
        ``in`` write end). Sent before this returns; the caller keeps its own descriptors."""
        _check_key(key)
        names = list(fds)
        if not names:
            raise ValueError("fds: name at least one stream")
        for name in names:
            if name not in STREAMS:
                raise ValueError(f"fds: {name!r} is not one of {', '.join(STREAMS)}")
        return self._request({"op": "deposit", "key": key, "streams": names}, [fds[n] for n in names], watch=True)

    def release(self, key: str, streams: list[str] | None = None) -> asyncio.Future[bool]:
        """The keeper closes its copies for ``key`` (or only ``streams``, e.g. ``["in"]`` once
        the agent closed stdin: the keeper's write end would keep the process from seeing EOF).
        Resolves to whether the keeper held it."""
        _check_key(key)
        body: dict[str, Any] = {"op": "release", "key": key}
        if streams is not None:
            for name in streams:
                if name not in STREAMS:
                    raise ValueError(f"streams: {name!r} is not one of {', '.join(STREAMS)}")
            body["streams"] = list(streams)
        return self._request(body, [], watch=True)

    async def reclaim(self) -> dict[str, Reclaimed]:
        """Every held key with fresh descriptors and its drained output; the keeper then holds
        again (it keeps its own copies) and stops reading."""
        return await self._request({"op": "reclaim"}, [])

    async def status(self, key: str | None = None) -> dict[str, Any]:
        """The keeper's counters (and one key's details when ``key`` is given)."""
        body: dict[str, Any] = {"op": "status"}
        if key is not None:
            body["key"] = key
        return await self._request(body, [])

    def _request(self, body: dict[str, Any], fds: list[int], watch: bool = False) -> asyncio.Future[Any]:
        if self.lost.done():
            reason = self.lost.result()
            raise KeeperUnavailable(f"the connection to the keeper at {self.path} is closed ({reason})")
        if self._outbox_bytes > OUTBOX_LIMIT or (fds and self._outbox_fds + len(fds) > self._outbox_fd_limit):
            raise KeeperUnavailable(
                f"the keeper at {self.path} is not keeping up "
                f"({self._outbox_bytes} bytes and {self._outbox_fds} descriptors queued)"
            )
        rid = next(self._ids)
        body["id"] = rid
        future: asyncio.Future[Any] = self._loop.create_future()
        if watch:
            future.add_done_callback(_log_unawaited(body["op"], body.get("key")))
        try:
            self._send(encode_frame(body, len(fds)), fds)
        except OSError as exc:
            raise KeeperUnavailable(f"cannot send to the keeper at {self.path}: {exc.strerror or exc}") from None
        if self.lost.done():
            raise KeeperUnavailable(f"lost the keeper at {self.path} ({self.lost.result()})")
        self._pending[rid] = _Pending(body["op"], future)
        return future

    # ------------------------------------------------------------------------- wire

    def _send(self, frame: bytes, fds: list[int]) -> None:
        """Send now when the socket takes it; queue the rest with private duplicates of fds
        (the caller may close its own at once). OSError means nothing was sent: the request
        fails alone (too many descriptors in flight, or none left to duplicate)."""
        data = memoryview(frame)
        if not self._outbox:
            try:
                sent = send_with_fds(self._sock, data, fds)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if exc.errno in (errno.ETOOMANYREFS, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self._fail(f"send failed: {exc.strerror or exc}")
                return
            if sent == len(data):
                return
            if sent:
                data, fds = data[sent:], []
        copies: list[int] = []
        try:
            for fd in fds:
                copies.append(os.dup(fd))
        except OSError:
            for fd in copies:
                close_fd(fd)
            raise
        self._outbox.append([data, copies])
        self._outbox_bytes += len(data)
        self._outbox_fds += len(copies)
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)

    def _flush(self) -> None:
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                sent = send_with_fds(self._sock, data, fds)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(f"send failed: {exc.strerror or exc}")
                return
            for fd in fds:
                close_fd(fd)
            self._outbox_fds -= len(fds)
            self._outbox_bytes -= sent
            if sent == len(data):
                self._outbox.popleft()
            else:
                self._outbox[0] = [data[sent:], []]
        self._writing = False
        self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        for _ in range(16):
            try:
                data, fds, truncated = recv_with_fds(self._sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(f"receive failed: {exc.strerror or exc}")
                return
            if truncated:
                log.error("descriptors from the keeper were truncated in transit")
            for frame in self._decoder.feed(data, fds):
                self._on_frame(frame)
                if self.lost.done():
                    return
            if not data:
                self._fail("the keeper closed the connection")
                return

    def _on_frame(self, frame: Frame) -> None:
        body = frame.body
        if body is None:
            for fd in frame.fds:
                close_fd(fd)
            self._fail(f"bad frame from the keeper: {frame.error}")
            return
        if not self._welcome.done():
            self._on_greeting(body)
            return
        rid = body.get("id")
        pending = self._pending.get(rid) if isinstance(rid, int) else None
        if pending is None:
            for fd in frame.fds:
                close_fd(fd)
            if "error" in body:
                log.warning("keeper: %s", _message(body["error"]))
            return
        if "item" in body:
            self._on_item(pending, body["item"], frame.fds)
            return
        del self._pending[rid]
        if pending.future.done():
            return
        if "error" in body:
            pending.future.set_exception(_error(body["error"]))
        elif pending.op == "reclaim":
            pending.future.set_result(pending.items)
        elif pending.op == "release":
            pending.future.set_result(bool(body.get("held")))
        elif pending.op == "status":
            pending.future.set_result({k: v for k, v in body.items() if k not in ("id", "ok")})
        else:
            pending.future.set_result(None)

    def _on_greeting(self, body: dict[str, Any]) -> None:
        if body.get("op") == "welcome":
            self._welcome.set_result(body)
            return
        error = _error(body.get("error")) if body.get("op") == "refused" else None
        if error is None:
            error = KeeperUnavailable(f"the keeper at {self.path} sent {body.get('op')!r} instead of a welcome")
        self._welcome.set_exception(error)
        self.close()

    def _on_item(self, pending: _Pending, item: Any, fds: list[int]) -> None:
        try:
            key = item["key"]
            names = item["streams"]
            if pending.op != "reclaim" or len(names) != len(fds) or not isinstance(key, str):
                raise ValueError("item does not match its descriptors")
            pending.items[key] = Reclaimed(
                fds=dict(zip(names, fds)),
                buffered={str(k): bytes(v) for k, v in item.get("buffered", {}).items()},
                dropped={str(k): int(v) for k, v in item.get("dropped", {}).items()},
                eof=set(item.get("eof", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            for fd in fds:
                close_fd(fd)
            log.error("bad reclaim item from the keeper: %s", exc)

    def _fail(self, reason: str) -> None:
        log.warning("lost the keeper at %s: %s", self.path, reason)
        self.close(reason)

    # ------------------------------------------------------------------------- closing

    def close(self, reason: str = "closed by the agent") -> None:
        """Drop the connection (the keeper then drains, as if the agent had died)."""
        if self.lost.done():
            return
        self.lost.set_result(reason)
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._sock.close()
        self._decoder.close()
        for _, fds in self._outbox:
            for fd in fds:
                close_fd(fd)
        self._outbox.clear()
        self._outbox_bytes = 0
        self._outbox_fds = 0
        if not self._welcome.done():
            self._welcome.set_exception(KeeperUnavailable(f"keeper at {self.path}: {reason}"))
            self._welcome.exception()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            for reclaimed in entry.items.values():
                reclaimed.close()
            if not entry.future.done():
                entry.future.set_exception(KeeperUnavailable(f"keeper at {self.path}: {reason}"))


async def spawn_keeper(
    path: str,
    *,
    idle_timeout: float | None = None,
    buffer_kib: int | None = None,
    max_fds: int | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> str:
    """Start a keeper detached from the agent (own session, its launcher exits at once, so it
    is re-parented away: to init, or to the agent while the agent is a child subreaper, which
    reaps it if it dies), output to ``log_path``, default ``keeper.log`` beside the socket.

    Returns its first word of status: ``ready PID``, ``busy: ...`` (another keeper won the
    race; connect to it) or ``error: ...``.
    """
    loop = asyncio.get_running_loop()
    argv, env = keeper_command(path, idle_timeout=idle_timeout, buffer_kib=buffer_kib, max_fds=max_fds)
    log_file = Path(log_path) if log_path is not None else Path(path).parent / "keeper.log"
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        log_fd = _open_log(log_file)
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        raise KeeperUnavailable(f"cannot open the keeper log {str(log_file)!r}: {exc.strerror}") from None
    try:
        proc = subprocess.Popen(
            [*argv, "--ready-fd", str(ready_w)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(ready_w,),
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
    except OSError as exc:
        os.close(ready_r)
        raise KeeperUnavailable(f"cannot start the keeper: {exc.strerror}") from None
    finally:
        os.close(ready_w)
        os.close(log_fd)
    reaper.own(proc.pid)
    try:
        try:
            line = await _read_line(loop, ready_r, timeout)
        finally:
            os.close(ready_r)
        if not line:
            proc.kill()
        await _reap(loop, proc)
    finally:
        reaper.disown(proc.pid)
    return line or f"error: the keeper exited before it was ready (see {log_file})"


def keeper_command(
    path: str, *, idle_timeout: float | None = None, buffer_kib: int | None = None, max_fds: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment an agent starts a keeper with (``--detach``, ``--ready-fd`` aside).

    ``-S`` leaves ``site`` out (its modules and .pth files, about 2 MB of a process that must
    stay under 10 MB), so ``PYTHONPATH`` names the one directory the keeper imports from: the
    one holding this ``gaffer`` (the keeper needs nothing else, not even msgpack).
    """
    argv = [sys.executable, "-S", "-m", "gaffer.agent.keeper", "--socket", path, "--detach"]
    for flag, value in (("--idle-timeout", idle_timeout), ("--buffer-kib", buffer_kib), ("--max-fds", max_fds)):
        if value is not None:
            argv += [flag, str(value)]
    return argv, {**os.environ, "PYTHONPATH": str(GAFFER_ROOT)}


def _open_log(path: Path) -> int:
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


async def _read_line(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> str:
    """The first line written to ``fd`` ("" on EOF or timeout), without blocking the loop."""
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()
    buf = bytearray()

    def on_readable() -> None:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return
        buf.extend(chunk)
        if (not chunk or b"\n" in buf) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        return ""
    finally:
        loop.remove_reader(fd)
    return buf.split(b"\n", 1)[0].decode(errors="replace").strip()


async def _reap(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen) -> None:
    """Wait for the launcher (it exits as soon as the keeper has forked) through a pidfd."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        proc.wait()
        return
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    proc.wait()


def _log_unawaited(op: str, key: str | None) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that logs a refusal nobody awaited (and marks the error retrieved).

    A lost connection fails every pending request at once; that is reported through
    ``KeeperClient.lost``, not once per request."""

    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and not isinstance(exc, KeeperUnavailable):
            log.warning("keeper %s %s failed: %s", op, key, exc)

    return done


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"key: must be a string of 1 to {MAX_KEY} characters, got {key!r}")


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


def _error(error: Any) -> KeeperError:
    code = error.get("code") if isinstance(error, dict) else None
    message = _message(error)
    if code == "keeper_busy":
        return KeeperBusy(message)
    return KeeperRejected(str(code or "error"), message)
