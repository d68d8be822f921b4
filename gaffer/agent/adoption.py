"""Finding the processes an earlier run of this agent started, so a restarted agent adopts them.

The agent spawns every instance as a session leader with GAFFER_AGENT_ID, GAFFER_NODE,
GAFFER_TEMPLATE and GAFFER_INSTANCE (and GAFFER_SPEC) in its environment. Those survive the
agent; a state file could be lost or stale, the kernel's process table cannot. So discovery
reads /proc: ``getsid`` (one cheap syscall) rejects every process that does not lead its
session, then ``environ`` and ``stat`` of the leaders. Children of an instance are in its
session but do not lead it, so they are never mistaken for an instance.

Processes vanish, turn into zombies or belong to users we may not inspect at any moment of
the scan; each such process is skipped, never an error. Both files are read through one open
``/proc/<pid>`` directory, which stays bound to one process: if the pid is reused mid-scan
the reads fail instead of mixing two processes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from gaffer.agent.ownership import ProcInfo
from gaffer.common.topics import instance_id as make_instance_id

log = logging.getLogger("gaffer.adoption")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = "/proc"


@dataclass(frozen=True)
class Found:
    """One live instance process found in /proc."""

    pid: int
    instance_id: str
    template: str
    ordinal: int | str
    started_at: float
    spec: str | None
    start_ticks: int = 0


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that adoption needs."""

    state: str
    ppid: int
    pgrp: int
    session: int
    start_ticks: int
    exit_status: int | None


def parse_stat(raw: bytes) -> ProcStat:
    """Parse ``stat``; the command name may hold spaces and parentheses, so split after the last ')'."""
    rest = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(
        state=rest[0].decode(),
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        start_ticks=int(rest[19]),
        exit_status=int(rest[49]) if len(rest) > 49 else None,
    )


def read_stat(pid: int, dir_fd: int | None = None) -> ProcStat:
    """``stat`` of ``pid``, or through an open ``/proc/<pid>`` directory (which stays bound to
    that one process: once it is reaped this raises ProcessLookupError, never another's data)."""
    path = "stat" if dir_fd is not None else f"{PROC}/{pid}/stat"
    return parse_stat(_read(path, dir_fd))


def create_time(start_ticks: int, boot_time: float | None = None) -> float:
    """Start time in seconds since the epoch, computed exactly as psutil's ``create_time``."""
    return start_ticks / CLOCK_TICKS + (read_boot_time() if boot_time is None else boot_time)


def read_boot_time() -> float:
    """When the system booted, in seconds since the epoch: ``btime`` of ``/proc/stat``, read
    each time as psutil's ``boot_time`` reads it (so ``create_time`` matches psutil's), without
    importing psutil (about 2 MB) into every agent for this one number."""
    with open(f"{PROC}/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError(f"{PROC}/stat has no btime line")


def discover(node: str, agent_id: str) -> list[Found]:
    """Live session leaders whose environment says this agent on this node started them.

    Sorted by instance id, then start time (so a duplicate comes after the original).
    """
    agent_mark = b"\0GAFFER_AGENT_ID=" + agent_id.encode() + b"\0"
    node_mark = b"\0GAFFER_NODE=" + node.encode() + b"\0"
    boot = read_boot_time()
    me = os.getpid()
    found = []
    with os.scandir(PROC) as entries:
        for entry in entries:
            name = entry.name
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            match = _examine(pid, agent_mark, node_mark, boot)
            if match is not None:
                found.append(match)
    found.sort(key=lambda f: (f.instance_id, f.started_at))
    return found


def _examine(pid: int, agent_mark: bytes, node_mark: bytes, boot: float) -> Found | None:
    try:
        if os.getsid(pid) != pid:
            return None
        procdir = os.open(f"{PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        env = b"\0" + _read("environ", procdir) + b"\0"
        if agent_mark not in env or node_mark not in env:
            return None
        stat = parse_stat(_read("stat", procdir))
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(procdir)
    if stat.session != pid or stat.state in ("Z", "X"):
        return None
    values = _gaffer_env(env)
    template = values.get("GAFFER_TEMPLATE")
    raw_ordinal = values.get("GAFFER_INSTANCE")
    if not template or not raw_ordinal:
        log.warning("pid %d carries this agent's id but no GAFFER_TEMPLATE/GAFFER_INSTANCE", pid)
        return None
    ordinal: int | str = int(raw_ordinal) if raw_ordinal.isascii() and raw_ordinal.isdecimal() else raw_ordinal
    return Found(
        pid=pid,
        instance_id=make_instance_id(template, ordinal),
        template=template,
        ordinal=ordinal,
        started_at=create_time(stat.start_ticks, boot),
        spec=values.get("GAFFER_SPEC"),
        start_ticks=stat.start_ticks,
    )


def _gaffer_env(env: bytes) -> dict[str, str]:
    values = {}
    for item in env.split(b"\0"):
        if item.startswith(b"GAFFER_"):
            key, _, value = item.partition(b"=")
            values[key.decode(errors="replace")] = value.decode(errors="replace")
    return values


def _read(path: str, dir_fd: int | None = None) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def snapshot(cgroups: bool = False, skip: frozenset[int] = frozenset()) -> list[ProcInfo]:
    """Every process in /proc as a ``ProcInfo`` (stat, GAFFER_ markers, and the cgroup v2 path
    when ``cgroups``), for ``ownership``'s pure decisions. Processes that vanish or whose
    environment we may not read are kept with what could be read (markers None): their session
    and parent still tie them to an instance. Costs about 20 us per process; run it off the
    loop (``tracking`` does) when the table is large."""
    out = []
    with os.scandir(PROC) as entries:
        for entry in entries:
            name = entry.name
            if not name.isdigit() or int(name) in skip:
                continue
            info = read_info(int(name), cgroups)
            if info is not None:
                out.append(info)
    return out


def read_info(pid: int, cgroups: bool = False) -> ProcInfo | None:
    """One process as a ``ProcInfo``, or None once it is gone."""
    try:
        procdir = os.open(f"{PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            stat = parse_stat(_read("stat", procdir))
        except (OSError, ValueError, IndexError):
            return None
        try:
            values = _gaffer_env(_read("environ", procdir))
        except OSError:
            values = {}
        cgroup = None
        if cgroups:
            try:
                cgroup = parse_cgroup(_read("cgroup", procdir))
            except OSError:
                pass
    finally:
        os.close(procdir)
    return ProcInfo(
        pid=pid, ppid=stat.ppid, pgid=stat.pgrp, sid=stat.session, start_ticks=stat.start_ticks,
        state=stat.state, node=values.get("GAFFER_NODE"), template=values.get("GAFFER_TEMPLATE"),
        instance=values.get("GAFFER_INSTANCE"), agent_id=values.get("GAFFER_AGENT_ID"),
        spec=values.get("GAFFER_SPEC"), cgroup=cgroup,
    )


def parse_cgroup(raw: bytes) -> str | None:
    """The cgroup v2 path (``0::/path``) in ``/proc/<pid>/cgroup``, or None."""
    for line in raw.split(b"\n"):
        if line.startswith(b"0::"):
            return line[3:].decode(errors="replace") or None
    return None
