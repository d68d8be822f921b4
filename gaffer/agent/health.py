"""The readiness policy of one instance: when to check it, and what its results make it (pure).

Vocabulary::

    status     running (up, not yet ready), ready, unhealthy: ``State`` values
    check      one run of the template's probe (``probes.py``): healthy or not
    streak     successes in a row, or failures in a row that count

Flow (``checks.py`` carries it out, with the time passed in)::

    instance up at t0 ─► first(t0) -> Watch (first check due at t0)
    due(watch, now) ─► begin(watch, now) -> Watch (in flight: no second check until its result)
    result ─► record(check, watch, ok, now, restart=) -> Verdict
                 ok:   successes + 1, failures 0; success_threshold in a row -> ready
                 fail: in the start period (the check began before t0 + start_period):
                       not counted (only the success streak ends);
                       else failures + 1, successes 0; failure_threshold in a row -> unhealthy
                       (and, with ``restart``, the instance is to be restarted)
    READY=1 ─► notified(watch) -> Verdict (ready; ``notify = true``)

Guard rails: one check of an instance at a time (``begin`` refuses while one is in flight), so
a slow probe never piles up; the next is due ``interval`` after the last one began, or at once
if that has passed; a status changes only when a streak reaches its threshold, and a verdict
says so once (``became``), so each change is announced once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from gaffer.agent.lifecycle import State
from gaffer.common.healthspec import HealthCheck


@dataclass(frozen=True)
class Watch:
    """Where the checks of one instance (one process) stand."""

    started_at: float
    """When the instance came up: the start period counts from here."""
    next_at: float
    """When the next check is due (ignored while one is in flight)."""
    status: State = State.RUNNING
    successes: int = 0
    failures: int = 0
    began: float | None = None
    """When the check in flight began, or None: no check in flight."""

    @property
    def busy(self) -> bool:
        return self.began is not None


class Verdict(NamedTuple):
    """A result's effect: the new ``watch``; ``became`` the new status when it changed (to be
    announced), else None; ``restart``: stop the instance and start it again."""

    watch: Watch
    became: State | None = None
    restart: bool = False


def first(started_at: float, status: State = State.RUNNING) -> Watch:
    """The watch of an instance that just came up (or whose check changed: ``status`` is the
    one it has): its first check is due at once."""
    return Watch(started_at=started_at, next_at=started_at, status=status)


def due_in(watch: Watch, now: float) -> float | None:
    """Seconds until the next check may begin (0: now), or None while one is in flight."""
    if watch.busy:
        return None
    return max(0.0, watch.next_at - now)


def begin(watch: Watch, now: float) -> Watch | None:
    """The watch with a check begun at ``now``, or None: one is in flight, or none is due."""
    if watch.busy or now < watch.next_at:
        return None
    return replace(watch, began=now)


def record(check: HealthCheck, watch: Watch, ok: bool, now: float, *, restart: bool = True) -> Verdict:
    """What the result of the check in flight makes the instance (see the module docstring).

    ``restart``: the template's ``restart_on_unhealthy``. A result with no check in flight
    (a stale one) changes nothing.
    """
    began = watch.began
    if began is None:
        return Verdict(watch)
    next_at = max(began + check.interval, now)
    if ok:
        successes = watch.successes + 1
        status = watch.status
        became = None
        if status is not State.READY and successes >= check.success_threshold:
            status = became = State.READY
        after = replace(watch, next_at=next_at, began=None, successes=successes, failures=0, status=status)
        return Verdict(after, became)
    if began < watch.started_at + check.start_period:
        return Verdict(replace(watch, next_at=next_at, began=None, successes=0))
    failures = watch.failures + 1
    status = watch.status
    became = None
    if status is not State.UNHEALTHY and failures >= check.failure_threshold:
        status = became = State.UNHEALTHY
    after = replace(watch, next_at=next_at, began=None, successes=0, failures=failures, status=status)
    return Verdict(after, became, restart=became is State.UNHEALTHY and restart)


def notified(watch: Watch) -> Verdict:
    """``READY=1`` from the instance: ready now (a second one changes nothing)."""
    if watch.status is State.READY:
        return Verdict(watch)
    return Verdict(replace(watch, status=State.READY, failures=0), State.READY)
