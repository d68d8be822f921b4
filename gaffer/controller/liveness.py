"""Node liveness as pure functions of (last heard, now): up, suspect, down.

A node is ``up`` while its heartbeats arrive, ``suspect`` after ``suspect_misses`` intervals of
silence, ``down`` after ``down_misses``. Guard rails decide whether the controller may *act* on
a down node (move its instances):

- after the controller starts, nodes get ``startup_grace`` seconds to say hello before any is
  declared down (it cannot know who is alive before they have had a chance to speak), and
  after a cut-off ends each node gets a fresh timeout for the same reason;
- when most known nodes are silent at once, the controller assumes it is the one cut off and
  declares nothing down (``partition_threshold``), like Kubernetes stopping evictions when
  every zone looks unhealthy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping


class NodeState(str, enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Liveness:
    """Timing of the liveness rules, in seconds and heartbeat intervals."""

    interval: float = 1.0
    suspect_misses: int = 3
    down_misses: int = 5
    startup_grace: float = 10.0
    partition_threshold: float = 0.5

    @property
    def suspect_after(self) -> float:
        return self.interval * self.suspect_misses

    @property
    def down_after(self) -> float:
        return self.interval * self.down_misses


def silent_state(last_heard: float, now: float, rules: Liveness) -> NodeState:
    """What silence alone says about a node last heard at ``last_heard``."""
    quiet = now - last_heard
    if quiet >= rules.down_after:
        return NodeState.DOWN
    if quiet >= rules.suspect_after:
        return NodeState.SUSPECT
    return NodeState.UP


@dataclass(frozen=True)
class Verdict:
    """The states to give each node now, and whether down nodes may be acted on."""

    states: Mapping[str, NodeState]
    cut_off: bool
    in_grace: bool

    @property
    def may_move(self) -> bool:
        return not self.cut_off and not self.in_grace


def judge(
    last_heard: Mapping[str, float],
    now: float,
    started_at: float,
    rules: Liveness,
    already_down: Iterable[str] = (),
    regained_at: float | None = None,
) -> Verdict:
    """Liveness of every node, with the guard rails applied.

    ``already_down`` are nodes declared down earlier: they stay down until they speak again
    (a fresh heartbeat makes ``last_heard`` recent), whatever the guard rails say now, and they
    do not count when judging whether most nodes went silent *at once*.

    ``regained_at`` is when the controller last stopped being cut off: silence from before then
    proves nothing (the controller could not hear anyone), so every node gets a fresh timeout
    from that moment, as after a controller start, instead of all being declared down at once.
    """
    raw = {name: silent_state(heard, now, rules) for name, heard in last_heard.items()}
    in_grace = now - started_at < rules.startup_grace or (
        regained_at is not None and now - regained_at < rules.down_after
    )
    down_before = set(already_down)
    counted = [state for name, state in raw.items() if name not in down_before]
    silent = sum(1 for state in counted if state is not NodeState.UP)
    cut_off = len(counted) >= 2 and silent > len(counted) * rules.partition_threshold
    states: dict[str, NodeState] = {}
    for name, state in raw.items():
        if state is NodeState.DOWN and (in_grace or cut_off) and name not in down_before:
            state = NodeState.SUSPECT
        states[name] = state
    return Verdict(states=states, cut_off=cut_off, in_grace=in_grace)
