"""Checks: runs the readiness checks of every watched instance, and hears their ``READY=1``.

One ``Watch`` (``health.py``) per instance that came up with a check or ``notify``. For a check,
a timer of the ``Clock`` fires when ``health.due_in`` says, and starts the check in a task that
Checks owns; its result goes through ``health.record``, and a verdict that changes the status
is handed to the instance's ``on_change`` (the Executor's, which moves the instance, publishes
the event and restarts it if asked). At most ``limit`` checks run at once across the agent (a
semaphore; the others wait their turn, and their timeout starts only once they run). Nothing
here blocks the loop: probes are asyncio all the way (``probes.py``).

``unwatch`` (the instance stopped, exited or is being restarted) cancels its timer and its
task; a cancelled exec check has its group killed. ``aclose`` ends everything.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol

from gaffer.agent import health
from gaffer.agent.health import Verdict, Watch
from gaffer.agent.lifecycle import State
from gaffer.agent.probes import Probes, Result, Target
from gaffer.common.clock import Cancellable, Clock
from gaffer.common.healthspec import HealthCheck

log = logging.getLogger("gaffer.checks")

MAX_RUNNING = 64
"""Checks running at once across the agent."""

class Prober(Protocol):
    """What runs one check (``Probes``; ``gaffer.testing.probes.FakeProbes``)."""

    async def run(self, check: HealthCheck, target: Target) -> Result: ...


OnChange = Callable[[Verdict, str], None]
"""Told of a verdict that changes the status, with the check's last output."""


@dataclass(eq=False)
class _Watched:
    watch: Watch
    on_change: OnChange
    check: HealthCheck | None = None
    target: Target | None = None
    restart: bool = True
    timer: Cancellable | None = None
    task: asyncio.Task | None = None


class Checks:
    """The checks of one agent's instances (keys are the caller's: one per instance)."""

    def __init__(self, clock: Clock, *, limit: int = MAX_RUNNING, probes: Prober | None = None) -> None:
        self._clock = clock
        self._probes: Prober = probes if probes is not None else Probes()
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._watched: dict[Hashable, _Watched] = {}
        self.runs = 0

    def __len__(self) -> int:
        return len(self._watched)

    def watch(
        self,
        key: Hashable,
        on_change: OnChange,
        check: HealthCheck | None,
        target: Target | None,
        *,
        restart: bool = True,
        status: State = State.RUNNING,
    ) -> None:
        """Watch ``key`` from now, from ``status``, replacing any earlier watch of it. With
        ``check`` None, only ``notified`` changes it (a ``notify`` template without a check)."""
        self.unwatch(key)
        watched = _Watched(health.first(self._clock.time(), status), on_change, check, target, restart)
        self._watched[key] = watched
        if check is not None:
            self._arm(key, watched)

    def unwatch(self, key: Hashable) -> None:
        watched = self._watched.pop(key, None)
        if watched is None:
            return
        if watched.timer is not None:
            watched.timer.cancel()
        if watched.task is not None:
            watched.task.cancel()

    def unwatch_all(self) -> None:
        for key in list(self._watched):
            self.unwatch(key)

    def watching(self, key: Hashable) -> bool:
        return key in self._watched

    def notified(self, key: Hashable, output: str) -> bool:
        """``READY=1`` from ``key``'s process; False if it is not watched."""
        watched = self._watched.get(key)
        if watched is None:
            return False
        verdict = health.notified(watched.watch)
        watched.watch = verdict.watch
        if verdict.became is not None:
            watched.on_change(verdict, output)
        return True

    def _arm(self, key: Hashable, watched: _Watched) -> None:
        delay = health.due_in(watched.watch, self._clock.time())
        if delay is not None:
            watched.timer = self._clock.call_later(delay, self._due, key, watched)

    def _due(self, key: Hashable, watched: _Watched) -> None:
        watched.timer = None
        if self._watched.get(key) is not watched:
            return
        watched.task = asyncio.get_running_loop().create_task(self._run(key, watched))

    async def _run(self, key: Hashable, watched: _Watched) -> None:
        assert watched.check is not None and watched.target is not None
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        async with self._slots:
            began = health.begin(watched.watch, self._clock.time())
            if began is None:
                return
            watched.watch = began
            try:
                result = await self._probes.run(watched.check, watched.target)
            except Exception as exc:  # a bug in a probe must not end the checks of this instance
                log.exception("%s: check failed to run", key)
                result = Result(False, f"check failed to run: {exc!r}")
            self.runs += 1
        watched.task = None
        if self._watched.get(key) is not watched:
            return
        verdict = health.record(watched.check, watched.watch, result.ok, self._clock.time(), restart=watched.restart)
        watched.watch = verdict.watch
        self._arm(key, watched)
        if verdict.became is not None:
            watched.on_change(verdict, result.output)

    async def aclose(self) -> None:
        """Cancel every timer and check, and wait for the checks to end."""
        tasks = [w.task for w in self._watched.values() if w.task is not None]
        self.unwatch_all()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
