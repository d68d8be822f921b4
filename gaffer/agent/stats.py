"""Process statistics through psutil, computed only when someone asks.

psutil itself is imported on the first request (about 2 MB that an agent nobody asks for
stats never needs).

CPU percent needs two readings; the sampler keeps the psutil handle of every process it has
seen so the next request measures the interval since the last one (like ``top``). A process it
has never seen is primed and measured over ``PRIME_INTERVAL`` instead of reporting a bogus 0.
Children are found from one scan of /proc per request, not one per instance.
"""

from __future__ import annotations

import asyncio
import collections
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from gaffer.agent.adoption import PROC, read_stat

if TYPE_CHECKING:
    import psutil

PRIME_INTERVAL = 0.1
YIELD_EVERY = 100


@dataclass(frozen=True)
class ProcStats:
    pid: int
    cpu: float
    mem: int
    cmdline: tuple[str, ...] = ()
    children: tuple["ProcStats", ...] = field(default_factory=tuple)

    @property
    def total_cpu(self) -> float:
        return self.cpu + sum(c.cpu for c in self.children)

    @property
    def total_mem(self) -> int:
        return self.mem + sum(c.mem for c in self.children)

    def to_dict(self) -> dict:
        return {
            "pid": self.pid,
            "cpu": round(self.cpu, 1),
            "mem": self.mem,
            "cmdline": list(self.cmdline),
            "children": [
                {"pid": c.pid, "cpu": round(c.cpu, 1), "mem": c.mem} for c in self.children
            ],
        }


class Sampler(Protocol):
    """What the Manager asks for stats (``StatsSampler``; tests pass a fake)."""

    async def sample(self, pids: Iterable[int]) -> dict[int, "ProcStats"]: ...


def summarize(
    templates: Iterable[str], rows: Iterable[tuple[str, str, int]], sampled: dict[int, "ProcStats"]
) -> dict[str, Any]:
    """Per template: the sum of cpu and memory over its instances, and each instance's stats.

    ``rows`` are (template, instance id, pid); pids missing from ``sampled`` (gone meanwhile)
    are left out."""
    result: dict[str, Any] = {name: {"cpu": 0.0, "mem": 0, "instances": []} for name in templates}
    for template, ident, pid in rows:
        stats = sampled.get(pid)
        if stats is None:
            continue
        summary = result[template]
        summary["cpu"] = round(summary["cpu"] + stats.total_cpu, 1)
        summary["mem"] += stats.total_mem
        summary["instances"].append({"id": ident, **stats.to_dict()})
    return result


class StatsSampler:
    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}

    async def sample(self, pids: Iterable[int], cmdline: bool = True) -> dict[int, ProcStats]:
        """Stats for each live pid in ``pids`` (dead ones are left out); without ``cmdline``
        (the stats push) each process's command line is not read (``cmdline`` is empty).

        Reading a process costs about 80 us, so the loop is let go every YIELD_EVERY
        processes: sampling a big host is spread over many short steps, never one long stall."""
        pids = list(pids)
        tree = _children_map()
        wanted: dict[int, list[int]] = {pid: _descendants(pid, tree) for pid in pids}
        every = {p for pid, kids in wanted.items() for p in (pid, *kids)}
        fresh = [pid for pid in every if pid not in self._handles]
        import psutil

        for pid in fresh:
            try:
                handle = psutil.Process(pid)
                handle.cpu_percent(None)
                self._handles[pid] = handle
            except psutil.Error:
                pass
        if fresh:
            await asyncio.sleep(PRIME_INTERVAL)
        result: dict[int, ProcStats] = {}
        read = 0
        for pid, kids in wanted.items():
            read += 1 + len(kids)
            if read >= YIELD_EVERY:
                read = 0
                await asyncio.sleep(0)
            top = self._read(pid, with_cmdline=cmdline)
            if top is None:
                continue
            children = tuple(c for c in (self._read(k) for k in kids) if c is not None)
            result[pid] = ProcStats(top.pid, top.cpu, top.mem, top.cmdline, children)
        for stale in set(self._handles) - every:
            del self._handles[stale]
        return result

    def _read(self, pid: int, with_cmdline: bool = False) -> ProcStats | None:
        handle = self._handles.get(pid)
        if handle is None:
            return None
        import psutil

        try:
            with handle.oneshot():
                cpu = handle.cpu_percent(None)
                mem = handle.memory_info().rss
                cmdline = tuple(handle.cmdline()) if with_cmdline else ()
        except psutil.Error:
            self._handles.pop(pid, None)
            return None
        return ProcStats(pid, cpu, mem, cmdline)


def _children_map() -> dict[int, list[int]]:
    """Each pid's children, from one read of ``/proc/<pid>/stat`` per process.

    Not ``psutil.process_iter``: it keeps a ``psutil.Process`` of every process on the host in
    a module-level cache for as long as the agent lives (about 2 KB each, and a busy host has
    thousands), so one ``gafferctl ps`` grew an idle agent by the size of the host's table."""
    tree: dict[int, list[int]] = collections.defaultdict(list)
    with os.scandir(PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                ppid = read_stat(int(entry.name)).ppid
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
            if ppid:
                tree[ppid].append(int(entry.name))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    out: list[int] = []
    stack = list(tree.get(pid, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(tree.get(child, ()))
    return out
