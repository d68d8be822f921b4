"""One template's converge on this node as a pure function: what is wanted and what is -> Actions.

The Manager calls ``plan`` whenever something that matters changed (an operation, a stop that
ended, a hold released, a replacement up during a roll) and carries out the ``Actions`` it
returns. Keeping the decision pure (no process, no timer, no clock) makes it testable with
tables and properties, and safe to call at any time: the same input gives the same actions, and planning the outcome of a plan again asks for
nothing more.

Vocabulary::

    wanted       what the operations asked for (``Wanted``): the ordinals that run here,
                 active or paused, being deleted, the spec and restart generation instances
                 should have, and the rolling allowance (``max_unavailable``)
    here         the ordinals that should run now: ``wanted.ordinals`` unless paused or deleted
    live         starting or running: a process that is up or coming up
    waiting      in backoff without a respawn timer (held): it starts at the next plan that
                 may spawn; one suspended for flapping waits for its own timer (``Executor``)
    ended        stopped, exited or failed: no process
    outdated     live with another spec hash or restart generation than wanted
    unavailable  an ordinal of ``here`` that is not ready and not exited for good: missing,
                 stopped, starting, running but not yet ready, unhealthy, stopping, in
                 backoff or failed (a replacement frees its share of the allowance only
                 once it serves)

Flow::

    instances ──► not here: live ─► stop          in backoff ─► unwait (stopped)
              │             ended, and no longer assigned (or deleting) ─► forget
              │   deleting: once nothing is left (and no one-off runs) ─► delete
              ├─► here, missing / stopped / waiting ─► may spawn ─► spawn (lowest first)
              │                                        held ─► wait
              └─► here, outdated (not held) ─► roll: a starting or not ready one at once, a
                  ready one while fewer than ``max_unavailable`` are unavailable (lowest first)

The Manager spawns in batches so that a scale to thousands never stalls its loop; before each
spawn it checks again (``startable``, ``lifecycle.begin``) that nothing changed meanwhile.

Flapping is counted per instance (``agent/flapping.py``) and never decided here: a suspended
instance is in backoff with its resume timer, so it is neither started nor waited again, and
one that gave up is failed, which only an explicit start changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Iterable, Mapping, Protocol

from gaffer.agent.lifecycle import State

Ordinal = int | str

_NOTHING: frozenset[Ordinal] = frozenset()
_ENDED = frozenset({State.STOPPED, State.EXITED, State.FAILED})
_STARTED = (State.RUNNING, State.STARTING, State.READY, State.UNHEALTHY)
"""Spawned and not stopping: ready or not (``InstanceView.ready`` tells which)."""


@dataclass(frozen=True)
class Wanted:
    """What is wanted of one template on this node."""

    ordinals: AbstractSet[Ordinal] = _NOTHING
    active: bool = True
    deleting: bool = False
    spec: str = ""
    restart_gen: int = 0
    max_unavailable: int = 1

    @property
    def here(self) -> AbstractSet[Ordinal]:
        """The ordinals that should run now."""
        return self.ordinals if self.active and not self.deleting else _NOTHING


class InstanceView(Protocol):
    """What planning reads of an instance (``Instance`` has it; tests use plain records)."""

    @property
    def state(self) -> State: ...

    @property
    def waiting(self) -> bool: ...

    @property
    def spec_hash(self) -> str | None: ...

    @property
    def restart_gen(self) -> int: ...

    @property
    def ready(self) -> bool:
        """The row's ``ready``: serving (ready, or running with no check or notify)."""
        ...


@dataclass(frozen=True)
class Actions:
    """What one converge pass does, as named lists of ordinals, each sorted.

    ``stop``: send the stop signal to these unwanted live instances (KILL after
    ``graceful_timeout``); ``unwait``: leave backoff for stopped; ``forget``: drop their
    records (after ``unwait``); ``spawn``: start these, in this order; ``wait``: move to
    backoff without a timer; ``roll``: stop these
    outdated instances (they are spawned again with the wanted spec once stopped);
    ``delete``: the template is gone; ``rolling``: outdated instances remain (plan again
    when one comes up).
    """

    stop: tuple[Ordinal, ...] = ()
    unwait: tuple[Ordinal, ...] = ()
    forget: tuple[Ordinal, ...] = ()
    spawn: tuple[Ordinal, ...] = ()
    wait: tuple[Ordinal, ...] = ()
    roll: tuple[Ordinal, ...] = ()
    delete: bool = False
    rolling: bool = False

    def changes(self) -> bool:
        """Whether carrying this out changes anything (``rolling`` alone does not)."""
        return self.delete or any(
            (self.stop, self.unwait, self.forget, self.spawn, self.wait, self.roll)
        )

    def log_fields(self) -> dict[str, Any]:
        """Counts for one structured log line."""
        return {
            "stop": len(self.stop), "unwait": len(self.unwait), "forget": len(self.forget),
            "spawn": len(self.spawn), "wait": len(self.wait),
            "roll": len(self.roll), "delete": self.delete, "rolling": self.rolling,
        }


