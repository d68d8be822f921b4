"""What an agent's stats push sends: only the rows that changed since the last push.

The agent samples its instances every ``--stats-interval`` seconds (``statpush.py``) and the
controller keeps the last values it was sent (``controller/statcache.py``). Sending every row
every time would cost a thousand-instance host a message of 70 KB per interval for numbers
that mostly did not move, so a row goes only when it moved enough to matter to a reader:

- its pid or its number of children changed (a restart, a fork);
- cpu moved by more than ``cpu`` percentage points;
- memory moved by more than ``mem`` of what was last sent (a fraction).

Rows of instances that are no longer sampled (stopped, gone) are sent as removals. The
comparison is always against what was *sent*, never the previous sample, so a slow drift adds
up until it crosses the threshold and is sent then. Pure: no clock, no process, no socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

CPU_THRESHOLD = 1.0
MEM_THRESHOLD = 0.02


@dataclass(frozen=True, slots=True)
class StatRow:
    """One instance's sample: cpu in percent of one core and memory (RSS bytes), both of the
    process and its children, and how many children it has."""

    pid: int
    cpu: float
    mem: int
    children: int

    def to_wire(self, ident: str) -> dict[str, object]:
        return {"id": ident, "pid": self.pid, "cpu": round(self.cpu, 1), "mem": self.mem,
                "children": self.children}


@dataclass(frozen=True)
class Thresholds:
    cpu: float = CPU_THRESHOLD
    mem: float = MEM_THRESHOLD


@dataclass(frozen=True)
class StatChanges:
    """What one push carries: changed rows by instance id, and the ids no longer sampled."""

    rows: dict[str, StatRow] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rows or self.removed)


def moved(old: StatRow, new: StatRow, limits: Thresholds) -> bool:
    """Whether ``new`` differs from ``old`` (last sent) by more than ``limits``."""
    if old.pid != new.pid or old.children != new.children:
        return True
    if abs(new.cpu - old.cpu) > limits.cpu:
        return True
    return abs(new.mem - old.mem) > limits.mem * old.mem


def changes(sent: Mapping[str, StatRow], current: Mapping[str, StatRow], limits: Thresholds) -> StatChanges:
    """The rows of ``current`` to send, given what was ``sent`` last (see the module docstring),
    and the ids of ``sent`` that ``current`` no longer has, sorted."""
    rows = {
        ident: row for ident, row in current.items()
        if (old := sent.get(ident)) is None or moved(old, row, limits)
    }
    removed = tuple(sorted(ident for ident in sent if ident not in current))
    return StatChanges(rows, removed)


def after(sent: Mapping[str, StatRow], pushed: StatChanges) -> dict[str, StatRow]:
    """What the controller holds once ``pushed`` has arrived on top of ``sent``."""
    held = {ident: row for ident, row in sent.items() if ident not in pushed.removed}
    held.update(pushed.rows)
    return held
