"""The fallback second exec for templates with ``rlimits`` or ``nice``, on a host without
util-linux's ``prlimit``/``setpriv`` (``gaffer.agent.limitchain`` is the usual way): set them,
then exec the program.

The agent runs this file as ``python -I -S -X utf8 execwrap.py SETTING... -- ARGC ARGV...
ENV...`` through ``os.posix_spawn`` (``gaffer.agent.childlimits`` says why). It imports only
the standard library (with ``-S`` there is no site-packages, so no gaffer either), and does,
in the order of Popen's C child, what Popen's child would have done after its dup2s:

  chdir(cwd) -> umask -> setrlimit (each) -> setpriority (nice) -> SIGPIPE/SIGXFSZ to
  their defaults -> setgroups -> setregid -> setreuid -> execvpe (PATH of the child's env)

Everything is imported before the change of user, and limits and nice come before it too,
while the agent's privilege still holds (a root agent may raise a hard limit or lower nice for
a user that could not). Nothing here runs after the exec, so the program runs under the limits
from its first instruction. SIGINT, which Python's start-up catches, goes back to its default
first thing, so an instance stopped with INT in these milliseconds dies of it as it would have.

Settings are ``name=value`` words: ``cwd=PATH``, ``umask=N``, ``rlimit=NAME:SOFT:HARD``
(``unlimited`` allowed), ``nice=N``, ``groups=G,G`` (empty: none), ``gid=N``, ``uid=N``.
The program's argv and environment come as words too, never through this process's own
environment, which Python's start-up may touch (PEP 538 sets LC_CTYPE in a C locale).
Arguments are decoded as UTF-8 with surrogateescape (``-X utf8``), so ``os.fsencode`` gives
back exactly the bytes the agent sent.

A step that fails writes ``gaffer: <what>: <reason>`` to the instance's stderr and exits
127. The agent checks beforehand what it can (``childlimits.grant_problem``), so this is
the backstop, not the usual way a refusal is reported.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

FAILED = 127
RLIMITS = ("nofile", "nproc", "core", "memlock", "as")
UNLIMITED = b"unlimited"


class Settings:
    """What to do before the exec, parsed from the ``name=value`` words."""

    def __init__(self) -> None:
        self.cwd: bytes | None = None
        self.umask: int | None = None
        self.rlimits: list[tuple[str, int | None, int | None]] = []
        self.nice: int | None = None
        self.groups: list[int] | None = None
        self.gid: int | None = None
        self.uid: int | None = None


def parse(words: list[bytes]) -> tuple[Settings, list[bytes], dict[bytes, bytes]]:
    """The settings, argv and environment in ``words``; ValueError if malformed. A limit of
    None is unlimited."""
    settings = Settings()
    end = words.index(b"--")
    for word in words[:end]:
        key, _, value = word.partition(b"=")
        if key == b"cwd":
            settings.cwd = value
        elif key == b"umask":
            settings.umask = int(value)
        elif key == b"rlimit":
            name, soft, hard = value.split(b":")
            if name.decode() not in RLIMITS:
                raise ValueError(f"unknown limit {name!r}")
            settings.rlimits.append((name.decode(), _limit(soft), _limit(hard)))
        elif key == b"nice":
            settings.nice = int(value)
        elif key == b"groups":
            settings.groups = [int(g) for g in value.split(b",") if g]
        elif key in (b"gid", b"uid"):
            setattr(settings, key.decode(), int(value))
        else:
            raise ValueError(f"unknown setting {key!r}")
    argc = int(words[end + 1])
    argv = words[end + 2:end + 2 + argc]
    if argc < 1 or len(argv) != argc:
        raise ValueError("no program")
    env = {}
    for entry in words[end + 2 + argc:]:
        name, sep, value = entry.partition(b"=")
        if not sep:
            raise ValueError(f"environment entry without '=': {name!r}")
        env[name] = value
    return settings, argv, env


def _limit(text: bytes) -> int | None:
    return None if text == UNLIMITED else int(text)


def run(settings: Settings, argv: list[bytes], env: dict[bytes, bytes]) -> None:
    """Apply ``settings`` and exec; returns only through ``fail``."""
    step = "working directory"
    try:
        if settings.cwd is not None:
            os.chdir(settings.cwd)
        if settings.umask is not None:
            os.umask(settings.umask)
        if settings.rlimits:
            import resource

            for name, soft, hard in settings.rlimits:
                step = f"rlimits.{name}"
                number = getattr(resource, f"RLIMIT_{name.upper()}")
                infinity = resource.RLIM_INFINITY
                resource.setrlimit(number, (infinity if soft is None else soft,
                                            infinity if hard is None else hard))
        if settings.nice is not None:
            step = f"nice {settings.nice}"
            os.setpriority(os.PRIO_PROCESS, 0, settings.nice)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        step = "user"
        if settings.groups is not None:
            os.setgroups(settings.groups)
        if settings.gid is not None:
            os.setregid(settings.gid, settings.gid)
        if settings.uid is not None:
            os.setreuid(settings.uid, settings.uid)
        step = f"cannot run {argv[0].decode(errors='replace')!r}"
        execvpe(argv, env)
    except (OSError, ValueError) as exc:
        fail(f"{step}: {getattr(exc, 'strerror', None) or exc}")


def execvpe(argv: list[bytes], env: dict[bytes, bytes]) -> None:
    """Exec ``argv[0]`` as Popen's child does: as given if it names a path, else each
    directory of the PATH of ``env`` in turn (``os.defpath`` without one); the first error that
    is not "no such file" wins. ``os.execvpe`` would import ``warnings`` here, after the user
    switch, from a standard library the new user may not be allowed to read."""
    program = argv[0]
    if b"/" in program:
        os.execve(program, argv, env)
    path = env.get(b"PATH")
    directories = (os.fsencode(os.defpath) if path is None else path).split(b":")
    saved: OSError | None = None
    last: OSError | None = None
    for directory in directories:
        try:
            os.execve(os.path.join(directory, program), argv, env)
        except OSError as exc:
            last = exc
            if saved is None and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                saved = exc
    raise saved or last or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


def fail(message: str) -> None:
    os.write(2, f"gaffer: {message}\n".encode(errors="replace"))
    os._exit(FAILED)


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        settings, argv, env = parse([os.fsencode(word) for word in sys.argv[1:]])
    except ValueError as exc:
        fail(f"bad arguments to {__file__}: {exc}")
        return
    run(settings, argv, env)


if __name__ == "__main__":
    main()
