"""When an agent samples and pushes its stats: often while someone looks, rarely otherwise.

Sampling reads /proc for every process of the host; at 10,000 instances that is most of what
an idle agent does. Nobody needs a fresh sample nobody reads, so the controller tells its
agents when someone looks at the stats (a ``ps``, an HTTP listing, a dashboard with its live
charts open, a ``/metrics`` scrape): a ``stats_watch`` command with a lease in seconds
(``controller/statwatch.py``). The rule:

- while a lease runs, push every ``interval`` (``--stats-interval``, 5 s by default);
- otherwise every ``interval * IDLE_EVERY`` (a minute by default), so the rows a first
  ``ps`` after a quiet spell shows are at most that old (its ``age`` column says so);
- a lease arriving when the last push is more than ``interval`` old pushes at once, so the
  next listing, chart tick or scrape sees numbers from now.

CPU is measured between two samples, so a row pushed after a quiet spell is the average over
it. Pure: the time is passed in.
"""

from __future__ import annotations

IDLE_EVERY = 12
"""The idle cadence, in ``--stats-interval``s."""


def next_push(last: float, watched_until: float, now: float, interval: float) -> float:
    """When the next push is due, given the ``last`` one and the lease (``watched_until``)."""
    if now < watched_until:
        return last + interval
    return last + interval * IDLE_EVERY
