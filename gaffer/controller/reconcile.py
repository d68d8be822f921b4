"""The controller's reconcile as one value: what should run where, and what to tell each node.

``reconcile(desired, nodes, placement, rollouts, failures, now) -> Reconcile`` takes frozen
inputs and returns what to do, as Nomad's ``AllocReconciler.Compute`` returns its results:
``Cluster`` then stores and sends exactly what the value says, and nothing else decides.
Level-triggered: it looks at the whole state each time, so running it twice, or feeding its
result back as the current state, changes nothing.

Vocabulary::

    desired     the templates, each as a Demand (for placement) and a Version (what runs)
    lost        a node down for ``grace`` seconds while the guard allows moving anything:
                its slots are placed elsewhere
    order       a version and an allowance: what one node is told about one template
    send        a node whose assignment changed (or that said hello again): its whole
                assignment, to be numbered with a new generation and sent
    resend      a node that has not acked its latest generation after RESEND_AFTER seconds

Flow::

    nodes ──► lost (down past grace, guard allows)
                │
    desired ──► schedule ──► plan ──► placement changes (to store), slots per node
    failures ──┘   (skipped when only reports changed: the last plan is kept)
                                          │
    rollouts ──► start (a node was sent another version) / advance (done nodes free their
                 allowance) / finish ───────┤
                                          ▼
                 orders per node ──► digest ≠ last sent (or hello) ──► sends
    sent ──► unacked for RESEND_AFTER ──► resends
    plan.pending (failed everywhere) ──► failures to announce (once per slot)

Pure: no sockets, no store, no clock (``now`` is passed in), no randomness. It runs in
``steps`` (it pauses every few thousand slots) so the controller's loop keeps answering while
100,000 slots are placed; ``reconcile`` runs it to the end at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Mapping, Sequence

import msgpack

from gaffer.common import assign
from gaffer.common.model import InstanceRow, Slot, instance_id
from gaffer.controller.drainpace import Pace, drain_stays
from gaffer.controller.orders import Order, Version
from gaffer.controller.rollout import Rollout, advance, progress, start_rollout
from gaffer.controller.scheduler import FAILED_EVERYWHERE, Demand, NodeInfo, Plan, schedule_steps
from gaffer.controller.steps import CHUNK, Steps, chunks, finish

RESEND_AFTER = 2.0
"""Seconds before an assignment a node has not acked is sent again (same generation)."""
NODE_STEP = 32
"""Nodes handled between two pauses when making assignments."""

ByNode = Mapping[str, Mapping[str, Sequence[int]]]
"""{node: {template: sorted ordinals}}: the placement as each node is told it."""


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Desired:
    """One template as the reconcile sees it: where it may go, and what runs."""

    name: str
    demand: Demand
    version: Version
    max_unavailable: int = 1
    paused: bool = False
    progress_deadline: float = 600.0
    checked: bool = False
    """Its instances are ready only once a check (or ``notify``) says so: a drain paces it."""


@dataclass(frozen=True)
class NodeView:
    """One node: its liveness and flags (``info``, never ``lost``: that is judged here),
    when it went down, whether it can be sent to, what it acked and what it reports.

    ``rows`` is read only for nodes in a rolling update, all at once in one step.
    """

    info: NodeInfo
    down_since: float | None = None
    connected: bool = False
    acked: int = 0
    rows: Mapping[str, InstanceRow] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name


@dataclass(frozen=True)
class Sent:
    """What a node was last sent: its generation, digest and orders, when (``at``, for
    resends), and the message bodies (one, or its parts) to send again."""

    generation: int
    digest: str
    at: float
    orders: Mapping[str, Order]
    ordinals: Mapping[str, Sequence[int]]
    bodies: tuple[dict[str, Any], ...] = ()
    before: "Sent | None" = None
    """The assignment this one replaced (its own ``before`` dropped): the node's reports on
    what that one gave it may still be on their way."""

    @cached_property
    def _sets(self) -> dict[str, frozenset[int]]:
        return {name: frozenset(ordinals) for name, ordinals in self.ordinals.items()}

    def assigns(self, template: str, ordinal: int) -> bool:
        """Whether this assignment, or the one it replaced, gave the node ``template.ordinal``."""
        ordinals = self._sets.get(template)
        if ordinals is not None and ordinal in ordinals:
            return True
        return self.before is not None and self.before.assigns(template, ordinal)

    def holds(self, template: str) -> bool:
        """Whether this assignment, or the one it replaced, gave the node ``template``."""
        return template in self.ordinals or (self.before is not None and template in self.before.ordinals)


@dataclass(frozen=True)
class Nodes:
    views: Mapping[str, NodeView]
    sent: Mapping[str, Sent] = field(default_factory=dict)
    fresh: frozenset[str] = frozenset()
    """Nodes that came (back) up since they were last sent: they get their assignment anew."""
    may_move: bool = True
    """The liveness guard: False during the startup grace or when most nodes went silent."""
    grace: float = 0.0
    """Seconds a node stays down before it is lost (``node_grace``)."""


@dataclass(frozen=True)
class Placement:
    """The current placement; with ``replace`` False, the last plan is kept as it is (only
    reports changed: they cannot change where anything should run)."""

    current: Mapping[Slot, str]
    plan: Plan | None = None
    by_node: ByNode = field(default_factory=dict)
    keys: Mapping[str, str] = field(default_factory=dict)
    replace: bool = True


@dataclass(frozen=True)
class Failures:
    failed: Mapping[Slot, frozenset[str]] = field(default_factory=dict)
    """Per slot, the nodes it failed on (it avoids them)."""
    announced: frozenset[Slot] = frozenset()
    """Slots already announced as failed everywhere."""


# ---------------------------------------------------------------- the value


@dataclass(frozen=True)
class Send:
    """A node's whole assignment, to be numbered and sent."""

    node: str
    digest: str
    orders: Mapping[str, Order]
    ordinals: Mapping[str, Sequence[int]]

    def body(self, generation: int) -> dict[str, Any]:
        return assign.body(
            generation,
            {name: order.version.spec for name, order in self.orders.items()},
            {name: list(self.ordinals[name]) for name in self.orders},
            {name: assign.Control(len(self.ordinals[name]), order.allowance, order.version.restart, order.paused)
             for name, order in self.orders.items()},
        )


