"""How a template's ``rlimits``, ``umask`` and ``nice`` reach its process, and what is refused.

They must hold from the program's first instruction, keep the spawn rate of templates that
do not use them, and need no Python ``preexec_fn`` (which runs Python between fork and exec
and costs the fast path). The choices weighed:

- **Popen's ``umask=``** (and ``cwd=``, ``user=``): C code in Popen's child, no second exec. It
  has no rlimits and no nice, so alone it serves templates whose only setting is ``umask``.
- **The agent changing its own limits around a posix_spawn** (the child inherits them):
  refused for rlimits and umask, which are per process. A lowered hard limit cannot be raised
  back without privilege; ``nproc`` is checked against the clone itself, so the agent's own
  spawn would fail; a low ``as`` or ``nofile`` would hit the agent's other threads (libzmq's,
  SQLite's, the cgroup worker) meanwhile, and the umask in the same way. Linux's nice is per
  thread, though: it is set on the spawning thread alone (``limitchain.with_nice``).
- **``sh -c 'ulimit ...; exec "$@"'``**: no nice and no user switch, drops environment
  entries that are not shell names; coreutils' ``nice`` is relative and runs the program even
  when it may not set the nice.
- **util-linux's ``prlimit`` (then ``setpriv``) exec'd before the program** (chosen for
  ``rlimits``, ``limitchain``): C, one small exec (about 0.5 ms of the child's CPU); argv,
  environment and PATH lookup as given; limits set by the agent's user, before ``setpriv``
  switches user.
- **A second exec through ``python -I -S -X utf8 execwrap.py``**: the same settings in Popen's
  order, but Python's start-up costs each child about 10 ms of CPU, which cut a burst of such
  spawns to a tenth of the plain rate. Kept as the fallback on a host without ``prlimit`` or
  ``setpriv`` (``spawning.HELPER``).

Templates with none of them take exactly the path they took before (``spawning.spawn``).

A refusal the host will make is found before the spawn (``grant_problem``), so it fails the
spawn with a clear reason (``SpawnError``, an ``exit`` event with ``error``) instead of an
instance that starts and exits at once: a hard limit above the agent's own without
CAP_SYS_RESOURCE, ``nofile`` above ``fs.nr_open``, a nice below the agent's own without
CAP_SYS_NICE (or RLIMIT_NICE allowing it), a user or group other than the agent's without
CAP_SETUID / CAP_SETGID.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from typing import Mapping

from gaffer.common.proclimits import UNLIMITED
from gaffer.common.template import Template

CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_NICE = 23
CAP_SYS_RESOURCE = 24
RESOURCES = {
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "core": resource.RLIMIT_CORE,
    "memlock": resource.RLIMIT_MEMLOCK,
    "as": resource.RLIMIT_AS,
}
INFINITE = 2**64
"""Where RLIM_INFINITY ranks when limits are compared (above every finite value)."""
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "execwrap.py")


class NotGranted(PermissionError):
    """A setting this host will refuse the child; ``Process.spawn`` turns it into SpawnError."""


@dataclass(frozen=True)
class ChildLimits:
    """A template's settings as the child applies them; a limit of None is unlimited."""

    rlimits: tuple[tuple[str, int | None, int | None], ...] = ()
    umask: int | None = None
    nice: int | None = None

    @property
    def needs_helper(self) -> bool:
        """True when only the second exec can apply these (anything beyond a umask)."""
        return bool(self.rlimits) or self.nice is not None


def child_limits(template: Template) -> ChildLimits | None:
    """The template's settings, or None when it sets none (the unchanged spawn path)."""
    if not template.rlimits and template.umask is None and template.nice is None:
        return None
    rlimits = tuple(
        (name, _number(soft), _number(hard)) for name, soft, hard in template.rlimits
    )
    return ChildLimits(rlimits=rlimits, umask=template.umask, nice=template.nice)


def _number(value: int | str) -> int | None:
    return None if value == UNLIMITED else int(value)


@dataclass(frozen=True)
class Privileges:
    """What the agent may grant a child: its capabilities and its own limits and nice."""

    capabilities: int
    rlimits: Mapping[str, tuple[int, int]]
    """(soft, hard) by name, RLIM_INFINITY as ``INFINITE``."""
    nice: int
    nice_rlimit: int
    nr_open: int
    uids: tuple[int, ...]
    gids: tuple[int, ...]

    def can(self, capability: int) -> bool:
        return bool(self.capabilities >> capability & 1)


