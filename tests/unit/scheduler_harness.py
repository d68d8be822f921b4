"""Builders, one assertion helper and a literal reference for the scheduler's tests.

Scenarios read as tables: ``at({"n1": {"web": [1, 4, 7]}})`` writes a placement the way
``Plan.by_node()`` prints one, and ``assert_plan`` checks a plan against every count a scenario
names, so that a table row states its whole expected outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gaffer.controller.scheduler import Demand, NodeInfo, Plan, Slot, schedule

Layout = Mapping[str, Mapping[str, Iterable[int]]]


def node(name: str, state: str = "up", *, cordoned: bool = False, draining: bool = False,
         **labels: str) -> NodeInfo:
    return NodeInfo(name, state, labels=labels, cordoned=cordoned, draining=draining)


def up(*names: str) -> list[NodeInfo]:
    return [node(name) for name in names]


def at(layout: Layout) -> dict[Slot, str]:
    """{node: {template: ordinals}} -> {slot: node}, the inverse of ``Plan.by_node()``."""
    return {
        (template, ordinal): node_name
        for node_name, templates in layout.items()
        for template, ordinals in templates.items()
        for ordinal in ordinals
    }


@dataclass(frozen=True)
class Scenario:
    """One row of a scenario table: the input and the ``assert_plan`` expectations."""

    name: str
    demands: list[Demand]
    nodes: list[NodeInfo]
    expect: dict[str, Any]
    current: dict[Slot, str] = field(default_factory=dict)
    avoid: dict[Slot, frozenset[str]] = field(default_factory=dict)

    def run(self) -> Plan:
        return schedule(self.demands, self.nodes, self.current, self.avoid)


def assert_plan(
    plan: Plan,
    *,
    placed: int,
    moved: int = 0,
    stopped: int = 0,
    evicted: int = 0,
    added: int | None = None,
    pending: Mapping[str, int | tuple[int, str]] | None = None,
    per_node: Mapping[str, int] | None = None,
    on: Layout | None = None,
) -> None:
    """Check the counts of a plan; ``pending`` values are a count or (count, exact reason).

    ``per_node`` lists slot totals per node (unlisted nodes must hold none); ``on`` is the
    exact layout, as ``Plan.by_node()`` returns it.
    """
    counts = plan.counts()
    got = {"placed": counts["placed"], "moved": counts["moved"], "stopped": counts["stopped"],
           "evicted": counts["evicted"]}
    want = {"placed": placed, "moved": moved, "stopped": stopped, "evicted": evicted}
    if added is not None:
        got["added"], want["added"] = counts["added"], added
    assert got == want, f"counts {got} != expected {want}; layout {plan.by_node()}"
    pending = dict(pending or {})
    actual_pending = {
        name: (p.count, p.reason) if isinstance(pending.get(name), tuple) else p.count
        for name, p in plan.pending.items()
    }
    assert actual_pending == pending, f"pending {dict(plan.pending)}"
    if per_node is not None:
        totals = {name: sum(map(len, templates.values()))
                  for name, templates in plan.by_node().items()}
        assert totals == {name: n for name, n in per_node.items() if n}, f"per node {totals}"
    if on is not None:
        expected = {name: {t: sorted(o) for t, o in templates.items() if o}
                    for name, templates in on.items()}
        assert plan.by_node() == {name: t for name, t in expected.items() if t}


def reference_placement(
    demands: Iterable[Demand],
    nodes: Iterable[NodeInfo],
    current: Mapping[Slot, str],
    avoid: Mapping[Slot, frozenset[str]],
    stay: frozenset[Slot] = frozenset(),
) -> dict[Slot, str]:
    """The placement rules in their most literal form, scanning every node for every slot.

    Far too slow for a real cluster, and plain enough to trust: the fast scheduler must give
    exactly this placement.
    """
    cluster = {n.name: n for n in nodes}
    wanted = sorted(demands, key=lambda d: d.name)
    placement: dict[Slot, str] = {}
    load: Counter[str] = Counter()
    tally: Counter[tuple[str, str]] = Counter()

    def matches(demand: Demand, info: NodeInfo) -> bool:
        in_list = not demand.nodes or info.name in demand.nodes
        return in_list and all(info.labels.get(k) == v for k, v in demand.labels.items())

    def room(demand: Demand, name: str) -> bool:
        return demand.max_per_node is None or tally[demand.name, name] < demand.max_per_node

    def put(slot: Slot, name: str) -> None:
        placement[slot] = name
        load[name] += 1
        tally[slot[0], name] += 1

    for demand in wanted:
        for ordinal in range(1, demand.count + 1):
            slot = (demand.name, ordinal)
            info = cluster.get(current.get(slot, ""))
            if (info is not None and info.state in ("up", "suspect", "down")
                    and (not info.draining or slot in stay) and matches(demand, info)
                    and info.name not in avoid.get(slot, ()) and room(demand, info.name)):
                put(slot, info.name)
    for demand in wanted:
        for ordinal in range(1, demand.count + 1):
            slot = (demand.name, ordinal)
            if slot in placement:
                continue
            options = [
                info.name for info in cluster.values()
                if info.state == "up" and not info.cordoned and not info.draining
                and matches(demand, info) and info.name not in avoid.get(slot, ())
                and room(demand, info.name)
            ]
            if options:
                put(slot, min(options, key=lambda n: (tally[demand.name, n], load[n], n)))
        for ordinal in range(1, demand.count + 1):
            slot = (demand.name, ordinal)
            info = cluster.get(current.get(slot, ""))
            if (slot not in placement and info is not None and info.draining
                    and info.state in ("up", "suspect", "down") and matches(demand, info)
                    and info.name not in avoid.get(slot, ()) and room(demand, info.name)):
                put(slot, info.name)
    return placement
