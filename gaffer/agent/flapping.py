"""Crash-loop protection as a pure function of (policy, history, now), one history per instance.

The Manager keeps one ``FlapState`` per instance and feeds it every exit of that instance that
it did *not* cause and that the restart policy wants to restart. ``record_exit`` answers what
to do with the instance:

- ``RESPAWN``: restart as usual (subject to its backoff),
- ``SUSPEND``: ``attempts`` exits happened within ``window`` seconds: do not respawn it until
  ``resume_at``; that is one *retry*,
- ``GIVE_UP``: more than ``max_retry`` retries: the instance is failed on this node.

Counting per instance, not per template, is what keeps crashes spread over many instances
(an OOM killer picking a victim now and then, a deploy killing them one by one) from being
taken for a crash loop: ten instances killed once each are ten histories of one exit, not one
history of ten. Only an instance that keeps exiting is suspended, and only it gives up; its
siblings run and restart as usual, and the template is failed once every instance gave up
(``Entry.status``), as supervisor counts per process and Kubernetes backs off per container.

A full window after a resume without another flap, the retry count starts again from zero, so a
service that flapped once last week does not give up at its first hiccup today.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from gaffer.common.template import Flapping


class Verdict(enum.Enum):
    RESPAWN = "respawn"
    SUSPEND = "suspend"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class FlapState:
    exits: tuple[float, ...] = ()
    retries: int = 0
    resume_at: float | None = None
    failed: bool = False

    def suspended(self, now: float) -> bool:
        return self.resume_at is not None and now < self.resume_at


@dataclass(frozen=True)
class FlapDecision:
    verdict: Verdict
    state: FlapState

    @property
    def resume_at(self) -> float | None:
        return self.state.resume_at


def record_exit(policy: Flapping | None, state: FlapState, now: float) -> FlapDecision:
    """Account for one counted exit of an instance at ``now`` and say what to do with it."""
    if policy is None:
        return FlapDecision(Verdict.RESPAWN, state)
    if state.failed:
        return FlapDecision(Verdict.GIVE_UP, state)
    if state.suspended(now):
        return FlapDecision(Verdict.SUSPEND, state)
    retries = state.retries
    if state.resume_at is not None and now >= state.resume_at + policy.window:
        retries = 0
    horizon = now - policy.window
    exits = tuple(t for t in state.exits if t > horizon) + (now,)
    if len(exits) < policy.attempts:
        return FlapDecision(Verdict.RESPAWN, replace(state, exits=exits, retries=retries))
    retries += 1
    if policy.max_retry >= 0 and retries > policy.max_retry:
        return FlapDecision(
            Verdict.GIVE_UP, FlapState(exits=(), retries=retries, resume_at=None, failed=True)
        )
    return FlapDecision(
        Verdict.SUSPEND, FlapState(exits=(), retries=retries, resume_at=now + policy.retry_in)
    )


def reset() -> FlapState:
    """The state after an operator starts the template again (or pauses it) by hand."""
    return FlapState()


def resumed(state: FlapState, now: float) -> FlapState:
    """The state when the resume timer fires at ``now``: timers may fire a hair early, so the
    suspension ends now whatever ``resume_at`` says (the clock must agree with the timer)."""
    if state.resume_at is not None and state.resume_at > now:
        return replace(state, resume_at=now)
    return state
