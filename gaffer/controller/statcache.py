"""The stats the agents push, kept by the controller so listings never wait on an agent.

Each agent sends a ``stats`` message every ``--stats-interval`` seconds (``agent/statpush.py``)
with the rows that moved since its last push, the ids it no longer samples, and ``reset`` on the
first push of a session (drop what is held for the node first). A push, even an empty one, says
that every row held for that node is current as of its arrival: the sample a row gives readers
carries the node's last push time, so ``age`` is how long ago the node last confirmed it, and
grows for a node that went silent (a frozen or cut-off agent). The rows of a node that is down
stay, ageing; they go when an instance stops (its report says so), when the agent removes them,
and when the node is forgotten.

Reading the cache is a look (``look``): every listener (``on_look``; ``statwatch.py``) hears
of it, so the agents sample often only while someone reads what they push.

Each row keeps the pid it was sampled from: ``sample_for`` gives a row only for the process a
listing shows, never a restarted instance's predecessor's numbers.

``status`` answers the cache's figures for the controller's ``status`` (which is polled): it
keeps a count of rows per node as rows come and go, so the figures cost one pass over the
nodes, never one over the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator


@dataclass(frozen=True)
class Sample:
    cpu: float
    """Percent of one core, the process and its children."""
    mem: int
    """RSS bytes, the process and its children."""
    children: int
    sampled_at: float
    """Controller loop time when it arrived (or was last confirmed by its node's push)."""


@dataclass(slots=True)
class _Row:
    node: str
    pid: int
    cpu: float
    mem: int
    children: int


class StatCache:
    """The last sample of every instance, by instance id, as the agents pushed them."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._pushed: dict[str, float] = {}
        """Per node, when its last push arrived."""
        self._held: dict[str, int] = {}
        """Per node, how many rows it holds (nodes holding none are absent)."""
        self.pushes = 0
        self.version = 0
        """Bumped by every change (a push, a discard, a node forgotten): ``row_cache.py`` reads
        the samples again only when it moved."""
        self._listeners: list[Callable[[], None]] = []

    def on_look(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` at every look (it must be cheap: a listing is one look)."""
        self._listeners.append(listener)

    def look(self) -> None:
        """Someone reads the samples (a listing, a chart, a scrape)."""
        for listener in self._listeners:
            listener()

    def __len__(self) -> int:
        return len(self._rows)

    def push(self, node: str, body: dict[str, Any], now: float) -> None:
        """Apply one ``stats`` message from ``node``'s agent (already checked by the codec)."""
        self.pushes += 1
        self.version += 1
        rows = self._rows
        if body["reset"]:
            self._drop_node(node)
        self._drop(node, body["removed"])
        added = 0
        for item in body["rows"]:
            ident = item["id"]
            old = rows.get(ident)
            if old is None:
                added += 1
            elif old.node != node:
                self._count(old.node, -1)
                added += 1
            rows[ident] = _Row(node, item["pid"], float(item["cpu"]), item["mem"], item["children"])
        self._count(node, added)
        self._pushed[node] = now

    def get(self, instance_id: str) -> Sample | None:
        self.look()
        row = self._rows.get(instance_id)
        return None if row is None else self._sample(row)

    def sample_for(self, instance_id: str, node: str | None, pid: int | None) -> Sample | None:
        """The sample of ``instance_id`` only if it is of process ``pid`` on ``node``."""
        self.look()
        row = self._rows.get(instance_id)
        if row is None or row.pid != pid or row.node != node:
            return None
        return self._sample(row)

    def reading(self, instance_id: str, node: str | None, pid: int | None) -> tuple[float, int, float] | None:
        """``sample_for`` as a plain (cpu, mem, sampled_at): what ``ps`` reads for each of up
        to 10,000 rows, without building a Sample for each; not a look by itself (the
        listing looks once)."""
        row = self._rows.get(instance_id)
        if row is None or row.pid != pid or row.node != node:
            return None
        return row.cpu, row.mem, self._pushed.get(row.node, 0.0)

    def items(self) -> Iterable[tuple[str, Sample]]:
        self.look()
        return list(self._iter())

    def _iter(self) -> Iterator[tuple[str, Sample]]:
        for ident, row in self._rows.items():
            yield ident, self._sample(row)

    def _sample(self, row: _Row) -> Sample:
        return Sample(row.cpu, row.mem, row.children, self._pushed.get(row.node, 0.0))

    def pushed_at(self, node: str) -> float | None:
        """When ``node``'s last push arrived (None: never)."""
        return self._pushed.get(node)

    def discard(self, node: str, instance_ids: Iterable[str]) -> None:
        """Instances ``node`` says have stopped or are gone: their rows go (a row another
        node pushed since, the instance having moved, stays)."""
        self.version += 1
        self._drop(node, instance_ids)

    def forget_node(self, node: str) -> None:
        """A node forgotten for good: every row of it goes."""
        self.version += 1
        self._pushed.pop(node, None)
        self._drop_node(node)

    def status(self, now: float) -> dict[str, Any]:
        """The figures ``status`` shows: instances with a sample, the nodes they come from,
        pushes received, and how long ago the oldest sample was confirmed (seconds; None when
        none is held), which grows for a node that went silent. One pass over the nodes."""
        oldest = min((self._pushed.get(node, now) for node in self._held), default=None)
        return {
            "instances": len(self._rows), "nodes": len(self._held), "pushes": self.pushes,
            "oldest_age": None if oldest is None else round(max(0.0, now - oldest), 3),
        }

    def _drop(self, node: str, instance_ids: Iterable[str]) -> None:
        """The rows of ``instance_ids`` that ``node`` holds go (another node's stay)."""
        rows = self._rows
        dropped = 0
        for ident in instance_ids:
            row = rows.get(ident)
            if row is not None and row.node == node:
                del rows[ident]
                dropped += 1
        self._count(node, -dropped)

    def _drop_node(self, node: str) -> None:
        if self._held.pop(node, 0):
            for ident in [i for i, row in self._rows.items() if row.node == node]:
                del self._rows[ident]

    def _count(self, node: str, change: int) -> None:
        if change:
            held = self._held.get(node, 0) + change
            if held:
                self._held[node] = held
            else:
                del self._held[node]
