"""The life of one instance: its states, the legal moves between them, and what an exit means.

============  ==========================================================================
state         meaning, and where it goes next
============  ==========================================================================
stopped       not running and not wanted to run right now -> starting (spawn),
              running (a process an earlier agent started, adopted after an agent restart),
              backoff (its template is suspended for flapping, or its spawn failed),
              exited (its spawn failed under ``restart = "never"``), failed (template failed)
starting      spawned, not yet up ``startsecs`` -> running (up long enough), stopping (stop),
              starting (exited, respawned at once), backoff (exited, respawn later),
              exited (exit the restart policy accepts), stopped (exited by itself when it
              was no longer wanted), failed
running       up ``startsecs`` or longer -> the same moves as starting, except running
backoff       exited unexpectedly, waiting for its backoff delay or the end of a flapping
              suspension -> starting, stopped (stop), failed (flapping gave up), exited
              (its spawn failed under ``never``)
stopping      stop signal sent, KILL after ``graceful_timeout`` -> stopped
exited        ended in a way the restart policy accepts (``never``, or ``on-failure`` with an
              expected code), or could not be spawned under ``never`` -> starting only on an
              explicit start
failed        flapping gave up -> starting only on an explicit start
============  ==========================================================================

A spawn that fails (the program is missing, the cwd or user does not exist) is an exit of a
process that never ran: ``classify_spawn_failure`` says whether to try again, and ``Repeats``
counts the same error coming back, so it is reported once rather than on every retry.

All functions here are pure; the Manager feeds them facts and the current time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gaffer.common.errors import IllegalTransition


class State(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.RUNNING, State.BACKOFF, State.EXITED, State.FAILED}),
    State.STARTING: frozenset({
        State.STARTING, State.RUNNING, State.STOPPING, State.STOPPED, State.BACKOFF,
        State.EXITED, State.FAILED,
    }),
    State.RUNNING: frozenset({
        State.STARTING, State.STOPPING, State.STOPPED, State.BACKOFF, State.EXITED, State.FAILED,
    }),
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