def grant_problem(limits: ChildLimits, privileges: Privileges, uid: int | None = None,
                  gid: int | None = None) -> str | None:
    """Why this host will refuse ``limits`` (or the user switch) to a child of the agent, or
    None. Pure: the kernel's rules for setrlimit, setpriority and setre[ug]id."""
    for name, _soft, hard in limits.rlimits:
        ceiling = privileges.rlimits[name][1]
        wanted = INFINITE if hard is None else hard
        if name == "nofile" and wanted > privileges.nr_open:
            return f"rlimits.{name}: {wanted} is above the kernel's fs.nr_open ({privileges.nr_open})"
        if wanted > ceiling and not privileges.can(CAP_SYS_RESOURCE):
            shown = "unlimited" if hard is None else str(hard)
            return (f"rlimits.{name}: hard limit {shown} is above gaffer's own ({_shown(ceiling)}); "
                    "raising it needs privilege (CAP_SYS_RESOURCE)")
    if limits.nice is not None and limits.nice < privileges.nice:
        allowed = 20 - limits.nice <= privileges.nice_rlimit
        if not allowed and not privileges.can(CAP_SYS_NICE):
            return (f"nice {limits.nice} is below gaffer's own ({privileges.nice}); lowering it "
                    "needs privilege (CAP_SYS_NICE, or RLIMIT_NICE)")
    if uid is not None and uid not in privileges.uids and not privileges.can(CAP_SETUID):
        return f"uid {uid}: switching user needs privilege (CAP_SETUID)"
    if gid is not None and gid not in privileges.gids and not privileges.can(CAP_SETGID):
        return f"gid {gid}: switching group needs privilege (CAP_SETGID)"
    return None


def host_refusals(template: Template, privileges: Privileges) -> list[tuple[str, str]]:
    """Every ``rlimits``/``nice`` setting of ``template`` this host would refuse to a process
    with ``privileges``, as (field, reason): ``grant_problem`` asked of each setting alone, so
    all are named, not only the first (``gaffer check`` warns with them)."""
    limits = child_limits(template)
    if limits is None:
        return []
    refused = []
    for rlimit in limits.rlimits:
        problem = grant_problem(ChildLimits(rlimits=(rlimit,)), privileges)
        if problem is not None:
            field, _, reason = problem.partition(": ")
            refused.append((field, reason))
    if limits.nice is not None:
        problem = grant_problem(ChildLimits(nice=limits.nice), privileges)
        if problem is not None:
            refused.append(("nice", problem))
    return refused


def _shown(value: int) -> str:
    return "unlimited" if value >= INFINITE else str(value)


_capabilities: int | None = None


def read_privileges() -> Privileges:
    """This process's privileges now (capabilities are read once: they do not change)."""
    global _capabilities
    if _capabilities is None:
        _capabilities = _read_capabilities()
    own = {}
    for name, number in RESOURCES.items():
        soft, hard = resource.getrlimit(number)
        own[name] = (_rank(soft), _rank(hard))
    fd = os.open("/proc/sys/fs/nr_open", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nr_open = int(os.read(fd, 32))  # os-level: read before every such spawn
    finally:
        os.close(fd)
    return Privileges(
        capabilities=_capabilities,
        rlimits=own,
        nice=os.getpriority(os.PRIO_PROCESS, 0),
        nice_rlimit=_rank(resource.getrlimit(resource.RLIMIT_NICE)[0]),
        nr_open=nr_open,
        uids=tuple(os.getresuid()),
        gids=tuple(os.getresgid()),
    )


def _rank(value: int) -> int:
    return INFINITE if value == resource.RLIM_INFINITY else value


def _read_capabilities() -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def helper_argv(
    argv: tuple[str, ...],
    env: Mapping[str, str],
    limits: ChildLimits,
    cwd: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    groups: tuple[int, ...] | None = None,
) -> list[bytes]:
    """The command line that runs ``argv`` through ``execwrap`` with these settings, every
    word encoded as Popen would encode it (``os.fsencode``)."""
    words = [os.fsencode(sys.executable), b"-I", b"-S", b"-X", b"utf8", os.fsencode(HELPER)]
    if cwd is not None:
        words.append(b"cwd=" + os.fsencode(cwd))
    if limits.umask is not None:
        words.append(b"umask=%d" % limits.umask)
    for name, soft, hard in limits.rlimits:
        words.append(b"rlimit=%s:%s:%s" % (name.encode(), _word(soft), _word(hard)))
    if limits.nice is not None:
        words.append(b"nice=%d" % limits.nice)
    if groups is not None:
        words.append(b"groups=" + b",".join(b"%d" % g for g in groups))
    if gid is not None:
        words.append(b"gid=%d" % gid)
    if uid is not None:
        words.append(b"uid=%d" % uid)
    words += [b"--", b"%d" % len(argv)]
    words += [os.fsencode(arg) for arg in argv]
    words += [os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env.items()]
    return words


def _word(limit: int | None) -> bytes:
    return b"unlimited" if limit is None else b"%d" % limit
