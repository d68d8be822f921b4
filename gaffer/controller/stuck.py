"""Why a slot cannot leave a node: the reason ``drain`` gives for what stays (pure).

The scheduler keeps a slot on a draining node when it finds no other place for it
(``scheduler._stay_while_draining``), and only says "pending" of what it could not place at
all. An operator waiting on a drain needs the reason, per template, in the order the
scheduler meets the obstacles::

    other nodes ──► none up, uncordoned, not draining          no_other_node
                ──► none matches the nodes list / labels        no_match
                ──► every match already failed this template    failed
                ──► every match has max_per_node of it          max_per_node
                ──► otherwise: a place exists, it is on its way moving

No I/O, no clock: the controller passes what it knows (the nodes, the placement, the nodes a
slot failed on).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

from gaffer.common.model import Slot
from gaffer.controller.scheduler import Demand, NodeInfo

NO_OTHER_NODE = "no_other_node"
NO_MATCH = "no_match"
FAILED = "failed"
MAX_PER_NODE = "max_per_node"
MOVING = "moving"


@dataclass(frozen=True)
class Stuck:
    """Why ``template``'s slots stay on ``node``: a stable ``code`` and a line for people."""

    template: str
    code: str
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"template": self.template, "reason": self.code, "message": self.message}


def why_stuck(
    demand: Demand,
    node: str,
    nodes: Iterable[NodeInfo],
    placement: Mapping[Slot, str],
    failed_on: Iterable[str] = (),
) -> Stuck:
    """Why ``demand``'s slots on ``node`` find no other node (``failed_on``: the nodes any of
    them failed on, which the scheduler avoids for those slots)."""
    name = demand.name
    others = [n for n in nodes if n.name != node and n.open]
    if not others:
        return Stuck(name, NO_OTHER_NODE, "no other node is up, uncordoned and not draining")
    matching = [n for n in others if demand.fits(n)]
    if not matching:
        return Stuck(name, NO_MATCH, f"no other node matches its {demand.describe_constraints()}")
    failed = set(failed_on)
    usable = [n for n in matching if n.name not in failed]
    if not usable:
        return Stuck(name, FAILED, "it failed on every other node that matches")
    if demand.max_per_node is not None:
        held = Counter(where for (template, _), where in placement.items() if template == name)
        if all(held[n.name] >= demand.max_per_node for n in usable):
            names = ", ".join(sorted(n.name for n in usable))
            return Stuck(name, MAX_PER_NODE, f"max_per_node {demand.max_per_node} reached on {names}")
    return Stuck(name, MOVING, "placed elsewhere, not running there yet")
