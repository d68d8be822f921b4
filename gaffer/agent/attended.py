"""Whether a one-off run still has a client: what to do with runs whose lease lapsed (pure).

``gafferctl run`` is a terminal command: the run belongs to the client that started it. The
client holds a *lease* on its run: the controller renews it each time the client waits on the
run (``wait``), and the client lets go at the end (``release``). A client that vanishes (killed
with -9, its host or network gone, the controller gone) renews nothing, and the lease lapses:

- a lapsed run that still runs is **stopped** (its stop signal to the whole group, KILL after
  ``graceful_timeout``, like any stop);
- a lapsed run that has ended is **forgotten** (``ps`` no longer lists it; its exit was
  already reported to the controller, which keeps it for ``wait``).

So nothing a vanished client started outlives it by more than the lease (the last renewal's
``seconds``) plus the graceful timeout. A run started without a lease (``gaffer run``, which
is its own client; an API client that asked for none) is never touched here: it is kept as
the last ``runs.KEEP`` runs are. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

MAX_LEASE = 3_600.0
"""Longest lease one renewal may ask for, in seconds."""


@dataclass(frozen=True)
class RunView:
    """What the decision needs of one run: its key, its lease's end (None: no lease), and
    whether its process is still alive."""

    key: str
    expires: float | None
    alive: bool


@dataclass(frozen=True)
class Lapsed:
    """The verdict: runs to stop, runs to forget, and when to look again (None: no lease
    runs out later; an exit is the other reason to look again)."""

    stop: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    next_check: float | None = None


def renewed(expires: float | None, now: float, seconds: float) -> float:
    """A lease's end after a renewal for ``seconds`` (0: it ends now). A renewal never moves
    the end back, except a release (``seconds == 0``), which ends it at once."""
    if seconds <= 0:
        return now
    until = now + min(seconds, MAX_LEASE)
    return until if expires is None else max(expires, until)


def lapsed(runs: Iterable[RunView], now: float) -> Lapsed:
    """Which runs lost their client at ``now``: alive ones are stopped, ended ones forgotten."""
    stop: list[str] = []
    forget: list[str] = []
    later: float | None = None
    for run in runs:
        if run.expires is None:
            continue
        if run.expires <= now:
            (stop if run.alive else forget).append(run.key)
        elif later is None or run.expires < later:
            later = run.expires
    return Lapsed(tuple(stop), tuple(forget), later)
