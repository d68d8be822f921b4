"""The fd keeper: holds the agent's pipe ends so managed processes outlive the agent.

This is its entry point (``python -m gaffer.agent.keeper``, which ``client.spawn_keeper``
runs): the arguments, the lock file that makes one keeper serve a socket, the listening
socket, the descriptor budget, and the ready line the launching agent waits for. The loop
itself is ``server.Keeper``. The arguments are read here rather than by ``argparse``, which
brings ``re`` and ``gettext`` (0.8 MB) into a process that must stay under 10 MB.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import resource
import stat
import sys

from gaffer.agent.keeper.framing import MAX_BUFFER_KIB
from gaffer.agent.keeper.logline import log
from gaffer.agent.keeper.server import Keeper, Limits

FD_RESERVE = 64
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_BUFFER_KIB = 64


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


def bind(path: str) -> _socket.socket:
    """Listen on ``path`` (mode 0600); a stale socket there is replaced, anything else refused."""
    if len(os.fsencode(path)) > 107:
        raise StartupError(f"--socket: {path!r} is longer than the 107 bytes a unix socket path allows")
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise StartupError(f"--socket: {path!r} exists and is not a socket")
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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


USAGE = """usage: python -m gaffer.agent.keeper --socket PATH [options]

  --socket PATH         unix socket path (in the agent's state dir); required
  --idle-timeout SECS   exit after this many seconds with nothing held and no agent (default 60)
  --buffer-kib KIB      newest output kept per stream while no agent is connected (default 64)
  --max-fds N           hold at most this many descriptors
  --ready-fd FD         write 'ready PID' or 'error: ...' here once listening
  --detach              fork into the background once listening
"""
VALUED = {"--socket": str, "--idle-timeout": float, "--buffer-kib": int, "--max-fds": int, "--ready-fd": int}


class Options:
    """The command line, parsed: one attribute per option (``--idle-timeout`` is ``idle_timeout``)."""

    __slots__ = ("socket", "idle_timeout", "buffer_kib", "max_fds", "ready_fd", "detach")

    def __init__(self) -> None:
        self.socket: str = ""
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self.buffer_kib = DEFAULT_BUFFER_KIB
        self.max_fds: int | None = None
        self.ready_fd: int | None = None
        self.detach = False


def parse_args(argv: list[str]) -> Options:
    """``--name value``, ``--name=value`` and ``--detach``; anything else is a StartupError naming it."""
    options = Options()
    args = iter(argv)
    for arg in args:
        if arg == "--detach":
            options.detach = True
            continue
        name, has_value, value = arg.partition("=")
        kind = VALUED.get(name)
        if kind is None:
            raise StartupError(f"{arg}: unknown option (use --socket, --idle-timeout, --buffer-kib, "
                               "--max-fds, --ready-fd, --detach)")
        if not has_value:
            following = next(args, None)
            if following is None:
                raise StartupError(f"{name}: expects a value")
            value = following
        try:
            setattr(options, name[2:].replace("-", "_"), kind(value))
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise StartupError(f"{name}: expected {what}, got {value!r}") from None
    if not options.socket:
        raise StartupError("--socket: required (the unix socket path in the agent's state dir)")
    return options


def _limits(args: Options) -> Limits:
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
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(USAGE)
        return 0
    try:
        args = parse_args(argv)
    except StartupError as exc:
        log.error("%s", exc)
        return 2
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

