"""How a template's ``rlimits`` and ``nice`` reach its process without a Python start-up.

A child with these settings used to exec ``python -I -S execwrap.py`` first: about 10 ms of
CPU per child before its program ran, so a burst of such instances scaled at a tenth of the
plain rate. Now nothing but the program and, for rlimits, one small C program of the host runs
in the child; each setting is still applied before the program's first instruction and under
the agent's privilege, before any change of user:

- **nice** is set in the agent, on the spawning thread only: Linux keeps nice per thread and a
  child takes it from the thread that clones it, so the child starts with it and no other
  thread of the agent (SQLite's, the cgroup worker) ever runs with it. Where the thread may
  set its nice back afterwards (a nice at or below its own, or CAP_SYS_NICE, or an RLIMIT_NICE
  that allows it: ``nice_reversible``), that is the loop's thread, for the few microseconds of
  the posix_spawn; where it may not (an unprivileged agent raising nice), a thread made for this
  one spawn, whose raised nice dies with it (about 0.15 ms of the agent's CPU more). A refusal
  comes back to the agent as the spawn's own error.
- **rlimits** are set by util-linux's ``prlimit --NAME=SOFT:HARD ... -- PROGRAM``, the first
  program exec'd in the child: limits are per process (a thread cannot hold its own), and the
  agent lowering its own around the spawn would hit its other threads meanwhile, could not
  raise a hard limit back, and would fail its own clone on a low ``nproc``. ``prlimit`` sets
  each with prlimit(2) on itself, exits 1 without running anything if one is refused, then
  ``execvp``'s the program with its argv as given (argv[0] included), in the child's
  environment, looked up on that environment's PATH.
- **A user switch** after rlimits is util-linux's ``setpriv --regid --reuid --groups|
  --clear-groups|--keep-groups --`` exec'd by ``prlimit``: setgroups, setresgid, setresuid
  (saved ids too), the order of Popen's child. Without rlimits, Popen's own ``user=`` does it.
- **cwd and umask** are Popen's ``cwd=`` and ``umask=`` (its C child, before any exec); a child
  that needs neither, nor Popen's user switch, is posix_spawn'ed like the fast path.

``prlimit`` and ``setpriv`` are looked for once, in the system's own directories (never the
child's PATH). util-linux ships both in Debian's essential set; on a host without one, the
template falls back to ``execwrap`` (slower, same effect), and says nothing: both apply the
same settings in the same order.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, TypeVar

from gaffer.agent.childlimits import CAP_SYS_NICE, ChildLimits, NotGranted, Privileges

TOOL_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
"""Where ``prlimit`` and ``setpriv`` are looked for: the system's, not the child's PATH."""

T = TypeVar("T")


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the host's ``prlimit`` and ``setpriv``; None for one it lacks."""

    prlimit: str | None = None
    setpriv: str | None = None


@cache
def system_tools() -> Tools:
    """This host's tools, looked up once (installing util-linux later needs an agent restart)."""
    return find_tools(TOOL_DIRS)


def find_tools(directories: tuple[str, ...]) -> Tools:
    def first(name: str) -> str | None:
        for directory in directories:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None

    return Tools(prlimit=first("prlimit"), setpriv=first("setpriv"))


def chain_words(
    limits: ChildLimits,
    tools: Tools,
    uid: int | None = None,
    gid: int | None = None,
    groups: tuple[int, ...] | None = None,
) -> tuple[str, ...] | None:
    """The programs the child execs before the program itself, with their arguments, each
    ending with ``--`` (empty: none); None when the host lacks one it needs. The user switch
    is in the chain only after ``prlimit`` (``chain_switches_user``). Pure."""
    if not limits.rlimits:
        return ()
    if tools.prlimit is None:
        return None
    words = [tools.prlimit]
    words += [f"--{name}={_limit(soft)}:{_limit(hard)}" for name, soft, hard in limits.rlimits]
    words.append("--")
    if chain_switches_user(limits, uid, gid, groups):
        if tools.setpriv is None:
            return None
        words.append(tools.setpriv)
        if groups is not None:
            words.append("--groups=" + ",".join(str(g) for g in groups) if groups else "--clear-groups")
        elif gid is not None:
            words.append("--keep-groups")
        if gid is not None:
            words.append(f"--regid={gid}")
        if uid is not None:
            words.append(f"--reuid={uid}")
        words.append("--")
    return tuple(words)


def chain_switches_user(limits: ChildLimits, uid: int | None, gid: int | None,
                        groups: tuple[int, ...] | None) -> bool:
    """Whether ``setpriv`` in the chain, rather than Popen, switches the user: only when there
    are rlimits to set first, while the agent's privilege holds."""
    return bool(limits.rlimits) and (uid is not None or gid is not None or groups is not None)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def nice_reversible(nice: int, privileges: Privileges) -> bool:
    """Whether a thread at the agent's nice that goes to ``nice`` may come back: raising nice
    is always allowed, lowering it needs CAP_SYS_NICE or an RLIMIT_NICE of 20 - nice. Pure."""
    return (nice <= privileges.nice or 20 - privileges.nice <= privileges.nice_rlimit
            or privileges.can(CAP_SYS_NICE))


def with_nice(nice: int | None, call: Callable[[], T], reversible: bool) -> T:
    """``call()`` on a thread whose nice is ``nice`` when it is not None (a child it spawns
    starts with it): this thread, set back afterwards, when ``reversible``, else a thread of
    its own, gone when this returns. Raises what ``call`` (or setpriority) raised."""
    if nice is None:
        return call()
    if reversible:
        return _on_this_thread(nice, call)
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            except OSError as exc:
                raise NotGranted(f"nice {nice}: {exc.strerror}") from exc
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller below, on its own thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="gaffer-spawn-nice")
    thread.start()
    thread.join()
    done, value = outcome[0]
    if not done:
        raise value
    return value


def _on_this_thread(nice: int, call: Callable[[], T]) -> T:
    tid = threading.get_native_id()
    own = os.getpriority(os.PRIO_PROCESS, tid)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        raise NotGranted(f"nice {nice}: {exc.strerror}") from exc
    try:
        return call()
    finally:
        # nice_reversible allowed it; should the kernel refuse anyway, a child already
        # spawned must still reach its Process, so the refusal is not raised over it
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, own)
