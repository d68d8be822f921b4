"""Telling the agents that someone looks at the stats, so they sample often only then.

An agent samples its instances every ``--stats-interval`` while it holds a ``stats_watch``
lease, and only every ``IDLE_EVERY`` intervals otherwise (``agent/statcadence.py``). A look is
any read of the stat cache: ``ps`` and ``GET /v1/instances`` (``RowCache.rows``), a dashboard's
live charts (the ``stats`` of ``/v1/events``, read every tick while the page is open), a
``/metrics`` scrape, one instance's sample. Each look renews the lease of every connected
agent when half of it has run out (one command per agent per ``LEASE / 2`` however many
looks), and an agent that connects while the lease runs gets the rest of it.

``renew`` decides (pure, time passed in); ``StatWatch`` carries it out.
"""

from __future__ import annotations

from typing import Callable

LEASE = 60.0
"""Seconds an agent samples every interval after the last look: about one ``ps`` a minute,
a dashboard's ticks, or Prometheus' default 15 s scrapes keep it at every interval."""


def renew(now: float, until: float, lease: float = LEASE) -> float | None:
    """The lease's new end if the agents must be told now (none runs, or half of it is gone);
    None if the running one is long enough."""
    return now + lease if until - now <= lease / 2 else None


class StatWatch:
    def __init__(self, clock: Callable[[], float], send_all: Callable[[float], None], lease: float = LEASE) -> None:
        """``send_all(seconds)`` tells every connected agent to sample often for ``seconds``."""
        self._clock = clock
        self._send_all = send_all
        self._lease = lease
        self.until = float("-inf")
        self.sent = 0

    def looked(self) -> None:
        until = renew(self._clock(), self.until, self._lease)
        if until is not None:
            self.until = until
            self.sent += 1
            self._send_all(self._lease)

    def remaining(self) -> float:
        """Seconds of the running lease left (0: none), for an agent that connects now."""
        return max(0.0, self.until - self._clock())
