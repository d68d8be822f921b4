"""Desired state and reconciliation: what should run where, and telling each node.

``Cluster`` holds the desired state (from the store), the placement of every ordinal, and what
each node was last told. Operations change the desired state durably, then ``kick`` a
reconcile. A reconcile is level-triggered and idempotent:

1. judge nodes for the scheduler: up/suspect as they are, down ones ``lost`` once they stayed
   down ``node_grace`` seconds and the guard rails allow moving anything;
2. ``schedule`` (pure) computes the placement from the demands, nodes, current placement
   and the nodes each ordinal failed on;
3. placement changes are stored, then every node whose assignment changed gets the whole of
   it with a new generation (stored, monotonic per node across controller restarts);
4. nodes that have not acked their latest generation get it again after a while.

Sending the same assignment twice changes nothing on the agent; a node that comes back gets
its current assignment first, and stops whatever is not in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from gaffer.common import topics
from gaffer.common.errors import InvalidRequest, TemplateNotFound
from gaffer.common.template import Template
from gaffer.controller.hub import EventHub
from gaffer.controller.liveness import NodeState
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.rollout import Rollout, start_rollout, with_allowance
from gaffer.controller.scheduler import FAILED_EVERYWHERE, Demand, NodeInfo, Plan, schedule
from gaffer.controller.store import Store, StoredTemplate

log = logging.getLogger("gaffer.controller.cluster")

RESEND_AFTER = 2.0
RESTART_ENV = "GAFFER_RESTARTED_AT"
Slot = tuple[str, int]
SendAssign = Callable[[Node, dict[str, Any]], bool]


@dataclass
class Sent:
    generation: int
    digest: str
    body: dict[str, Any]
    at: float
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)


class Cluster:
    def __init__(
        self,
        store: Store,
        nodes: NodeTable,
        hub: EventHub,
        send_assign: SendAssign,
        node_grace: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.hub = hub
        self._send_assign = send_assign
        self.node_grace = node_grace
        self._clock = clock
        self.templates: dict[str, StoredTemplate] = {t.template.name: t for t in store.templates()}
        self.placement: dict[Slot, str] = dict(store.placement())
        self.failed: dict[Slot, frozenset[str]] = dict(store.failed())
        self.sent: dict[str, Sent] = {}
        self.rollouts: dict[str, Rollout] = {}
        self.down_since: dict[str, float] = {}
        self.may_move = False
        self.plan: Plan | None = None
        self._announced_failed: set[Slot] = set()
        self._pending_kick = False
        self.reconciles = 0
        for stored in store.nodes():
            node = nodes.nodes.get(stored.name)
            if node is None:
                node = nodes.nodes[stored.name] = Node(name=stored.name)
                node.labels = dict(stored.labels)
                node.agent_id = stored.agent_id
            node.cordoned = stored.cordoned
            node.draining = stored.draining

    # ----------------------------------------------------------------- desired state

    def apply(self, templates: Iterable[Template]) -> list[dict[str, Any]]:
        """Create or update each template; report what changed for each."""
        results = []
        for template in templates:
            change = self.store.put_template(template)
            results.append({"name": template.name, "change": change.kind, "version": change.version})
            if not change.changed:
                continue
            stored = self.store.get_template(template.name)
            self.templates[template.name] = stored
            previous = change.previous
            if previous is None:
                self._event(template.name, "created", stored)
                continue
            if previous.with_count(0) != template.with_count(0):
                self._event(template.name, "updated", stored)
                self._spec_changed(template.name, previous, template)
            if previous.numprocesses != template.numprocesses:
                self._event(template.name, "scaled", stored, previous=previous.numprocesses)
        self.kick()
        return results

    def delete(self, name: str) -> None:
        self._stored(name)
        self.store.delete_template(name)
        del self.templates[name]
        self.rollouts.pop(name, None)
        self.store.clear_failed(name)
        self.failed = {slot: nodes for slot, nodes in self.failed.items() if slot[0] != name}
        self.hub.publish(topics.template(name, "deleted"), {"name": name})
        self.kick()

    def scale(self, name: str, how: str | int) -> int:
        stored = self._stored(name)
        current = stored.template.numprocesses
        count = parse_scale(how, current)
        if count != current:
            self.store.set_count(name, count)
            self.templates[name] = self.store.get_template(name)
            self._event(name, "scaled", self.templates[name], previous=current)
            self.kick()
        return count

    def set_paused(self, name: str, paused: bool) -> None:
        stored = self._stored(name)
        if not paused:
            self.store.clear_failed(name)
            self.failed = {slot: n for slot, n in self.failed.items() if slot[0] != name}
            self._announced_failed = {slot for slot in self._announced_failed if slot[0] != name}
        if stored.paused != paused:
            self.store.set_paused(name, paused)
            self.templates[name] = self.store.get_template(name)
        self.kick()

    def restart(self, name: str) -> None:
        """Rolling restart: a new restart stamp in the env changes the spec, which rolls."""
        stored = self._stored(name)
        env = dict(stored.template.env)
        env[RESTART_ENV] = f"{time.time():.6f}"
        self.apply([replace(stored.template, env=env)])
        if stored.paused:
            self.set_paused(name, False)

    def cordon(self, name: str, cordoned: bool) -> None:
        """Cordon: keep what the node runs, place nothing new. Uncordon also ends a drain."""
        self.store.set_cordoned(name, cordoned)
        node = self._node_record(name)
        node.cordoned = cordoned
        if not cordoned and node.draining:
            self.store.set_draining(name, False)
            node.draining = False
        self.kick()

    def drain(self, name: str, draining: bool = True) -> None:
        self.store.set_cordoned(name, True)
        self.store.set_draining(name, draining)
        node = self._node_record(name)
        node.cordoned = True
        node.draining = draining
        self.hub.publish(topics.node(name, "drain"), {"node": name, "draining": draining})
        self.kick()

    def _node_record(self, name: str) -> Node:
        node = self.nodes.nodes.get(name)
        if node is None:
            node = self.nodes.nodes[name] = Node(name=name)
        return node

    def _stored(self, name: str) -> StoredTemplate:
        stored = self.templates.get(name)
        if stored is None:
            raise TemplateNotFound(name)
        return stored

    def _event(self, name: str, kind: str, stored: StoredTemplate, **extra: Any) -> None:
        self.hub.publish(
            topics.template(name, kind),
            {"name": name, "numprocesses": stored.template.numprocesses, "version": stored.version, **extra},
        )

    def _spec_changed(self, name: str, old: Template, new: Template) -> None:
        if old.spec_hash() == new.spec_hash():
            return
        self.store.clear_failed(name)
        self.failed = {slot: n for slot, n in self.failed.items() if slot[0] != name}
        sent = {node: s.specs[name] for node, s in self.sent.items() if name in s.specs}
        self.rollouts[name] = start_rollout(
            self.rollouts.get(name), _base_spec(new), new.spec_hash(),
            new.update.max_unavailable, sent,
        )

    # ----------------------------------------------------------------- observations

    def node_changed(self, node: Node) -> None:
        """A node's liveness changed (or it said hello): re-judge and resend its assignment."""
        now = self._clock()
        if node.state is NodeState.DOWN:
            self.down_since.setdefault(node.name, now)
        else:
            self.down_since.pop(node.name, None)
        if node.state is NodeState.UP:
            self.sent.pop(node.name, None)
        self.kick()

    def instances_reported(self, node: Node, rows: Iterable[dict[str, Any]]) -> None:
        """Failed ordinals are tried elsewhere; rolling nodes may have finished."""
        changed = False
        for row in rows:
            if row["state"] != "failed" or not isinstance(row["ordinal"], int):
                continue
            slot = (row["template"], row["ordinal"])
            if self.placement.get(slot) != node.name:
                continue
            seen = self.failed.get(slot, frozenset())
            if node.name not in seen:
                self.failed[slot] = seen | {node.name}
                self.store.mark_failed(slot[0], slot[1], node.name)
                log.warning("%s.%d failed on %s; trying another node", slot[0], slot[1], node.name)
                changed = True
        if changed or self.rollouts:
            self.kick()

    def set_guard(self, may_move: bool) -> None:
        if may_move != self.may_move:
            self.may_move = may_move
            self.kick()

    def check_timers(self) -> None:
        """Called on every tick: lost nodes after their grace, and unacked assignments."""
        now = self._clock()
        if self.may_move and any(now - since >= self.node_grace for since in self.down_since.values()):
            lost_now = {
                name for name, since in self.down_since.items() if now - since >= self.node_grace
            }
            if any(self.placement_on(name) for name in lost_now):
                self.kick()
        for name, sent in self.sent.items():
            node = self.nodes.nodes.get(name)
            if node is None or node.state is NodeState.DOWN or node.peer is None:
                continue
            if node.generation_acked < sent.generation and now - sent.at >= RESEND_AFTER:
                sent.at = now
                self._send_assign(node, sent.body)

    def placement_on(self, node: str) -> int:
        return sum(1 for owner in self.placement.values() if owner == node)

    def acked(self, node: Node, generation: int, ok: bool, errors: list[str]) -> None:
        node.generation_acked = max(node.generation_acked, generation)
        if errors:
            log.warning("node %s could not apply part of assignment %d: %s", node.name, generation, "; ".join(errors))
            bad = {e.split(":", 1)[0] for e in errors}
            for slot, owner in self.placement.items():
                if owner == node.name and slot[0] in bad and node.name not in self.failed.get(slot, frozenset()):
                    self.failed[slot] = self.failed.get(slot, frozenset()) | {node.name}
                    self.store.mark_failed(slot[0], slot[1], node.name)
            self.kick()

    # ----------------------------------------------------------------- reconciling

    def kick(self) -> None:
        if not self._pending_kick:
            self._pending_kick = True
            asyncio.get_running_loop().call_soon(self._run_reconcile)

    def _run_reconcile(self) -> None:
        self._pending_kick = False
        try:
            self.reconcile()
        except Exception:
            log.exception("reconcile failed; will retry on the next change")

    def reconcile(self) -> Plan:
        self.reconciles += 1
        now = self._clock()
        plan = schedule(self._demands(), self._node_infos(now), self.placement, self.failed)
        changes: dict[Slot, str | None] = {}
        for slot, node in plan.placement.items():
            if self.placement.get(slot) != node:
                changes[slot] = node
        for slot in self.placement:
            if slot not in plan.placement:
                changes[slot] = None
        if changes:
            self.store.save_placement(changes)
            c = plan.counts()
            log.info(
                "placement: %d placed (%d kept, %d added, %d moved), %d stopped, %d evicted, %d pending",
                c["placed"], c["kept"], c["added"], c["moved"], c["stopped"], c["evicted"], c["pending"],
            )
        self.placement = dict(plan.placement)
        self.plan = plan
        self._announce_failures(plan)
        self._advance_rollouts()
        self._send_assignments(now)
        return plan

    def _demands(self) -> list[Demand]:
        demands = []
        for name, stored in self.templates.items():
            template = stored.template
            placement = template.placement
            demands.append(Demand(
                name=name,
                count=0 if stored.paused else template.numprocesses,
                max_per_node=placement.max_per_node,
                nodes=placement.nodes,
                labels=dict(placement.labels),
            ))
        return demands

    def _node_infos(self, now: float) -> list[NodeInfo]:
        infos = []
        for node in self.nodes.nodes.values():
            state = node.state.value
            if node.state is NodeState.DOWN:
                since = self.down_since.setdefault(node.name, now)
                if self.may_move and now - since >= self.node_grace:
                    state = "lost"
            infos.append(NodeInfo(
                name=node.name, state=state, labels=dict(node.labels),
                cordoned=node.cordoned, draining=node.draining,
            ))
        return infos

    def _announce_failures(self, plan: Plan) -> None:
        for name, pending in plan.pending.items():
            if pending.reason != FAILED_EVERYWHERE:
                continue
            for ordinal in pending.ordinals:
                slot = (name, ordinal)
                if slot in self._announced_failed:
                    continue
                self._announced_failed.add(slot)
                self.hub.publish(topics.proc(name, "failed"), {
                    "template": name, "id": topics.instance_id(name, ordinal), "ordinal": ordinal,
                    "scope": "cluster", "nodes": sorted(self.failed.get(slot, ())),
                    "reason": pending.reason,
                })

    def _advance_rollouts(self) -> None:
        for name, rollout in list(self.rollouts.items()):
            per_node: dict[str, int] = {}
            for (template, _), node in self.placement.items():
                if template == name:
                    per_node[node] = per_node.get(node, 0) + 1
            done = {node: self._node_done(name, node, rollout.target_hash) for node in rollout.rolling}
            rollout.advance(per_node, done)
            if rollout.finished:
                del self.rollouts[name]
                log.info("%s: rolling update finished", name)

    def _node_done(self, name: str, node_name: str, target_hash: str) -> bool:
        node = self.nodes.nodes.get(node_name)
        if node is None:
            return False
        wanted = {topics.instance_id(t, o) for (t, o), n in self.placement.items() if t == name and n == node_name}
        rows = {i["id"]: i for i in node.instances.values() if i["template"] == name}
        return all(
            (row := rows.get(ident)) is not None and row["spec"] == target_hash and row["state"] == "running"
            for ident in wanted
        )

    def _send_assignments(self, now: float) -> None:
        by_node: dict[str, dict[str, list[int]]] = {}
        for (name, ordinal), node in self.placement.items():
            by_node.setdefault(node, {}).setdefault(name, []).append(ordinal)
        changed: list[tuple[Node, dict[str, Any], str]] = []
        for node in self.nodes.nodes.values():
            if node.state is NodeState.DOWN or node.peer is None:
                continue
            ordinals = by_node.get(node.name, {})
            specs = {name: self._spec_for(name, node.name, len(ords)) for name, ords in ordinals.items()}
            body = {
                "templates": specs,
                "ordinals": {name: sorted(ords) for name, ords in ordinals.items()},
            }
            digest = _digest(body)
            previous = self.sent.get(node.name)
            if previous is None or previous.digest != digest:
                changed.append((node, body, digest))
        if not changed:
            return
        generations = self.store.next_generations([node.name for node, _, _ in changed])
        for node, body, digest in changed:
            generation = generations[node.name]
            body = {"generation": generation, **body}
            self.sent[node.name] = Sent(generation, digest, body, now, specs={
                name: _base_spec_dict(spec) for name, spec in body["templates"].items()
            })
            self._send_assign(node, body)

    def _spec_for(self, name: str, node: str, count: int) -> dict[str, Any]:
        template = self.templates[name].template
        rollout = self.rollouts.get(name)
        spec = rollout.spec_for(node) if rollout is not None else _base_spec(template)
        if rollout is None:
            spec = with_allowance(spec, template.update.max_unavailable)
        return {**spec, "numprocesses": count}

    # ----------------------------------------------------------------- views

    def pending(self) -> dict[str, dict[str, Any]]:
        if self.plan is None:
            return {}
        return {name: {"count": p.count, "reason": p.reason} for name, p in self.plan.pending.items()}

    def template_view(self, name: str) -> dict[str, Any]:
        stored = self._stored(name)
        placed = sorted(o for (t, o) in self.placement if t == name)
        running = 0
        for (t, o), node_name in self.placement.items():
            if t != name:
                continue
            node = self.nodes.nodes.get(node_name)
            row = node.instances.get(topics.instance_id(t, o)) if node else None
            if row is not None and row["state"] == "running":
                running += 1
        pending = self.pending().get(name)
        return {
            "name": name,
            "version": stored.version,
            "paused": stored.paused,
            "numprocesses": stored.template.numprocesses,
            "placed": len(placed),
            "running": running,
            "pending": pending,
            "rolling": name in self.rollouts,
            "spec": stored.template.to_dict(),
            "created_at": stored.created_at,
            "updated_at": stored.updated_at,
        }


def parse_scale(how: str | int, current: int) -> int:
    """``N``, ``+N`` or ``-N`` against ``current``; InvalidRequest for anything else or < 0."""
    if isinstance(how, bool):
        raise InvalidRequest(f"bad count {how!r}")
    if isinstance(how, int):
        count = how
    else:
        text = str(how).strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isascii() or not digits.isdecimal():
            raise InvalidRequest(f"bad count {how!r}: use N, +N or -N")
        value = int(digits)
        count = current + value if text[0] == "+" else current - value if text[0] == "-" else value
    if count < 0:
        raise InvalidRequest(f"count would be {count}: it must stay >= 0")
    return count


def _base_spec(template: Template) -> dict[str, Any]:
    data = template.to_dict()
    data.pop("numprocesses", None)
    return data


def _base_spec_dict(spec: dict[str, Any]) -> dict[str, Any]:
    data = dict(spec)
    data.pop("numprocesses", None)
    return data


def _digest(body: dict[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()