@dataclass(frozen=True)
class Announce:
    """A slot that failed on every eligible node: ``proc.<t>.failed`` (scope cluster)."""

    slot: Slot
    nodes: tuple[str, ...]
    reason: str = FAILED_EVERYWHERE

    def payload(self) -> dict[str, Any]:
        name, ordinal = self.slot
        return {
            "template": name, "id": instance_id(name, ordinal), "ordinal": ordinal,
            "scope": "cluster", "nodes": list(self.nodes), "reason": self.reason,
        }


@dataclass(frozen=True)
class RolloutStep:
    template: str
    kind: str
    """``started`` (a new version to roll out), ``finished``, or ``stuck`` (no progress for
    its ``update.progress_deadline``)."""
    nodes: int = 0
    ready: int = 0
    """``stuck``: instances of the new version counted ready (all of those on nodes done)."""


@dataclass(frozen=True)
class Reconcile:
    plan: Plan
    changes: Mapping[Slot, str | None]
    """Placement changes to store: a slot's new node, or None when it no longer runs."""
    by_node: ByNode
    keys: Mapping[str, str]
    """Per node, a digest of its ordinals (kept for the next pass that reuses this plan)."""
    lost: tuple[str, ...]
    sends: tuple[Send, ...]
    resends: tuple[str, ...]
    rollouts: Mapping[str, Rollout]
    rollout_steps: tuple[RolloutStep, ...]
    announce: tuple[Announce, ...]
    scheduled: bool
    """Whether this pass placed anew (False: the last plan was kept)."""

    @property
    def acts(self) -> bool:
        """Whether there is anything to store, send or announce."""
        return bool(self.changes or self.sends or self.resends or self.rollout_steps or self.announce)

    def log_fields(self) -> dict[str, Any]:
        """Flat, JSON-ready fields for the one structured log line of a pass."""
        fields_: dict[str, Any] = {"scheduled": self.scheduled}
        if self.scheduled:
            fields_.update(self.plan.counts())
        fields_.update({
            "changes": len(self.changes),
            "lost": list(self.lost),
            "sent": len(self.sends),
            "resent": len(self.resends),
            "rolling": {name: len(r.rolling) for name, r in sorted(self.rollouts.items())},
            "rollouts_started": [s.template for s in self.rollout_steps if s.kind == "started"],
            "rollouts_finished": [s.template for s in self.rollout_steps if s.kind == "finished"],
            "rollouts_stuck": [s.template for s in self.rollout_steps if s.kind == "stuck"],
            "failed_everywhere": len(self.announce),
        })
        return fields_


