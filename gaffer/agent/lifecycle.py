"""The life of one instance: its states, the legal moves between them, and what an exit means.

============  ==========================================================================
state         meaning, and where it goes next
============  ==========================================================================
stopped       not running and not wanted to run right now -> starting (spawn),
              running (a process an earlier agent started, adopted after an agent restart),
              backoff (held, or its spawn failed), exited (its spawn failed under
              ``restart = "never"``), failed (it had given up)
starting      spawned, not yet up ``startsecs`` -> running (up long enough), stopping (stop),
              starting (exited, respawned at once), backoff (exited, respawn later),
              exited (exit the restart policy accepts), stopped (exited by itself when it
              was no longer wanted), failed
running       up ``startsecs`` or longer -> the same moves as starting, except running;
              ready, unhealthy (a template with a check or ``notify``: ``agent/health.py``)
ready         running, and its check passes (or it said ``READY=1``) -> unhealthy, and the
              moves of running
unhealthy     running, and its check failed ``failure_threshold`` times in a row -> ready,
              and the moves of running (``restart_on_unhealthy`` stops it: see ``on_exit``)
backoff       exited unexpectedly, waiting for its backoff delay or the end of its flapping
              suspension -> starting, stopped (stop), failed (flapping gave up), exited
              (its spawn failed under ``never``)
stopping      stop signal sent, KILL after ``graceful_timeout`` -> stopped
exited        ended in a way the restart policy accepts (``never``, or ``on-failure`` with an
              expected code), or could not be spawned under ``never`` -> starting only on an
              explicit start
failed        its flapping gave up -> starting only on an explicit start
============  ==========================================================================

A spawn that fails (the program is missing, the cwd or user does not exist) is an exit of a
process that never ran: ``classify_spawn_failure`` says whether to try again, and ``Repeats``
counts the same error coming back, so it is reported once rather than on every retry.

Two decisions are made here, both pure (the Manager feeds them facts and the current time, and
carries out what they return):

- ``next_state(state, event)``: where a plain event (spawned, up, stop, wait, ...) takes an
  instance, refused with IllegalTransition when the event makes no sense in that state;
- ``on_exit(life, exit, policy, flap, now)``: what an exit (or a failed spawn) means for the
  instance: its new ``Life``, its new ``FlapState`` (``flapping``: counted per instance), the
  event to publish, and what comes next (``Then``): nothing, a converge, a spawn now, a
  respawn after a backoff delay, a suspension (with or without a ``proc.<t>.flap``
  announcement), or giving up.

::

    exit ─► classify_exit / classify_spawn_failure
              ├─ REQUESTED ─► stopped, "stop", CONVERGE
              ├─ DONE      ─► exited, "exit"
              └─ RESTART   ─► not wanted here any more ─► stopped, CONVERGE
                             record_exit(the instance's flapping)
                               ├─ GIVE_UP ─► backoff, GIVE_UP (the instance fails)
                               ├─ SUSPEND ─► backoff, suspend until resume_at (announced if new)
                               └─ RESPAWN ─► backoff_delay > 0 ─► backoff, RETRY after it
                                             else begin(): SPAWN, or wait (held, suspended),
                                             or FAIL (it had given up already)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from gaffer.agent import flapping
from gaffer.agent.flapping import FlapState, Verdict
from gaffer.common.errors import IllegalTransition
from gaffer.common.model import AGENT_STATES, InstanceState
from gaffer.common.template import Flapping, Template


State = InstanceState
"""The one enum of instance states (``common/model.py``), shared with the controller and CLI."""
LIFECYCLE = tuple(State(value) for value in AGENT_STATES)
"""The states an instance moves between on its agent (the others are the controller's)."""


ALIVE = frozenset({State.STARTING, State.RUNNING, State.READY, State.UNHEALTHY, State.STOPPING})
UP = _UP = (State.RUNNING, State.READY, State.UNHEALTHY)
"""Up ``startsecs`` or longer, ready or not (``model.UP_STATES``). ``_UP`` inside ``Event``,
whose own member ``UP`` hides the name there."""
_FROM_UP = frozenset({
    State.STARTING, State.STOPPING, State.STOPPED, State.BACKOFF, State.EXITED, State.FAILED,
})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.RUNNING, State.BACKOFF, State.EXITED, State.FAILED}),
    State.STARTING: frozenset({
        State.STARTING, State.RUNNING, State.STOPPING, State.STOPPED, State.BACKOFF,
        State.EXITED, State.FAILED,
    }),
    State.RUNNING: _FROM_UP | {State.READY, State.UNHEALTHY},
    State.READY: _FROM_UP | {State.UNHEALTHY},
    State.UNHEALTHY: _FROM_UP | {State.READY},
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.BACKOFF, State.EXITED, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITED: frozenset({State.STARTING, State.STOPPED}),
    State.FAILED: frozenset({State.STARTING, State.STOPPED}),
}


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"instance cannot go from {old} to {new}")