def sort_key(ordinal: Ordinal) -> tuple[int, int | str]:
    """Numbers in order, then names (one-off runs and odd ordinals last)."""
    return (0, ordinal) if isinstance(ordinal, int) else (1, ordinal)


def _sorted(ordinals: Iterable[Ordinal]) -> tuple[Ordinal, ...]:
    return tuple(sorted(ordinals, key=sort_key))


def startable(inst: InstanceView) -> bool:
    """Whether an instance of ``here`` is to be begun: stopped, or waiting (a held one is
    begun again and waits again: that changes nothing)."""
    state = inst.state
    return state is State.STOPPED or (state is State.BACKOFF and inst.waiting)


def plan(
    wanted: Wanted,
    instances: Mapping[Ordinal, InstanceView],
    holding: bool,
    *,
    busy: bool = False,
) -> Actions:
    """The actions that bring ``instances`` to ``wanted`` (see the module docstring).

    ``holding`` says whether nothing may be spawned now (held, settling, or the controller's
    lease expired), ``busy`` whether one-off runs of the template still go (a deleted
    template stays until they end).
    """
    here = wanted.here
    stop, unwait, forget = _unwanted(wanted, instances)
    if wanted.deleting:
        gone = len(forget) == len(instances) and not busy
        return Actions(stop, unwait, forget, delete=gone)
    start: list[Ordinal] = []
    outdated: list[Ordinal] = []
    unavailable = 0
    spec, generation = wanted.spec, wanted.restart_gen
    for ordinal in here:
        inst = instances.get(ordinal)
        if inst is None:
            start.append(ordinal)
            unavailable += 1
            continue
        state = inst.state
        if state in _STARTED:
            if not inst.ready:
                unavailable += 1
            if inst.spec_hash != spec or inst.restart_gen != generation:
                outdated.append(ordinal)
        elif state is not State.EXITED:
            unavailable += 1
            if state is State.STOPPED or (state is State.BACKOFF and inst.waiting):
                start.append(ordinal)
    spawn: tuple[Ordinal, ...] = ()
    wait: tuple[Ordinal, ...] = ()
    if start and not holding:
        spawn = _sorted(start)
    elif start:
        wait = _sorted(o for o in start if o not in instances or not instances[o].waiting)
    roll = () if holding else _roll(outdated, instances, wanted.max_unavailable - unavailable)
    return Actions(stop, unwait, forget, spawn, wait, roll, rolling=bool(outdated))


def _unwanted(
    wanted: Wanted, instances: Mapping[Ordinal, InstanceView]
) -> tuple[tuple[Ordinal, ...], tuple[Ordinal, ...], tuple[Ordinal, ...]]:
    """What to stop, unwait and forget of the instances that should not run now."""
    here = wanted.here
    stop: list[Ordinal] = []
    unwait: list[Ordinal] = []
    forget: list[Ordinal] = []
    assigned = wanted.ordinals
    for ordinal, inst in instances.items():
        if ordinal in here:
            continue
        state = inst.state
        if state in _STARTED:
            stop.append(ordinal)
        elif state is State.BACKOFF:
            unwait.append(ordinal)
            state = State.STOPPED
        if state in _ENDED and (wanted.deleting or ordinal not in assigned):
            forget.append(ordinal)
    return _sorted(stop), _sorted(unwait), _sorted(forget)


def _roll(
    outdated: list[Ordinal], instances: Mapping[Ordinal, InstanceView], budget: int
) -> tuple[Ordinal, ...]:
    """Outdated instances to stop now: every one not ready (it is unavailable already), and
    ready ones, lowest ordinals first, while the budget of unavailable ones lasts."""
    chosen = []
    for ordinal in _sorted(outdated):
        if not instances[ordinal].ready:
            chosen.append(ordinal)
        elif budget > 0:
            budget -= 1
            chosen.append(ordinal)
    return tuple(chosen)