# ---------------------------------------------------------------- the function


def reconcile(
    desired: Mapping[str, Desired],
    nodes: Nodes,
    placement: Placement,
    rollouts: Mapping[str, Rollout],
    failures: Failures,
    now: float,
) -> Reconcile:
    """Everything one pass decides; see the module docstring."""
    return finish(reconcile_steps(desired, nodes, placement, rollouts, failures, now))


def reconcile_steps(
    desired: Mapping[str, Desired],
    nodes: Nodes,
    placement: Placement,
    rollouts: Mapping[str, Rollout],
    failures: Failures,
    now: float,
) -> Steps[Reconcile]:
    """``reconcile`` in steps: the inputs must not change until it returns."""
    lost = lost_nodes(nodes, now)
    if placement.replace or placement.plan is None:
        infos = [
            replace(view.info, state="lost") if view.name in lost else view.info
            for view in nodes.views.values()
        ]
        demands = [d.demand for d in desired.values()]
        stay = drain_pace(desired, nodes, placement, infos)
        plan = yield from schedule_steps(demands, infos, placement.current, failures.failed, stay)
        changes = yield from _changes(plan, placement.current)
        by_node = yield from _group(plan.placement)
        keys = yield from _keys(by_node)
        scheduled = True
    else:
        plan, changes, by_node, keys = placement.plan, {}, placement.by_node, placement.keys
        scheduled = False
    after, rollout_steps = yield from _roll(desired, nodes, by_node, rollouts, now)
    sends = yield from _sends(desired, nodes, by_node, keys, after)
    sending = {send.node for send in sends}
    return Reconcile(
        plan=plan,
        changes=changes,
        by_node=by_node,
        keys=keys,
        lost=tuple(sorted(lost)),
        sends=sends,
        resends=tuple(n for n in resends(nodes.sent, acked_by(nodes.views), now) if n not in sending),
        rollouts=after,
        rollout_steps=rollout_steps,
        announce=_announcements(plan, failures),
        scheduled=scheduled,
    )


def drain_pace(
    desired: Mapping[str, Desired], nodes: Nodes, placement: Placement, infos: Sequence[NodeInfo],
) -> frozenset[Slot]:
    """The slots a drain keeps where they are for now (``drainpace.drain_stays``): only
    templates with a check are paced; nothing to do while no node with slots drains."""
    by_node = placement.by_node
    draining = [info.name for info in infos if info.draining and by_node.get(info.name)]
    if not draining:
        return frozenset()
    paces = {}
    for name in {name for node in draining for name in by_node[node]}:
        want = desired.get(name)
        if want is not None and want.checked:
            paces[name] = Pace(want.demand.count, want.max_unavailable)
    if not paces:
        return frozenset()
    rows = {name: view.rows for name, view in nodes.views.items()}
    return drain_stays(paces, {info.name: info for info in infos}, by_node, placement.current, rows)


def lost_nodes(nodes: Nodes, now: float) -> frozenset[str]:
    """Nodes down for ``grace`` seconds, when the guard allows moving anything."""
    if not nodes.may_move:
        return frozenset()
    return frozenset(
        name for name, view in nodes.views.items()
        if view.info.state == "down" and view.down_since is not None and now - view.down_since >= nodes.grace
    )


