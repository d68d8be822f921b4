"""The stats push: sample this node's instances and send the controller what changed
(``statdiff.changes``), so ``ps`` answers from memory; every ``--stats-interval`` seconds while
someone looks, rarely otherwise (``statcadence.next_push``).

Each push is one or more ``stats`` messages (at most ``MAX_STAT_ROWS`` rows each). A push
with nothing changed is still sent, empty: it tells the controller that every row it holds
for this node is current as of now (the controller ages a node's rows from its last push, not
from when each row last moved). The first push of each session (a new ``welcome``: the
controller may have restarted and hold nothing) carries every row, its first message with
``reset`` (the controller drops the node's rows before applying it); so does the push after
one that could not be sent whole.

Sampling reuses ``StatsSampler`` (its own one, so the live ``stats`` command and the push never
shorten each other's cpu interval) and yields to the loop as it goes. The pusher owns its task
and ``stop`` cancels it; ``watch`` (the controller's ``stats_watch``) wakes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol

from gaffer.agent.statcadence import next_push
from gaffer.agent.statdiff import StatChanges, StatRow, Thresholds, after, changes
from gaffer.agent.stats import Sampler, StatsSampler
from gaffer.common import arguments as arg
from gaffer.common.limits import MAX_STATS_INTERVAL, MIN_STATS_INTERVAL
from gaffer.common.protocol import MAX_STAT_ROWS
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.agent.stats")

DEFAULT_INTERVAL = 5.0
MIN_INTERVAL, MAX_INTERVAL = MIN_STATS_INTERVAL, MAX_STATS_INTERVAL
MAX_WATCH = 3_600.0
"""The longest ``stats_watch`` lease an agent takes."""


class StatsLink(Protocol):
    """What the pusher needs of ``ControllerLink``."""

    connected: asyncio.Event
    welcomes: int

    def send_stats(self, body: dict[str, Any]) -> bool: ...


class StatPusher:
    def __init__(
        self,
        running: Callable[[], list[tuple[str, int]]],
        link: StatsLink,
        interval: float = DEFAULT_INTERVAL,
        sampler: Sampler | None = None,
        limits: Thresholds = Thresholds(),
    ) -> None:
        """``running``: (instance id, pid) of what runs now (``Manager.running``)."""
        self._running = running
        self._link = link
        self.interval = interval
        self._sampler = sampler if sampler is not None else StatsSampler()
        self._limits = limits
        self._sent: dict[str, StatRow] | None = None
        """What the controller holds for this node, as far as this agent knows (None: unknown,
        the next push resets it)."""
        self._session = -1
        self._task: asyncio.Task | None = None
        self._last = 0.0
        self._watched_until = float("-inf")
        self._wake = asyncio.Event()
        self.pushes = 0
        self.last_cost = 0.0
        """Seconds of loop time the last sample took (for the bench and the logs)."""

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._task = loop.create_task(self._run())

    def watch(self, seconds: float) -> None:
        """Someone looks at the stats: push every interval for ``seconds`` from now (at once
        if the last push is older than an interval)."""
        self._watched_until = asyncio.get_running_loop().time() + seconds
        self._wake.set()

    async def watch_command(self, _op: str, args: dict[str, Any]) -> None:
        """The controller's ``stats_watch`` command: ``{"seconds": lease}``."""
        self.watch(arg.seconds(args, "seconds", arg.MISSING, MAX_WATCH))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = next_push(self._last, self._watched_until, loop.time(), self.interval) - loop.time()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            self._last = loop.time()
            if not self._link.connected.is_set():
                continue
            try:
                await self.push()
            except Exception:  # a failed push must not end the pushing; the next one resets
                log.exception("stats push failed")
                self._sent = None

    async def sample(self) -> dict[str, StatRow]:
        """Every running instance's row, now."""
        running = self._running()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sampled = await self._sampler.sample((pid for _, pid in running), cmdline=False)
        self.last_cost = loop.time() - started
        rows = {}
        for ident, pid in running:
            stats = sampled.get(pid)
            if stats is not None:
                rows[ident] = StatRow(pid, stats.total_cpu, stats.total_mem, len(stats.children))
        return rows

    async def push(self) -> StatChanges:
        """Sample and send what changed (everything, with ``reset``, in a new session)."""
        current = await self.sample()
        if self._session != self._link.welcomes:
            self._session, self._sent = self._link.welcomes, None
        reset = self._sent is None
        pushed = changes(self._sent or {}, current, self._limits)
        if self._send(pushed, reset):
            self._sent = after(self._sent or {}, pushed)
        else:
            self._sent = None
        self.pushes += 1
        return pushed

    def _send(self, pushed: StatChanges, reset: bool) -> bool:
        """Send ``pushed`` in messages of at most MAX_STAT_ROWS rows and removals; whether
        every one went."""
        rows = [row.to_wire(ident) for ident, row in sorted(pushed.rows.items())]
        removed = list(pushed.removed)
        ok = True
        first = True
        while first or rows or removed:
            body = {"rows": rows[:MAX_STAT_ROWS], "removed": removed[:MAX_STAT_ROWS], "reset": reset and first}
            rows, removed = rows[MAX_STAT_ROWS:], removed[MAX_STAT_ROWS:]
            ok = self._link.send_stats(body) and ok
            first = False
        return ok
