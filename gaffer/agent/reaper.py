"""The agent as a child subreaper, and the reaping of the orphans that then come back to it.

A daemon that double-forks (fork, setsid, fork, parent exits) leaves its instance's process
group and loses its parent. The kernel re-parents such an orphan to its nearest ancestor marked
``PR_SET_CHILD_SUBREAPER``, else to init. The agent, ``gaffer start`` and ``gaffer run`` mark
themselves once at start (``become_subreaper``), so every orphan of their instances comes back
to them while they run: it can be found (``tracking``) and, once dead, must be reaped here, or
it stays a zombie.

Reaping must never steal the exit status of a child someone waits for: ``Process`` learns of
its leader's exit through a pidfd and reads the status with ``waitpid`` itself. So spawners
register their children (``own``/``disown``), and ``Reaper.sweep`` peeks at one zombie at a
time with ``waitid(WNOWAIT)`` (one syscall when there is nothing to do) and reaps it only if it
is nobody's: not registered and not in this process's own session (children that other code
here starts without a new session, such as asyncio subprocesses, are that code's to reap).

uvloop refuses SIGCHLD handlers (libuv owns that signal), so sweeps run when an instance exits
or a descendant is killed (``kick``), and every ``SWEEP_EVERY`` seconds as a safety net;
live orphans that a descendant scan has seen are watched through a pidfd (``watch``) and reaped
the moment they die. A zombie that is not ours to reap but stays at the head of the queue is
stepped over by one scan of /proc for this process's zombie children.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os

from gaffer.agent import adoption

log = logging.getLogger("gaffer.reaper")

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
SWEEP_EVERY = 2.0
KICK_DELAY = 0.05
MAX_WATCHED = 1024
STUCK_SWEEPS = 3
RESCAN_SWEEPS = 15

_own: set[int] = set()
_installed: "Reaper | None" = None


def own(pid: int) -> None:
    """``pid`` is a child its spawner will wait for: never reap it here."""
    _own.add(pid)


def disown(pid: int) -> None:
    _own.discard(pid)


def _prctl() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Mark this process a child subreaper; False (and a log line) where the kernel refuses."""
    if _prctl().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        log.warning("cannot become a child subreaper: %s", os.strerror(code))
        return False
    return True


def stop_being_subreaper() -> None:
    _prctl().prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    if _prctl().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return bool(value.value)


class Reaper:
    """Reaps this process's orphaned children. ``start`` it on the loop; ``close`` stops it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._session = os.getsid(0)
        self._timer: asyncio.TimerHandle | None = None
        self._kicked: asyncio.TimerHandle | None = None
        self._watched: dict[int, int] = {}
        self._stuck: tuple[int, int] = (0, 0)
        self.reaped = 0

    def start(self) -> None:
        self._timer = self._loop.call_later(SWEEP_EVERY, self._periodic)

    def close(self) -> None:
        for handle in (self._timer, self._kicked):
            if handle is not None:
                handle.cancel()
        self._timer = self._kicked = None
        for pid in list(self._watched):
            self._unwatch(pid)

    def kick(self) -> None:
        """Sweep soon (coalesced): a descendant was just killed or an instance exited."""
        if self._kicked is None:
            self._kicked = self._loop.call_later(KICK_DELAY, self._on_kick)

    def watch(self, pid: int) -> None:
        """Reap ``pid`` (a live orphan, now our child) the moment it dies."""
        if pid in self._watched or pid in _own or len(self._watched) >= MAX_WATCHED:
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        self._watched[pid] = pidfd
        self._loop.add_reader(pidfd, self._on_watched, pid)

    def _on_watched(self, pid: int) -> None:
        self._unwatch(pid)
        self._reap(pid)

    def _unwatch(self, pid: int) -> None:
        pidfd = self._watched.pop(pid, None)
        if pidfd is not None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def _periodic(self) -> None:
        self._timer = self._loop.call_later(SWEEP_EVERY, self._periodic)
        self.sweep()

    def _on_kick(self) -> None:
        self._kicked = None
        self.sweep()

    def sweep(self) -> int:
        """Reap every zombie child that is nobody's; returns how many."""
        count = 0
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return count
            if info is None:
                return count
            pid = info.si_pid
            if self._ours(pid):
                if self._reap(pid):
                    count += 1
                    continue
            return count + self._step_over(pid)

    def _ours(self, pid: int) -> bool:
        if pid in _own:
            return False
        try:
            return os.getsid(pid) != self._session
        except OSError:
            return True

    def _reap(self, pid: int) -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
        except OSError as exc:
            if exc.errno != errno.EINTR:
                log.debug("waitpid(%d): %s", pid, exc)
            return False
        if done:
            self.reaped += 1
            self._unwatch(pid)
        return bool(done)

    def _step_over(self, head: int) -> int:
        """The first zombie is someone else's. It is usually reaped within a loop iteration
        (a ``Process`` callback that has not run yet); if it stays there sweep after sweep,
        find the zombies behind it by a scan of /proc (then again every RESCAN_SWEEPS sweeps
        while it stays)."""
        pid, times = self._stuck
        times = times + 1 if pid == head else 1
        self._stuck = (head, times)
        if times < STUCK_SWEEPS:
            self.kick()
            return 0
        if (times - STUCK_SWEEPS) % RESCAN_SWEEPS:
            return 0
        me = os.getpid()
        count = 0
        for info in adoption.snapshot():
            if info.ppid == me and not info.alive and self._ours(info.pid) and self._reap(info.pid):
                count += 1
        return count


def install(loop: asyncio.AbstractEventLoop | None = None) -> "Reaper":
    """Make this process a child subreaper and start reaping on ``loop``; for the daemons,
    once at start (``uninstall`` at the end). Trackers find it with ``installed``."""
    global _installed
    become_subreaper()
    if _installed is None:
        _installed = Reaper(loop)
        _installed.start()
    return _installed


def uninstall() -> None:
    global _installed
    if _installed is not None:
        _installed.sweep()
        _installed.close()
        _installed = None
    stop_being_subreaper()


def installed() -> "Reaper | None":
    return _installed
