"""Process statistics from /proc (``proctable.py``), computed only when someone asks.

CPU percent needs two readings; the sampler keeps, of every process it measured, its start
time, its cpu ticks and when they were read, so the next request measures the interval since
the last one (like ``top``). A process it has never seen is primed: its ticks are noted and
the table read again ``PRIME_INTERVAL`` later, so it gets a real figure instead of a bogus 0
(a process a few milliseconds old has no tick yet); only samples with new processes read twice.
Children are found from the same scan of /proc that reads every number: one ``stat`` read per
process of the host, no psutil (whose ``Process`` objects cost about 4x as much per process,
and whose import, about 2 MB, no agent needs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from gaffer.agent.proctable import Reading, Seen, boottime, measure, read_cmdline, read_table, unseen

PRIME_INTERVAL = 0.1


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
        self._seen: dict[int, Seen] = {}

    async def sample(self, pids: Iterable[int], cmdline: bool = True) -> dict[int, ProcStats]:
        """Stats for each live pid in ``pids`` (dead ones are left out); without ``cmdline``
        (the stats push) each process's command line is not read (``cmdline`` is empty).

        The scan of /proc yields to the loop as it goes (``proctable.YIELD_EVERY``): sampling
        a big host is spread over many short steps, never one long stall."""
        pids = list(pids)
        table, now = await read_table(), boottime()
        fresh = unseen(table, pids, self._seen, now)
        if fresh:
            await asyncio.sleep(PRIME_INTERVAL)
            table, now = await read_table(), boottime()
        readings, self._seen = measure(table, pids, {**self._seen, **fresh}, now)
        return {pid: _stats(reading, cmdline) for pid, reading in readings.items()}


def _stats(reading: Reading, with_cmdline: bool) -> ProcStats:
    children = tuple(ProcStats(c.pid, c.cpu, c.rss) for c in reading.children)
    cmdline = read_cmdline(reading.pid) if with_cmdline else ()
    return ProcStats(reading.pid, reading.cpu, reading.rss, cmdline, children)