def resends(sent: Mapping[str, Sent], acked: Mapping[str, int], now: float) -> tuple[str, ...]:
    """Nodes that have not acked their latest generation for RESEND_AFTER seconds; ``acked``
    holds the generation each connected node acked (nodes not in it cannot be sent to)."""
    due = []
    for name, record in sent.items():
        generation = acked.get(name)
        if generation is not None and generation < record.generation and now - record.at >= RESEND_AFTER:
            due.append(name)
    return tuple(sorted(due))


def acked_by(views: Mapping[str, NodeView]) -> dict[str, int]:
    """The generation each connected node acked."""
    return {name: view.acked for name, view in views.items() if view.connected}


def _changes(plan: Plan, current: Mapping[Slot, str]) -> Steps[dict[Slot, str | None]]:
    """What the plan changes against ``current``: each moved or added slot's node, None for
    slots that no longer run anywhere."""
    changes: dict[Slot, str | None] = {}
    placement = plan.placement
    for slots in (plan.moved, plan.added):
        for part in chunks(slots):
            for slot in part:
                changes[slot] = placement[slot]
            yield
    for slots in (plan.stopped, plan.evicted):
        for part in chunks(slots):
            changes.update(dict.fromkeys(part))
            yield
    return changes


def _group(placement: Mapping[Slot, str]) -> Steps[dict[str, dict[str, list[int]]]]:
    """{node: {template: sorted ordinals}}, templates in name order."""
    grouped: dict[str, dict[str, list[int]]] = {}
    items = list(placement.items())
    for start in range(0, len(items), CHUNK):
        for (name, ordinal), node in items[start:start + CHUNK]:
            templates = grouped.get(node)
            if templates is None:
                templates = grouped[node] = {}
            ordinals = templates.get(name)
            if ordinals is None:
                templates[name] = [ordinal]
            else:
                ordinals.append(ordinal)
        yield
    out: dict[str, dict[str, list[int]]] = {}
    done = 0
    for node, templates in grouped.items():
        for ordinals in templates.values():
            ordinals.sort()
            done += len(ordinals)
        out[node] = {name: templates[name] for name in sorted(templates)}
        if done >= CHUNK:
            yield
            done = 0
    return out


def _keys(by_node: ByNode) -> Steps[dict[str, str]]:
    keys = {}
    for index, (node, templates) in enumerate(by_node.items()):
        blob = msgpack.packb(list(templates.items()), use_bin_type=True)
        keys[node] = hashlib.blake2b(blob, digest_size=16).hexdigest()
        if index % NODE_STEP == NODE_STEP - 1:
            yield
    return keys


def _roll(
    desired: Mapping[str, Desired],
    nodes: Nodes,
    by_node: ByNode,
    rollouts: Mapping[str, Rollout],
    now: float,
) -> Steps[tuple[dict[str, Rollout], tuple[RolloutStep, ...]]]:
    """Start a rollout where a node holding a template was last sent another version of it;
    count its progress (new instances ready) and advance it; drop the finished ones and those
    of deleted templates."""
    behind: dict[str, dict[str, Order]] = {}
    for index, (node, sent) in enumerate(nodes.sent.items()):
        holding = by_node.get(node, {})
        for name, order in sent.orders.items():
            want = desired.get(name)
            if want is None or name not in holding:
                continue
            version = order.version
            if version is not want.version and version.key != want.version.key:
                behind.setdefault(name, {})[node] = order
        if index % NODE_STEP == NODE_STEP - 1:
            yield
    after: dict[str, Rollout] = {}
    steps: list[RolloutStep] = []
    for name in sorted(set(rollouts) | set(behind)):
        want = desired.get(name)
        if want is None:
            continue
        rollout = rollouts.get(name)
        if rollout is None or rollout.target.key != want.version.key:
            late = behind.get(name)
            if not late:
                continue
            rollout = start_rollout(rollout, want.version, want.max_unavailable, late, now, want.progress_deadline)
            steps.append(RolloutStep(name, "started", len(late)))
        ordinals_on = {node: len(held[name]) for node, held in by_node.items() if name in held}
        ready = {
            node: _ready(nodes.views.get(node), name, by_node.get(node, {}).get(name, ()), rollout.target)
            for node in rollout.rolling
        }
        # nodes neither waiting nor rolling run the target (done, or new to the template):
        # counted whole, so that only rolling nodes' rows are read
        rolled = sum(n for node, n in ordinals_on.items() if node not in rollout.rolling and node not in rollout.waiting)
        stuck = rollout.stuck
        rollout = progress(rollout, rolled + sum(ready.values()), now)
        if rollout.stuck and not stuck:
            steps.append(RolloutStep(name, "stuck", len(rollout.rolling), rollout.best))
        done = {node: ready.get(node, 0) == ordinals_on.get(node, 0) for node in rollout.rolling}
        rollout = advance(rollout, ordinals_on, done)
        if rollout.finished:
            steps.append(RolloutStep(name, "finished"))
        else:
            after[name] = rollout
        yield
    return after, tuple(steps)


