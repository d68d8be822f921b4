"""How a ``LaunchSpec`` becomes a child: ``os.posix_spawn`` where it can, ``Popen`` otherwise,
and for templates with ``rlimits`` or ``nice`` the ``limitchain`` way (no Python in the child).

A burst of spawns (``gaffer start`` of 1,000 instances) is bound by what the agent does per
child while the child is being created. ``subprocess.Popen`` costs about three times the CPU of
``os.posix_spawn`` there: it encodes the environment and builds the list of PATH candidates in
Python, makes and reads an error pipe, and its child resets every signal handler and tries an
execve per PATH directory. glibc's ``posix_spawn`` clones (sharing memory, as vfork does), does
the dup2s and setsid, execs once, and returns the exec's error from the call itself.

The fast path is taken only when it does exactly what Popen would:

- no user, group or supplementary groups to switch to, and no working directory to change to
  (Python 3.11's ``posix_spawn`` has no chdir; a ``cwd`` that is already the agent's own counts
  as none);
- the program is looked up in the PATH of the child's environment, as Popen does (a bare name
  with no executable file on that PATH fails with the same errors Popen's would);
- ``close_fds``: every descriptor gaffer and its libraries open is close-on-exec (Python's
  default; libzmq, libuv and SQLite open theirs with CLOEXEC), and the ones this process
  inherited at its own start are made close-on-exec once, before the first fast spawn
  (``seal_inherited``), so a child gets exactly its three standard streams, as with Popen;
- ``restore_signals``: SIGPIPE and SIGXFSZ, which Python ignores, are set back to their
  defaults in the child (``setsigdef``); handlers are reset by the exec itself.

A template with ``rlimits``, ``umask`` or ``nice`` never takes the fast path
(``choose_path``): a umask alone goes to Popen (``umask=``), anything more to ``CHAIN``: nice
on a spawning thread of its own, rlimits (and then the user switch) by the host's ``prlimit``
and ``setpriv`` exec'd before the program, cwd and umask by Popen when it needs them
(``limitchain`` says why). On a host without those tools, ``HELPER``: a posix_spawn of
``execwrap``, a Python start-up that does all of it (``childlimits`` weighs the options).
Without any of these settings, nothing here changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
from typing import Mapping

from gaffer.agent.childlimits import ChildLimits, NotGranted, Privileges, grant_problem, helper_argv, read_privileges
from gaffer.agent.limitchain import Tools, chain_switches_user, chain_words, nice_reversible, system_tools, with_nice

DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""What Popen's ``restore_signals`` puts back to the default in the child (Linux)."""

FAST = "posix_spawn"
POPEN = "popen"
CHAIN = "chain"
HELPER = "helper"
_sealed = False


def spawn(
    argv: tuple[str, ...],
    env: dict[str, str],
    streams: tuple[int, int, int],
    cwd: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    groups: tuple[int, ...] | None = None,
    limits: ChildLimits | None = None,
) -> tuple[int, subprocess.Popen | None]:
    """Start ``argv`` in a new session with ``streams`` as its stdin, stdout and stderr; the
    pid, and the Popen when it took the slow path. Raises what Popen raises (OSError,
    SubprocessError, ValueError), and NotGranted for a setting this host will refuse."""
    path = choose_path(cwd, uid, gid, groups, streams, limits, system_tools())
    if path == FAST:
        return posix_spawn(argv, env, streams), None
    if path == CHAIN:
        assert limits is not None
        return spawn_through_chain(argv, env, streams, limits, cwd, uid, gid, groups)
    if path == HELPER:
        assert limits is not None
        return spawn_through_helper(argv, env, streams, limits, cwd, uid, gid, groups), None
    stdin, stdout, stderr = streams
    popen = subprocess.Popen(
        argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
        start_new_session=True, user=uid, group=gid, extra_groups=groups, close_fds=True,
        umask=-1 if limits is None or limits.umask is None else limits.umask,
    )
    return popen.pid, popen


def choose_path(
    cwd: str | None,
    uid: int | None,
    gid: int | None,
    groups: tuple[int, ...] | None,
    streams: tuple[int, int, int],
    limits: ChildLimits | None,
    tools: Tools = Tools(),
) -> str:
    """FAST, POPEN, CHAIN or HELPER: which way ``spawn`` starts a child with these settings,
    on a host with these ``tools`` (HELPER only where one the chain needs is missing)."""
    if limits is None:
        return FAST if fast_path_allowed(cwd, uid, gid, groups, streams) else POPEN
    if not limits.needs_helper:
        return POPEN
    return HELPER if chain_words(limits, tools, uid, gid, groups) is None else CHAIN