class ExitKind(enum.Enum):
    REQUESTED = "requested"  # the Manager stopped it: never counts as a failure
    DONE = "done"  # the restart policy says this exit is final
    RESTART = "restart"  # restart it (counts towards flapping)


def classify_exit(
    restart: str, exitcodes: tuple[int, ...], code: int | None, signal: int | None, stopping: bool
) -> ExitKind:
    """What an exit means under the template's restart policy.

    ``code`` is the exit status, ``signal`` the signal that killed it (one of them is None).
    """
    if stopping:
        return ExitKind.REQUESTED
    if restart == "never":
        return ExitKind.DONE
    if restart == "on-failure" and signal is None and code in exitcodes:
        return ExitKind.DONE
    return ExitKind.RESTART


def classify_spawn_failure(restart: str) -> ExitKind:
    """What a failed spawn means: under ``never`` it is final (the instance is ``exited`` with
    the error: one try was asked for, and it was made); ``always`` and ``on-failure`` try
    again with backoff and flapping, as after a crash (no exit code to be expected here)."""
    return ExitKind.DONE if restart == "never" else ExitKind.RESTART


@dataclass(frozen=True)
class Repeats:
    """The same error, ``count`` times in a row for one instance.

    Reported when ``first``; later ones are only counted, and the count is told once the run
    of repeats ends (the spawn works, another error comes, the instance fails), so a retry loop
    never floods a console or a log with one line per attempt.
    """

    error: str
    count: int = 1

    @property
    def first(self) -> bool:
        return self.count == 1

    @property
    def again(self) -> int:
        """How many times it came back after the first."""
        return self.count - 1


def repeat_error(previous: Repeats | None, error: str) -> Repeats:
    """The run of repeats after ``error`` happened (a new run when it differs)."""
    if previous is not None and previous.error == error:
        return Repeats(error, previous.count + 1)
    return Repeats(error)


BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0


def backoff_delay(failures: int) -> float:
    """Seconds to wait before respawn number ``failures`` of an instance that keeps failing.

    The first restart after a process that had reached ``running`` is immediate; each further
    exit before ``running`` doubles the wait, capped at BACKOFF_CAP.
    """
    if failures <= 1:
        return 0.0
    doublings = min(failures - 2, 64)  # past the cap anyway; keeps the float finite
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**doublings)


# ------------------------------------------------------------------------- plain events


class Event(enum.Enum):
    """What happens to an instance, other than an exit (``on_exit`` decides those): each
    event names the states it may happen in and the state it leads to."""

    SPAWNED = ("spawned", (State.STOPPED, State.BACKOFF, State.STARTING, *_UP), State.STARTING)
    UP = ("up", (State.STARTING,), State.RUNNING)  # stayed up ``startsecs``
    READY = ("ready", (State.RUNNING, State.UNHEALTHY), State.READY)  # its check passes
    UNHEALTHY = ("unhealthy", (State.RUNNING, State.READY), State.UNHEALTHY)  # past the threshold
    ADOPTED = ("adopted", (State.STOPPED,), State.RUNNING)  # an earlier agent's process, watched
    STOP = ("stop", (State.STARTING, *_UP), State.STOPPING)  # the stop signal was sent
    WAIT = ("wait", (State.STOPPED, State.BACKOFF, State.STARTING, *_UP), State.BACKOFF)
    UNWAIT = ("unwait", (State.BACKOFF,), State.STOPPED)  # not wanted any more, or started by hand
    FAIL = ("fail", (State.STOPPED, State.BACKOFF), State.FAILED)  # it gave up after flapping
    RESET = ("reset", (State.EXITED, State.FAILED, State.BACKOFF), State.STOPPED)  # started by hand

    def __init__(self, label: str, sources: tuple[State, ...], target: State) -> None:
        self.label = label
        self.sources = sources
        self.target = target


def next_state(state: State, event: Event) -> State:
    """The state ``event`` takes an instance to from ``state`` (IllegalTransition if none).

    On the spawn path (twice per instance): the sources are a short tuple, so this is a few
    identity checks, with no hashing of enum members (a Python-level ``__hash__``)."""
    if state in event.sources:
        return event.target
    raise IllegalTransition(f"instance cannot take {event.label!r} while {state}")


# ------------------------------------------------------------------------- exits


@dataclass(frozen=True)
class Policy:
    """The parts of a template that decide what an exit means."""

    restart: str = "always"
    exitcodes: tuple[int, ...] = (0,)
    flapping: Flapping | None = None

    @classmethod
    def of(cls, template: Template) -> "Policy":
        return cls(template.restart, template.exitcodes, template.flapping)


class Life(NamedTuple):
    """What the exit decision reads and changes of one instance: its state, the exits in a
    row before it reached ``running`` (``failures``, which set the backoff) and its restarts.

    Life, Exit and Outcome are named tuples: immutable values like the frozen dataclasses
    elsewhere, and made on every exit, where a tuple costs a quarter of a frozen dataclass."""

    state: State = State.STOPPED
    failures: int = 0
    restarts: int = 0


