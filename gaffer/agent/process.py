"""One OS process: spawned in its own session, watched through a pidfd, killed as a group.

Spawning is gaffer's hot path, so this module does the least that is correct: a C-level spawn
(``os.posix_spawn`` where it does what Popen would, else ``subprocess.Popen`` without
preexec_fn: ``gaffer.agent.spawning``), pipes only for streams someone reads, a
shared ``/dev/null`` descriptor for the rest, and a pidfd on the event loop to learn of the exit
at once, without a thread per child and without polling.

When the leader exits, whatever is left of its process group is killed before the leader is
reaped (while the zombie still pins the group id), so no grandchild outlives its instance.
With a ``Tracker`` (the agent, ``gaffer start``, ``gaffer run``) that covers every descendant,
daemons that left the group included (``tracking``); the pid is registered with ``reaper`` so
the agent's orphan reaper never takes the leader's exit status.

``Process.adopt`` watches a process an earlier run of the agent spawned (found by
``gaffer.agent.adoption``): it is no longer our child, so its exit status cannot be waited for.
The pidfd still reports the exit at once; the status is read from ``/proc/<pid>/stat`` of the
zombie through a directory descriptor opened at adoption, which is reliable when it answers
but loses the race if the new parent (init or a subreaper) reaps first: then the status is
unknown (code and signal None).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal as _signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from gaffer.agent import reaper, spawning
from gaffer.agent.adoption import create_time, read_stat
from gaffer.agent.childlimits import ChildLimits, NotGranted
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.tracking import Track, Tracker
from gaffer.common.errors import AdoptError, SpawnError, StdinClosed, StdinFull
from gaffer.common.signals import signal_name

log = logging.getLogger("gaffer.process")

READ_CHUNK = 256 * 1024
"""Bytes read from one pipe per wake-up at most: large enough that a flood costs a few
callbacks per megabyte, small enough that one chatty process cannot hold the loop for long."""
STDIN_LIMIT = 1024 * 1024
START_TOLERANCE = 0.05
"""Seconds an adopted pid's start time may differ from the recorded one (clock-tick rounding)."""
_devnull: int | None = None


def devnull() -> int:
    """One read-write /dev/null descriptor shared by every spawn."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to exec one process; built by ``gaffer.agent.launch``."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    stdout: bool = False
    stderr: bool = False
    stdin: bool = False
    limits: ChildLimits | None = None
    """rlimits, umask and nice to apply in the child; None: none (the fast path)."""


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: ``code`` if it exited, ``signal`` if a signal killed it."""

    code: int | None
    signal: int | None

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        if os.WIFEXITED(status):
            return cls(os.WEXITSTATUS(status), None)
        return cls(None, None)

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.code is not None:
            return f"exit {self.code}"
        return "exited (status unknown)"

    def to_dict(self) -> dict:
        return {"status": self.code, "signal": signal_name(self.signal)}


OutputCallback = Callable[[str, bytes], None]
ExitCallback = Callable[[ExitStatus], None]


