"""The agent's record of what it spawned: instance id, pid and kernel start time, on disk.

A restarted agent finds its processes in /proc by their GAFFER_ environment (``adoption``), but
a process that replaced its environment (``exec env -i ...``) would be invisible there. The
journal is the backstop: one appended line per spawn (id, pid, start time in clock ticks, spec
hash) and per exit, so every process the agent
ever started can be found again, and a reused pid is told apart by its start time.

Appending is one ``write`` on an ``O_APPEND`` descriptor (no fsync: the journal only has to
survive the agent, not the machine, and processes do not survive a reboot either); the file is
rewritten with just the live entries when the agent starts.

Spawns the Manager reports (``on_spawn``) are written at the end of the loop turn, all in one
write: reading ``/proc/<pid>/stat`` just after the fork waits for the child's exec (0.2-0.3 ms
a read, the journal's whole cost in a burst of spawns), a few spawns later it takes ~15 us. An
exit of a noted spawn writes the noted ones first, and drops its own (its pid is reaped by
then, so its stat could already be another process's).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from gaffer.agent import adoption
from gaffer.agent.processes import Proc


@dataclass(frozen=True)
class Entry:
    instance_id: str
    pid: int
    start_ticks: int
    spec: str | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.errors = 0
        self._noted: list[tuple[str, int, str | None]] = []

    def spawned(self, instance_id: str, pid: int, spec: str | None) -> None:
        self._write(self._line(instance_id, pid, spec))

    def flush(self) -> None:
        """Write the spawns noted since the last flush, in one write."""
        noted, self._noted = self._noted, []
        text = "".join(self._line(*entry) for entry in noted)
        if text:
            self._write(text)

    @staticmethod
    def _line(instance_id: str, pid: int, spec: str | None) -> str:
        """The spawn line, or "" when the process is already gone (nothing left to find)."""
        try:
            ticks = adoption.read_stat(pid).start_ticks
        except (OSError, ValueError):
            return ""
        return f"+ {instance_id} {pid} {ticks} {spec or '-'}\n"

    def exited(self, instance_id: str, pid: int) -> None:
        self._write(f"- {instance_id} {pid}\n")

    def on_spawn(self, instance_id: str, process: Proc, spec: str | None, oneoff: bool) -> None:
        """ProcessHooks: every spawn is noted, one-off runs too, and written at the end of
        this loop turn (``flush``)."""
        if process.pid is None:
            return
        if not self._noted:
            asyncio.get_running_loop().call_soon(self.flush)
        self._noted.append((instance_id, process.pid, spec))

    def on_adopt(self, instance_id: str, process: Proc) -> None:
        """ProcessHooks: adopted leaders are written at once by ``rewrite`` after settling."""

    def on_exit(self, instance_id: str, process: Proc, oneoff: bool) -> None:
        if process.pid is None:
            return
        pid = process.pid
        self._noted = [entry for entry in self._noted if entry[1] != pid]
        self.flush()
        self.exited(instance_id, pid)

    def _write(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode())
        except OSError:
            self.errors += 1

    def rewrite(self, live: Iterable[Entry]) -> None:
        """Replace the journal with ``live`` (atomically), dropping the history of the dead."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            for entry in live:
                out.write(f"+ {entry.instance_id} {entry.pid} {entry.start_ticks} {entry.spec or '-'}\n")
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.flush()

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1


def read(path: Path) -> list[Entry]:
    """Entries spawned and not recorded as exited, in the order they were written.

    A torn last line (the agent died mid-write) and lines that do not parse are skipped.
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    live: dict[tuple[str, int], Entry] = {}
    for line in text.split("\n")[:-1]:
        parts = line.split(" ")
        try:
            if parts[0] == "+" and len(parts) == 5:
                spec = None if parts[4] == "-" else parts[4]
                entry = Entry(parts[1], int(parts[2]), int(parts[3]), spec)
                live[(entry.instance_id, entry.pid)] = entry
            elif parts[0] == "-" and len(parts) == 3:
                live.pop((parts[1], int(parts[2])), None)
        except ValueError:
            continue
    return list(live.values())


def still_running(entry: Entry) -> bool:
    """Whether ``entry``'s process is alive, is that very process, and still leads its session."""
    try:
        stat = adoption.read_stat(entry.pid)
        leads = os.getsid(entry.pid) == entry.pid
    except (OSError, ValueError):
        return False
    return stat.start_ticks == entry.start_ticks and stat.state != "Z" and leads