class Exit(NamedTuple):
    """How a process ended (``code`` or ``signal``; both None: unknown), or that it never
    started (``error``: the spawn failed, and why)."""

    code: int | None = None
    signal: int | None = None
    error: str | None = None


class Begin(enum.Enum):
    SPAWN = "spawn"
    WAIT = "wait"  # held, or suspended for flapping: backoff (a suspension keeps its timer)
    FAIL = "fail"  # the instance gave up after flapping


def begin(flap: FlapState, holding: bool, now: float) -> Begin:
    """Whether an instance that should run may be spawned now: it depends on the instance's
    own flapping (``flap``) and on the node's hold."""
    if flap.failed:
        return Begin.FAIL
    if holding or flap.suspended(now):
        return Begin.WAIT
    return Begin.SPAWN


class Then(enum.Enum):
    NOTHING = "nothing"  # final (exited), or waiting for a timer or the next converge
    CONVERGE = "converge"  # stopped on request or no longer wanted: converge the template
    SPAWN = "spawn"  # spawn again now (the spawn moves it to starting)
    RETRY = "retry"  # spawn again after ``delay`` seconds of backoff
    FAIL = "fail"  # the instance had already given up: it is failed
    GIVE_UP = "give_up"  # this exit made the instance give up: it is failed


class Outcome(NamedTuple):
    """What an exit decided: the instance's new ``life`` (its state once the outcome is
    carried out, except for SPAWN), its new ``flap``, the ``event`` to publish
    (``proc.<t>.stop`` or ``.exit``), and what comes next. ``suspend`` is the time the
    instance's respawn resumes (arm its timer), ``announce`` says the suspension is new
    (publish ``proc.<t>.flap``)."""

    life: Life
    flap: FlapState
    event: str
    then: Then = Then.NOTHING
    delay: float = 0.0
    suspend: float | None = None
    announce: bool = False


def on_exit(
    life: Life,
    exit: Exit,
    policy: Policy,
    flap: FlapState,
    now: float,
    *,
    wanted: bool = True,
    holding: bool = False,
    oneoff: bool = False,
    unhealthy: bool = False,
) -> Outcome:
    """Decide what an exit means (see the module docstring for the flow).

    ``wanted``: the instance should still run here (its template active, its ordinal
    assigned); ``holding``: nothing may be spawned now; ``oneoff``: a run that is never
    restarted. Exits the Manager asked for (the instance was stopping) never count, except
    the stop of an instance that turned unhealthy (``unhealthy``, ``restart_on_unhealthy``):
    that one is respawned whatever the restart policy, and counts as a failure for flapping.
    """
    if exit.error is not None:
        kind, event, starting = classify_spawn_failure(policy.restart), "exit", True
    else:
        stopping = life.state is State.STOPPING
        kind = classify_exit(policy.restart, policy.exitcodes, exit.code, exit.signal, stopping)
        event = "stop" if kind is ExitKind.REQUESTED else "exit"
        if unhealthy and stopping:
            kind = ExitKind.RESTART
            life = Life(State.STOPPED, life.failures, life.restarts)  # spawned again from stopped
        starting = life.state is State.STARTING
    if oneoff:
        final = State.STOPPED if kind is ExitKind.REQUESTED else State.EXITED
        return Outcome(Life(final, life.failures, life.restarts), flap, "exit")
    if kind is ExitKind.REQUESTED:
        return Outcome(Life(State.STOPPED, life.failures, life.restarts), flap, event, Then.CONVERGE)
    if kind is ExitKind.DONE:
        return Outcome(Life(State.EXITED, life.failures, life.restarts), flap, event)
    failures = life.failures + 1 if starting else 1
    if not wanted:
        return Outcome(Life(State.STOPPED, failures, life.restarts), flap, event, Then.CONVERGE)
    decision = flapping.record_exit(policy.flapping, flap, now)
    waiting = Life(State.BACKOFF, failures, life.restarts)
    if decision.verdict is Verdict.GIVE_UP:
        return Outcome(waiting, decision.state, event, Then.GIVE_UP)
    if decision.verdict is Verdict.SUSPEND:
        resume_at = decision.resume_at if decision.resume_at is not None else now
        return Outcome(
            waiting, decision.state, event, suspend=resume_at, announce=resume_at != flap.resume_at
        )
    restarts = life.restarts + 1
    delay = backoff_delay(failures)
    if delay > 0:
        return Outcome(Life(State.BACKOFF, failures, restarts), decision.state, event, Then.RETRY, delay)
    step = begin(decision.state, holding, now)
    if step is Begin.SPAWN:
        return Outcome(Life(life.state, failures, restarts), decision.state, event, Then.SPAWN)
    if step is Begin.WAIT:
        return Outcome(Life(State.BACKOFF, failures, restarts), decision.state, event)
    return Outcome(Life(State.BACKOFF, failures, restarts), decision.state, event, Then.FAIL)