class Process:
    """A spawned process group and its pipes, owned by exactly one instance."""

    def __init__(
        self,
        spec: LaunchSpec,
        on_exit: ExitCallback,
        on_output: OutputCallback | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tracker: Tracker | None = None,
        name: str = "",
    ) -> None:
        """``tracker`` and ``name`` (the instance id): track every descendant as that instance."""
        self.spec = spec
        self._on_exit = on_exit
        self._on_output = on_output
        self._loop = loop or asyncio.get_running_loop()
        self.pid: int | None = None
        self.started_at: float | None = None
        self.status: ExitStatus | None = None
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._readers: dict[int, str] = {}
        self._stdin: int | None = None
        self._stdin_buffer = bytearray()
        self._stdin_writer = False
        self._stdin_closing = False
        self._procdir: int | None = None
        self._tracker = tracker
        self.name = name
        self.track: Track | None = None

    @property
    def alive(self) -> bool:
        return self.pid is not None and self.status is None

    def spawn(self) -> int:
        """Start the process; raises SpawnError with the reason when exec fails."""
        spec = self.spec
        null = devnull()
        child_fds: list[int] = []
        parent_fds: list[int] = []
        stdin = stdout = stderr = null
        try:
            if spec.stdin:
                stdin, write_end = os.pipe2(os.O_CLOEXEC)
                child_fds.append(stdin)
                parent_fds.append(write_end)
                self._stdin = write_end
            if spec.stdout:
                read_end, stdout = os.pipe2(os.O_CLOEXEC)
                child_fds.append(stdout)
                parent_fds.append(read_end)
                self._readers[read_end] = "out"
            if spec.stderr:
                read_end, stderr = os.pipe2(os.O_CLOEXEC)
                child_fds.append(stderr)
                parent_fds.append(read_end)
                self._readers[read_end] = "err"
            pid, self._popen = spawning.spawn(
                spec.argv, spec.env, (stdin, stdout, stderr),
                cwd=spec.cwd, uid=spec.uid, gid=spec.gid, groups=spec.groups, limits=spec.limits,
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            for fd in parent_fds:
                os.close(fd)
            self._readers.clear()
            self._stdin = None
            raise SpawnError(_spawn_reason(spec, exc)) from exc
        finally:
            for fd in child_fds:
                os.close(fd)
        self.pid = pid
        reaper.own(self.pid)
        if self._tracker is not None:
            self.track = self._tracker.spawned(self.name, self.pid)
        self.started_at = time.time()
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_pidfd)
        for fd in self._readers:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_readable, fd)
        if self._stdin is not None:
            os.set_blocking(self._stdin, False)
        return self.pid

    @classmethod
    def adopt(
        cls,
        spec: LaunchSpec,
        pid: int,
        started_at: float,
        fds: dict[str, int],
        on_exit: ExitCallback,
        on_output: OutputCallback | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tracker: Tracker | None = None,
        name: str = "",
        found: ProcInfo | None = None,
        members: tuple[ProcInfo, ...] = (),
    ) -> "Process":
        """Watch ``pid``, an instance an earlier agent spawned, as if this agent had spawned it.

        ``started_at`` is its recorded start time (``adoption.Found.started_at``): a pid whose
        process started at another time was reused, and AdoptError says so. ``fds`` are the
        pipe ends handed back by the keeper (``out``/``err`` read ends, ``in`` write end); the
        Process owns them once this returns, the caller keeps them if it raises. With a
        ``tracker``, ``found`` (the leader as /proc showed it) and ``members`` (the rest of the
        incarnation, ``ownership.plan_adoption``) are tracked with it.
        """
        for name, fd in fds.items():
            if name not in ("out", "err", "in"):
                raise ValueError(f"fds: {name!r} is not one of out, err, in")
            try:
                os.fstat(fd)
            except OSError as exc:
                raise ValueError(f"fds[{name!r}]: descriptor {fd} is not open ({exc.strerror})") from None
        proc = cls(spec, on_exit, on_output, loop, tracker, name)
        pidfd, procdir = _open_pid(pid, started_at)
        proc.pid = pid
        proc.started_at = started_at
        proc._pidfd = pidfd
        proc._procdir = procdir
        reaper.own(pid)
        if tracker is not None:
            try:
                ticks = read_stat(pid, dir_fd=procdir).start_ticks
            except (OSError, ValueError, IndexError):
                ticks = found.start_ticks if found is not None else 0
            proc.track = tracker.adopted(
                name, pid, ticks, found.agent_id if found else None,
                found.cgroup if found else None, members,
            )
        proc._loop.add_reader(pidfd, proc._on_pidfd)
        for name in ("out", "err"):
            if name in fds:
                fd = fds[name]
                proc._readers[fd] = name
                os.set_blocking(fd, False)
                proc._loop.add_reader(fd, proc._on_readable, fd)
        if "in" in fds:
            proc._stdin = fds["in"]
            os.set_blocking(proc._stdin, False)
        return proc

    def stream_fds(self) -> dict[str, int]:
        """The agent's ends of this process's pipes by stream name (what the keeper holds)."""
        fds = {stream: fd for fd, stream in self._readers.items()}
        if self._stdin is not None:
            fds["in"] = self._stdin
        return fds

    def signal(self, sig: int, group: bool = True) -> None:
        """Send ``sig`` to the whole process group and every tracked descendant (or only the
        leader); no-op once reaped."""
        if not self.alive or self.pid is None:
            return
        if group and self.track is not None and self._tracker is not None:
            try:
                self._tracker.signal(self.track, sig)
                return
            except Exception:  # tracking must never keep a process from being signalled
                log.exception("%s: signalling its descendants failed; signalling its group", self.name)
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(self.pid, sig)

    def abandon(self) -> None:
        """Stop watching without stopping the process: the agent is going away and the next
        one adopts it (the keeper holds copies of the pipes, so closing ours is harmless)."""
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._procdir is not None:
            os.close(self._procdir)
            self._procdir = None
        for fd in list(self._readers):
            self._loop.remove_reader(fd)
            os.close(fd)
        self._readers.clear()
        self._close_stdin()
        if self.pid is not None:
            reaper.disown(self.pid)

    def _on_pidfd(self) -> None:
        assert self._pidfd is not None and self.pid is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        adopted = self._adopted_status()
        if self.track is not None and self._tracker is not None:
            self._tracked(self._tracker.leftovers, "killing what it left")
        else:
            try:
                os.killpg(self.pid, _signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if adopted is not None:
            status = adopted
            try:
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        else:
            try:
                _, wait_status = os.waitpid(self.pid, 0)
                status = ExitStatus.from_wait_status(wait_status)
            except ChildProcessError:
                status = ExitStatus(None, None)
        reaper.disown(self.pid)
        if self.track is not None and self._tracker is not None:
            self._tracked(self._tracker.ended, "releasing its cgroup")
        if self._popen is not None:
            self._popen.returncode = status.code if status.signal is None else -status.signal
        self.status = status
        for fd in list(self._readers):
            self._drain(fd)
        self._close_stdin()
        self._on_exit(status)

    def _tracked(self, step: Callable[[Track], None], what: str) -> None:
        """Run a tracker step at exit; a failure there is logged and never loses the exit."""
        assert self.track is not None
        try:
            step(self.track)
        except Exception:
            log.exception("%s: %s failed", self.name, what)

    def _adopted_status(self) -> ExitStatus | None:
        """An adopted leader's status from its zombie's stat; None for a process we spawned."""
        procdir, self._procdir = self._procdir, None
        if procdir is None:
            return None
        try:
            stat = read_stat(self.pid or 0, dir_fd=procdir)
        except (OSError, ValueError, IndexError):
            return ExitStatus(None, None)
        finally:
            os.close(procdir)
        if stat.state != "Z" or stat.exit_status is None:
            return ExitStatus(None, None)
        return ExitStatus.from_wait_status(stat.exit_status)

    def _on_readable(self, fd: int) -> None:
        got = _read_pipe(fd)
        if got is not None:
            self._deliver(fd, *got)

    def _drain(self, fd: int) -> None:
        """Read what the dead group left in a pipe; stop at EOF or when nothing is ready."""
        while fd in self._readers:
            got = _read_pipe(fd)
            if got is None:
                return
            self._deliver(fd, *got)

    def _deliver(self, fd: int, data: bytes, eof: bool) -> None:
        if data and self._on_output is not None:
            self._on_output(self._readers[fd], data)
        if eof:
            self._close_reader(fd)

    def _close_reader(self, fd: int) -> None:
        stream = self._readers.pop(fd, None)
        if stream is None:
            return
        self._loop.remove_reader(fd)
        os.close(fd)
        if self._on_output is not None:
            self._on_output(stream, b"")

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the process's stdin; never blocks the loop."""
        if self._stdin is None or self._stdin_closing:
            raise StdinClosed(f"stdin of pid {self.pid} is closed")
        if len(self._stdin_buffer) + len(data) > STDIN_LIMIT:
            raise StdinFull(f"stdin buffer of pid {self.pid} is full ({STDIN_LIMIT} bytes pending)")
        self._stdin_buffer += data
        self._flush_stdin()

    def _flush_stdin(self) -> None:
        fd = self._stdin
        if fd is None:
            return
        while self._stdin_buffer:
            try:
                written = os.write(fd, self._stdin_buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    self._close_stdin()
                    return
                raise
            del self._stdin_buffer[:written]
        if not self._stdin_buffer and self._stdin_closing:
            self._close_stdin()
            return
        want_writer = bool(self._stdin_buffer)
        if want_writer and not self._stdin_writer:
            self._loop.add_writer(fd, self._flush_stdin)
        elif not want_writer and self._stdin_writer:
            self._loop.remove_writer(fd)
        self._stdin_writer = want_writer

    def close_stdin(self) -> None:
        """Close stdin once pending bytes are written (the process then reads EOF)."""
        self._stdin_closing = True
        self._flush_stdin()

    def _close_stdin(self) -> None:
        fd = self._stdin
        if fd is None:
            return
        if self._stdin_writer:
            self._loop.remove_writer(fd)
            self._stdin_writer = False
        self._stdin = None
        self._stdin_buffer.clear()
        os.close(fd)


def _read_pipe(fd: int) -> tuple[bytes, bool] | None:
    """What pipe ``fd`` holds now, up to READ_CHUNK bytes, and whether it reached EOF (a read
    error counts as EOF); None if nothing was ready. Reads until the pipe is empty, so a writer
    that refills it while we read costs one wake-up for up to READ_CHUNK bytes, not one per
    pipe-full."""
    parts: list[bytes] = []
    size = 0
    while size < READ_CHUNK:
        try:
            data = os.read(fd, READ_CHUNK - size)
        except BlockingIOError:
            break
        except OSError:
            return b"".join(parts), True
        if not data:
            return b"".join(parts), True
        parts.append(data)
        size += len(data)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts), False


def _open_pid(pid: int, started_at: float) -> tuple[int, int]:
    """A pidfd and a /proc directory descriptor for ``pid``, once it is sure to be the process
    that started at ``started_at`` (both are opened before the check, so both are that one)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise AdoptError(f"cannot adopt pid {pid}: no such process") from None
    except OSError as exc:
        raise AdoptError(f"cannot adopt pid {pid}: {exc.strerror}") from None
    try:
        procdir = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.close(pidfd)
        raise AdoptError(f"cannot adopt pid {pid}: no such process") from None
    try:
        started = create_time(read_stat(pid, dir_fd=procdir).start_ticks)
    except (OSError, ValueError, IndexError):
        started = None
    if started is None or abs(started - started_at) > START_TOLERANCE:
        os.close(pidfd)
        os.close(procdir)
        if started is None:
            raise AdoptError(f"cannot adopt pid {pid}: it exited and was reaped")
        raise AdoptError(
            f"cannot adopt pid {pid}: it started at {started:.2f}, not at {started_at:.2f} "
            "(the pid now belongs to another process)"
        )
    return pidfd, procdir


def _spawn_reason(spec: LaunchSpec, exc: BaseException) -> str:
    program = spec.argv[0] if spec.argv else "<empty>"
    if isinstance(exc, NotGranted):
        return f"cannot run {program!r}: {exc}"
    if isinstance(exc, FileNotFoundError):
        if spec.cwd and exc.filename == spec.cwd:
            return f"working directory {spec.cwd!r} does not exist"
        return f"command {program!r} not found"
    if isinstance(exc, PermissionError):
        return f"permission denied running {program!r}" + (
            f" in {spec.cwd!r}" if spec.cwd else ""
        )
    if isinstance(exc, NotADirectoryError):
        return f"working directory {spec.cwd!r} is not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot run {program!r}: {exc.strerror}"
    return f"cannot run {program!r}: {exc}"
