"""The ``drain`` op: cordon a node, move its instances away, wait until they serve elsewhere.

The decisions are ``drainpace`` (pure); this is their executor on the request side. A drain
asks the Cluster to drain the node (the reconcile then moves what may move, paced by
``drainpace.drain_stays``), notes what the node had to move, and re-judges
``drainpace.drain_left`` each time something changes (``Changes``: reports, acks, nodes)
until nothing is left or the wait runs out. An instance counts as moved once it neither runs
nor is placed on the node and is ready where it is placed now: a drain that returns done means
the node can go, and its work is served elsewhere.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol, Sequence

from gaffer.common import arguments as arg
from gaffer.common.model import Slot
from gaffer.controller.changes import Changes
from gaffer.controller.drainpace import drain_left, moving_from, serving
from gaffer.controller.registry import Node
from gaffer.controller.scheduler import Demand, NodeInfo
from gaffer.controller.store import StoredTemplate
from gaffer.controller.stuck import Stuck, why_stuck

DRAIN_TIMEOUT = 60.0
WAITING_READY = "waiting_ready"
"""A stuck reason: the template has no instance to spare until its replacements are ready."""


class DrainState(Protocol):
    """What a drain reads and changes of the desired state (``Cluster``)."""

    templates: Mapping[str, StoredTemplate]
    placement: Mapping[Slot, str]
    failed: Mapping[Slot, frozenset[str]]

    async def drain(self, name: str, draining: bool = True) -> None: ...
    def by_node(self, node: str) -> Mapping[str, Sequence[int]]: ...
    def wanted(self, name: str) -> int: ...


class DrainAgents(Protocol):
    def node(self, name: str) -> Node | None: ...
    def all(self) -> Iterable[Node]: ...


class Clock(Protocol):
    def now(self) -> float: ...


class DrainOps:
    def __init__(self, cluster: DrainState, agents: DrainAgents, changes: Changes, controller: Clock) -> None:
        self.cluster = cluster
        self.agents = agents
        self.changes = changes
        self.controller = controller

    async def drain(self, args: dict[str, Any]) -> dict[str, Any]:
        """Cordon the node and move its instances away; wait until none is left on it and
        each is ready where it went (or the timeout)."""
        name = arg.node(args)
        timeout = arg.seconds(args, "wait", DRAIN_TIMEOUT)
        await self.cluster.drain(name, True)
        node = self.agents.node(name)
        assert node is not None  # drain refused an unknown node
        deadline = self.controller.now() + timeout
        moving = moving_from(name, {name: self.cluster.by_node(name)}, _running(node))
        left = self._left(node, moving)
        while left and self.controller.now() < deadline:
            if not await self.changes.wait(deadline - self.controller.now()):
                break
            moving |= moving_from(name, {name: self.cluster.by_node(name)}, _running(node))
            left = self._left(node, moving)
        result: dict[str, Any] = {"node": name, "done": not left, "remaining": len(left)}
        if left:
            result["stuck"] = [stuck.to_wire() for stuck in self._stuck(node, left)]
        return result

    def _left(self, node: Node, moving: frozenset[str]) -> frozenset[str]:
        cluster = self.cluster
        wanted = {
            name: 0 if stored.paused else cluster.wanted(name) for name, stored in cluster.templates.items()
        }
        return drain_left(node.name, moving, wanted, cluster.placement, _running(node), self._infos(), self._rows())

    def _infos(self) -> dict[str, NodeInfo]:
        return {
            n.name: NodeInfo(n.name, n.state.value, n.labels, n.cordoned, n.draining) for n in self.agents.all()
        }

    def _rows(self) -> dict[str, Mapping[str, Any]]:
        return {n.name: n.instances for n in self.agents.all()}

    def _stuck(self, node: Node, left: frozenset[str]) -> list[Stuck]:
        """Why each template with instances left finds no other node, or is not moved yet."""
        cluster = self.cluster
        infos = self._infos()
        rows = self._rows()
        names = {ident.rpartition(".")[0] for ident in left}
        out = []
        for template in sorted(names):
            stored = cluster.templates.get(template)
            if stored is None:
                continue
            placement = stored.template.placement
            demand = Demand(
                template, cluster.wanted(template), placement.max_per_node, placement.nodes,
                dict(placement.labels),
            )
            failed_on: set[str] = set()
            for ordinal in cluster.by_node(node.name).get(template, ()):
                failed_on.update(cluster.failed.get((template, ordinal), ()))
            stuck = why_stuck(demand, node.name, infos.values(), cluster.placement, failed_on)
            if stuck.code == "moving":
                stuck = _not_ready(stored, demand.count, cluster.placement, infos, rows) or stuck
            out.append(stuck)
        return out


def _not_ready(
    stored: StoredTemplate,
    count: int,
    placement: Mapping[Slot, str],
    infos: Mapping[str, NodeInfo],
    rows: Mapping[str, Mapping[str, Any]],
) -> Stuck | None:
    """The reason a moving template waits: instances not ready where they are placed."""
    name = stored.template.name
    ready = sum(serving((name, o), placement.get((name, o)), infos, rows) for o in range(1, count + 1))
    if ready >= count:
        return None
    budget = stored.template.update.max_unavailable
    paced = stored.template.health is not None or stored.template.notify
    rule = f"; update.max_unavailable={budget} lets no more leave until they are" if paced else ""
    return Stuck(name, WAITING_READY, f"{count - ready} of {count} not ready yet{rule}")


def _running(node: Node) -> frozenset[str]:
    """The ids with a process on ``node`` (one-off runs included)."""
    return frozenset(ident for ident, row in node.instances.items() if row["pid"])
