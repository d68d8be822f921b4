"""Reading the process table from /proc: one ``stat`` read per process, no psutil.

``/proc/<pid>/stat`` holds every number the stats need: the parent (to find an instance's
descendants), ``utime + stime`` (cpu, in clock ticks, of all the process's threads), the
resident set (pages: the same ``mm`` counter psutil reads from ``statm``) and the start time
(which tells a reused pid from the process it replaced). psutil reads ``stat`` and ``statm``
through a ``Process`` object per pid (about 4x the cost of one ``stat`` read here); a sample
of a big host is dominated by that, so the sampler reads ``stat`` once per process with
``os.open``/``os.read`` and keeps only three integers of each process it watches between
samples.

Pure: ``parse``, ``cpu_percent``, ``descendants`` and ``measure`` take what was read and the
time (``CLOCK_BOOTTIME`` seconds, the clock start times count on) and return values; the shell
is ``read_table`` and ``read_cmdline``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

from gaffer.agent.adoption import PROC

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CPU_CAP = 100.0 * (os.cpu_count() or 1)
"""No process uses more than every core: a reading above this is a clock artefact."""
YIELD_EVERY = 200
"""Processes read between two yields to the loop (a read costs tens of microseconds)."""


@dataclass(frozen=True, slots=True)
class ProcSample:
    """What one ``stat`` read says of a process."""

    ppid: int
    ticks: int
    """utime + stime, clock ticks."""
    rss: int
    """Resident bytes."""
    start: int
    """Start time, clock ticks after boot."""


class Seen(NamedTuple):
    """What the sampler keeps of a process between two samples."""

    start: int
    ticks: int
    at: float


@dataclass(frozen=True, slots=True)
class Reading:
    """One process measured: cpu percent of one core since the last sample, resident bytes."""

    pid: int
    cpu: float
    rss: int
    children: tuple["Reading", ...] = ()


def parse(raw: bytes, page: int = PAGE) -> ProcSample:
    """``stat``'s fields; the command name may hold spaces and ')' so split after the last ')'."""
    rest = raw[raw.rindex(b")") + 2 :].split()
    return ProcSample(int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]) * page, int(rest[19]))


def cpu_percent(before: Seen | None, now_sample: ProcSample, now: float, hz: int = HZ) -> float:
    """Percent of one core ``now_sample`` used since ``before`` (the same process: same start);
    a process not seen before (or a new one under a reused pid) is measured since it started."""
    if before is not None and before.start == now_sample.start:
        ticks, since = before.ticks, before.at
    else:
        ticks, since = 0, now_sample.start / hz
    elapsed = now - since
    if elapsed <= 0:
        return 0.0
    return min(CPU_CAP, max(0.0, (now_sample.ticks - ticks) / hz / elapsed * 100.0))


def descendants(pid: int, tree: Mapping[int, list[int]]) -> list[int]:
    out: list[int] = []
    stack = list(tree.get(pid, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(tree.get(child, ()))
    return out


def children_map(table: Mapping[int, ProcSample]) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = collections.defaultdict(list)
    for pid, sample in table.items():
        if sample.ppid:
            tree[sample.ppid].append(pid)
    return tree


def measure(
    table: Mapping[int, ProcSample], pids: Iterable[int], seen: Mapping[int, Seen], now: float, hz: int = HZ,
) -> tuple[dict[int, Reading], dict[int, Seen]]:
    """Each of ``pids`` found in ``table``, with its descendants, measured against ``seen``
    (the last sample's ``Seen`` of each); and what to keep for the next sample (the processes
    measured now, nothing else: a process gone is forgotten)."""
    tree = children_map(table)
    readings: dict[int, Reading] = {}
    kept: dict[int, Seen] = {}

    def one(pid: int) -> Reading:
        sample = table[pid]
        kept[pid] = Seen(sample.start, sample.ticks, now)
        return Reading(pid, cpu_percent(seen.get(pid), sample, now, hz), sample.rss)

    for pid in pids:
        if pid not in table:
            continue
        top = one(pid)
        kids = tuple(one(kid) for kid in descendants(pid, tree))
        readings[pid] = Reading(pid, top.cpu, top.rss, kids)
    return readings, kept


def unseen(table: Mapping[int, ProcSample], pids: Iterable[int], seen: Mapping[int, Seen], now: float) -> dict[int, Seen]:
    """The processes a sample of ``pids`` would measure (each with its descendants) that
    ``seen`` does not hold (or holds for another process under a reused pid), as ``Seen`` now:
    what to prime them with."""
    tree = children_map(table)
    out: dict[int, Seen] = {}
    for pid in pids:
        if pid not in table:
            continue
        for each in (pid, *descendants(pid, tree)):
            sample, before = table[each], seen.get(each)
            if before is None or before.start != sample.start:
                out[each] = Seen(sample.start, sample.ticks, now)
    return out


def boottime() -> float:
    """Seconds since boot, suspend included: the clock ``stat``'s start times count on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


async def read_table(proc: str = PROC) -> dict[int, ProcSample]:
    """Every process of the host, one ``stat`` read each, yielding to the loop every
    ``YIELD_EVERY`` reads; processes gone meanwhile or unreadable are left out."""
    table: dict[int, ProcSample] = {}
    read = 0
    with os.scandir(proc) as entries:
        names = [entry.name for entry in entries if entry.name.isdigit()]
    for name in names:
        read += 1
        if read >= YIELD_EVERY:
            read = 0
            await asyncio.sleep(0)
        try:
            table[int(name)] = parse(_read(f"{proc}/{name}/stat"))
        except (OSError, ValueError, IndexError):
            continue
    return table


def read_cmdline(pid: int, proc: str = PROC) -> tuple[str, ...]:
    """The command line of ``pid`` (empty if gone, unreadable, or a kernel thread)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return ()
    if not raw:
        return ()
    return tuple(arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0"))