def _ready(view: NodeView | None, name: str, ordinals: Sequence[int], target: Version) -> int:
    """How many ordinals of ``name`` a node reports on ``target`` and ready (the row's flag:
    serving, not just started). A node is done rolling when that is all it runs."""
    if view is None:
        return 0
    rows = view.rows
    launch_hash = target.launch_hash
    count = 0
    for ordinal in ordinals:
        row = rows.get(instance_id(name, ordinal))
        if row is not None and row["spec"] == launch_hash and row.get("ready", False):
            count += 1
    return count


def _sends(
    desired: Mapping[str, Desired],
    nodes: Nodes,
    by_node: ByNode,
    keys: Mapping[str, str],
    rollouts: Mapping[str, Rollout],
) -> Steps[tuple[Send, ...]]:
    """Every connected node whose assignment differs from what it was last sent, or that
    came back up since."""
    sends = []
    empty: dict[str, Sequence[int]] = {}
    for index, (name, view) in enumerate(nodes.views.items()):
        if index % NODE_STEP == NODE_STEP - 1:
            yield
        if not view.connected:
            continue
        held = by_node.get(name, empty)
        orders: dict[str, Order] = {}
        parts = [keys.get(name, "")]
        for template in held:
            want = desired.get(template)
            if want is None:
                continue
            rollout = rollouts.get(template)
            if rollout is None:
                order = Order(want.version, want.max_unavailable)
            else:
                order = rollout.order_for(name, want.max_unavailable)
            orders[template] = order
            parts.append(f"{template}={order.version.key}/{order.allowance}")
        sent = nodes.sent.get(name)
        if sent is not None:
            held = _keep_paused(desired, sent, orders, held, parts)
        digest = hashlib.blake2b(";".join(parts).encode(), digest_size=16).hexdigest()
        if sent is None or sent.digest != digest or name in nodes.fresh:
            sends.append(Send(name, digest, orders, {t: held[t] for t in orders}))
    return tuple(sends)


def _keep_paused(
    desired: Mapping[str, Desired],
    sent: Sent,
    orders: dict[str, Order],
    held: Mapping[str, Sequence[int]],
    parts: list[str],
) -> Mapping[str, Sequence[int]]:
    """Keep a paused template in the assignment of a node that was sent it, with no ordinals,
    so the node stops it and says it stopped (a template left out is deleted there)."""
    kept: dict[str, Sequence[int]] | None = None
    for template in sent.orders:
        want = desired.get(template)
        if want is None or not want.paused or template in orders:
            continue
        orders[template] = Order(want.version, want.max_unavailable, paused=True)
        parts.append(f"{template}={want.version.key}/paused")
        if kept is None:
            kept = dict(held)
        kept[template] = ()
    return held if kept is None else kept


def _announcements(plan: Plan, failures: Failures) -> tuple[Announce, ...]:
    found = []
    for name, pending in plan.pending.items():
        if pending.reason != FAILED_EVERYWHERE:
            continue
        for ordinal in pending.ordinals:
            slot = (name, ordinal)
            if slot not in failures.announced:
                found.append(Announce(slot, tuple(sorted(failures.failed.get(slot, ())))))
    return tuple(found)
