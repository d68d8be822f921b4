"""A cluster the controller's reconcile can be run against, and carried out by hand.

``World`` holds what ``Cluster`` would hold (templates, node views, the placement, what each
node was sent, rollouts, failures, the time) as plain test data. ``world.run()`` calls the pure
``reconcile`` with it; ``world.carry_out(result)`` does what the executor does with the value
(adopt the plan, number and record the sends, touch the resends, keep the rollouts, remember
the announcements); ``ack``, ``report_running`` and ``down`` play the agents and the liveness
tick. ``assert_reconcile`` checks the named lists a scenario names, in one call, as Nomad's
``assertResults`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from gaffer.common.model import InstanceRow, InstanceState, Slot, instance_id
from gaffer.common.template import Template
from gaffer.controller.orders import Version
from gaffer.controller.reconcile import (
    Desired,
    Failures,
    NodeView,
    Nodes,
    Placement,
    Reconcile,
    Sent,
    reconcile,
)
from gaffer.controller.rollout import Rollout
from gaffer.controller.scheduler import Demand, NodeInfo
from gaffer.testing import template as make_template


def desired_of(template: Template, restart: int = 0, *, paused: bool = False) -> Desired:
    """A template as ``Cluster`` hands it to the reconcile."""
    placement = template.placement
    return Desired(
        name=template.name,
        demand=Demand(
            name=template.name, count=0 if paused else template.numprocesses,
            max_per_node=placement.max_per_node, nodes=placement.nodes,
            labels=dict(placement.labels),
        ),
        version=Version.of(template, restart),
        max_unavailable=template.update.max_unavailable,
        progress_deadline=template.update.progress_deadline,
        paused=paused,
        checked=template.health is not None or template.notify,
    )


def web(count: int, **fields: Any) -> Template:
    return make_template("web", numprocesses=count, **fields)


@dataclass
class World:
    """Everything the reconcile reads, as mutable test data (see the module docstring)."""

    nodes: dict[str, NodeView] = field(default_factory=dict)
    desired: dict[str, Desired] = field(default_factory=dict)
    placement: dict[Slot, str] = field(default_factory=dict)
    sent: dict[str, Sent] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    failed: dict[Slot, frozenset[str]] = field(default_factory=dict)
    announced: set[Slot] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)
    may_move: bool = True
    grace: float = 2.0
    now: float = 1000.0

    @classmethod
    def of(cls, *names: str, templates: Iterable[Template] = (), **kwargs: Any) -> "World":
        """Nodes ``names`` up and connected, with ``templates`` wanted."""
        world = cls(**kwargs)
        for name in names:
            world.add_node(name)
        for template in templates:
            world.want(template)
        return world

    # ------------------------------------------------------------ changing the inputs

    def add_node(self, name: str, state: str = "up", *, connected: bool = True, **flags: Any) -> None:
        labels = flags.pop("labels", {})
        self.nodes[name] = NodeView(
            info=NodeInfo(name, state, labels=labels, **flags), connected=connected,
        )

    def want(self, template: Template, restart: int = 0) -> None:
        self.desired[template.name] = desired_of(template, restart)

    def down(self, name: str, since: float) -> None:
        """The liveness tick judged ``name`` down at ``since``: its session is gone."""
        view = self.nodes[name]
        self.nodes[name] = replace(view, info=replace(view.info, state="down"), down_since=since, connected=False)

    def set_flags(self, name: str, **flags: Any) -> None:
        view = self.nodes[name]
        self.nodes[name] = replace(view, info=replace(view.info, **flags))

    def ack(self, *names: str) -> None:
        """Nodes (all, by default) ack the latest generation they were sent."""
        for name in names or list(self.sent):
            if name in self.sent:
                self.nodes[name] = replace(self.nodes[name], acked=self.sent[name].generation)

    def report_running(self, *names: str, ready: bool = True) -> None:
        """Nodes (all, by default) report every instance they were sent, running the version
        they were sent (ready, or up but not yet ready)."""
        for name in names or list(self.sent):
            sent = self.sent[name]
            rows = {}
            for template, ordinals in sent.ordinals.items():
                version = sent.orders[template].version
                for ordinal in ordinals:
                    ident = instance_id(template, ordinal)
                    rows[ident] = InstanceRow(
                        id=ident, template=template, ordinal=ordinal, pid=100 + ordinal,
                        state=InstanceState.RUNNING.value, restarts=0, started_at=None,
                        spec=version.launch_hash, ready=ready,
                    )
            self.nodes[name] = replace(self.nodes[name], rows=rows)

    # ------------------------------------------------------------ running and carrying out

    def inputs(self) -> tuple[Any, ...]:
        nodes = Nodes(
            views=dict(self.nodes), sent=dict(self.sent), fresh=frozenset(self.fresh),
            may_move=self.may_move, grace=self.grace,
        )
        failures = Failures(dict(self.failed), frozenset(self.announced))
        by_node: dict[str, dict[str, list[int]]] = {}
        for (template, ordinal), node in sorted(self.placement.items()):
            by_node.setdefault(node, {}).setdefault(template, []).append(ordinal)
        placement = Placement(dict(self.placement), by_node=by_node)
        return dict(self.desired), nodes, placement, dict(self.rollouts), failures, self.now

    def run(self) -> Reconcile:
        return reconcile(*self.inputs())

    def carry_out(self, result: Reconcile) -> Reconcile:
        """What ``Cluster`` does with the value: store, number, send, remember."""
        if result.scheduled:
            self.placement = dict(result.plan.placement)
        self.rollouts = dict(result.rollouts)
        self.announced |= {a.slot for a in result.announce}
        for send in result.sends:
            before = self.sent.get(send.node)
            generation = before.generation + 1 if before is not None else 1
            self.sent[send.node] = Sent(
                generation, send.digest, self.now, send.orders, send.ordinals,
                (send.body(generation),), replace(before, before=None) if before else None,
            )
            self.fresh.discard(send.node)
        for name in result.resends:
            self.sent[name] = replace(self.sent[name], at=self.now)
        return result

    def step(self) -> Reconcile:
        """Run once and carry out what it says."""
        return self.carry_out(self.run())

    def on_node(self, name: str) -> dict[str, list[int]]:
        """{template: ordinals} placed on ``name``."""
        held: dict[str, list[int]] = {}
        for (template, ordinal), node in sorted(self.placement.items()):
            if node == name:
                held.setdefault(template, []).append(ordinal)
        return held


def allowances(result: Reconcile, template: str, version: Version) -> dict[str, int]:
    """Per node sent ``version`` of ``template`` in this pass, its allowance."""
    return {
        send.node: send.orders[template].allowance
        for send in result.sends
        if template in send.orders and send.orders[template].version.key == version.key
    }


def assert_reconcile(
    result: Reconcile,
    *,
    changes: int = 0,
    sends: Iterable[str] = (),
    resends: Iterable[str] = (),
    lost: Iterable[str] = (),
    announce: Iterable[Slot] = (),
    rollout_steps: Iterable[tuple[str, str]] = (),
    scheduled: bool = True,
) -> None:
    """Every named list of a pass at once: counts of changes, and exactly which nodes get
    sends and resends, which are lost, which slots are announced, which rollout steps."""
    got = {
        "changes": len(result.changes),
        "sends": sorted(s.node for s in result.sends),
        "resends": sorted(result.resends),
        "lost": sorted(result.lost),
        "announce": sorted(a.slot for a in result.announce),
        "rollout_steps": [(s.template, s.kind) for s in result.rollout_steps],
        "scheduled": result.scheduled,
    }
    want = {
        "changes": changes,
        "sends": sorted(sends),
        "resends": sorted(resends),
        "lost": sorted(lost),
        "announce": sorted(announce),
        "rollout_steps": list(rollout_steps),
        "scheduled": scheduled,
    }
    assert got == want, f"reconcile {got} != expected {want}; log {result.log_fields()}"


def ordinals_sent(result: Reconcile) -> Mapping[str, Mapping[str, list[int]]]:
    return {send.node: {t: list(o) for t, o in send.ordinals.items()} for send in result.sends}