def fast_path_allowed(
    cwd: str | None,
    uid: int | None,
    gid: int | None,
    groups: tuple[int, ...] | None,
    streams: tuple[int, int, int],
) -> bool:
    """Whether ``posix_spawn`` does what Popen would (see the module docstring). A stream
    that is already 0, 1 or 2 goes to Popen too: dup2 onto itself would keep its CLOEXEC."""
    if uid is not None or gid is not None or groups is not None:
        return False
    if any(fd <= 2 for fd in streams):
        return False
    return cwd is None or _same_dir(cwd, os.getcwd())


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def posix_spawn(argv: tuple[str, ...], env: dict[str, str], streams: tuple[int, int, int]) -> int:
    if not argv:
        raise ValueError("an empty command line")
    seal_inherited()
    path = find_program(argv[0], env)
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(streams)]
    return os.posix_spawn(path, argv, env, file_actions=actions, setsid=True,
                          setsigdef=DEFAULT_SIGNALS)


def spawn_through_helper(
    argv: tuple[str, ...],
    env: dict[str, str],
    streams: tuple[int, int, int],
    limits: ChildLimits,
    cwd: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    groups: tuple[int, ...] | None = None,
) -> int:
    """posix_spawn ``execwrap``, which applies ``limits`` (and cwd, user, group) and execs
    ``argv``. What Popen would refuse at once (no program, no working directory, a user it may
    not switch to) and what the host will refuse (``grant_problem``) is raised here, before
    anything starts."""
    check_before_spawn(argv, env, limits, cwd, uid, gid)
    seal_inherited()
    words = helper_argv(argv, env, limits, cwd, uid, gid, groups)
    high = [fd if fd > 2 else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in streams]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)]
        return os.posix_spawn(words[0], words, {}, file_actions=actions, setsid=True,
                              setsigdef=DEFAULT_SIGNALS)
    finally:
        for fd, original in zip(high, streams):
            if fd != original:
                os.close(fd)


def spawn_through_chain(
    argv: tuple[str, ...],
    env: dict[str, str],
    streams: tuple[int, int, int],
    limits: ChildLimits,
    cwd: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    groups: tuple[int, ...] | None = None,
) -> tuple[int, subprocess.Popen | None]:
    """Start ``chain_words`` + ``argv`` from a thread at the template's nice: posix_spawn'ed
    when nothing else is left to do before the first exec, else through Popen (cwd, umask, a
    user switch that is not the chain's, a stream that is already 0-2). What the host or exec
    would refuse is raised here, before anything starts (``check_before_spawn``)."""
    chain = chain_words(limits, system_tools(), uid, gid, groups)
    assert chain is not None
    privileges = check_before_spawn(argv, env, limits, cwd, uid, gid)
    if chain_switches_user(limits, uid, gid, groups):
        uid = gid = groups = None
    words = chain + argv
    direct = limits.umask is None and fast_path_allowed(cwd, uid, gid, groups, streams)

    def start() -> tuple[int, subprocess.Popen | None]:
        if direct:
            seal_inherited()
            path = chain[0] if chain else find_program(argv[0], env)
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(streams)]
            return os.posix_spawn(path, words, env, file_actions=actions, setsid=True,
                                  setsigdef=DEFAULT_SIGNALS), None
        stdin, stdout, stderr = streams
        popen = subprocess.Popen(
            words, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
            start_new_session=True, user=uid, group=gid, extra_groups=groups, close_fds=True,
            umask=-1 if limits.umask is None else limits.umask,
        )
        return popen.pid, popen

    reversible = limits.nice is None or nice_reversible(limits.nice, privileges)
    return with_nice(limits.nice, start, reversible)


def check_before_spawn(argv: tuple[str, ...], env: Mapping[str, str], limits: ChildLimits,
                       cwd: str | None, uid: int | None, gid: int | None) -> Privileges:
    """Raise what Popen would refuse at once (no program, no working directory) and what the
    host will refuse (``grant_problem``): a second exec in the child would only report them
    on its stderr, after the instance had started. The agent's privileges, as checked."""
    if not argv:
        raise ValueError("an empty command line")
    privileges = read_privileges()
    problem = grant_problem(limits, privileges, uid, gid)
    if problem is not None:
        raise NotGranted(problem)
    if cwd is not None and not os.path.isdir(cwd):
        code = errno.ENOTDIR if os.path.exists(cwd) else errno.ENOENT
        raise OSError(code, os.strerror(code), cwd)
    program = argv[0]
    if os.sep in program:
        _check_program(os.path.join(cwd or "", program))
    else:
        find_program(program, env)
    return privileges


def _check_program(path: str) -> None:
    """FileNotFoundError or PermissionError, as exec would raise them, for a program path."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def find_program(program: str, env: Mapping[str, str]) -> str:
    """``program`` as Popen's child finds it: as given if it names a path, else the first
    executable file in the PATH of ``env`` (``os.defpath`` without one). FileNotFoundError if
    there is none, PermissionError if there are only files it may not execute."""
    if os.sep in program:
        return program
    denied = False
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise (PermissionError if denied else FileNotFoundError)(code, os.strerror(code), program)


def seal_inherited() -> None:
    """Make the descriptors this process inherited close-on-exec (once): what Popen's
    ``close_fds`` kept from children, posix_spawn must not pass on."""
    global _sealed
    if _sealed:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
        except OSError:
            pass  # the directory's own descriptor, closed by now
    _sealed = True
