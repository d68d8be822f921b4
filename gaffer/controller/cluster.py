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
import concurrent.futures
import hashlib
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from gaffer.common import topics
from gaffer.common.parts import split_assignment
from gaffer.common.errors import (
    InvalidRequest,
    NodeAlive,
    NodeNotFound,
    StorageDamaged,
    StorageError,
    TemplateNotFound,
)
from gaffer.common.limits import MAX_COUNT
from gaffer.common.template import Template
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.counts import CountLimits, Limited, check_counts, effective_counts
from gaffer.controller.hub import EventHub
from gaffer.controller.liveness import NodeState
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.rollout import Rollout, start_rollout, with_allowance
from gaffer.controller.scheduler import FAILED_EVERYWHERE, Demand, NodeInfo, Plan, schedule
from gaffer.controller.store import Change, Puts, Store, StoredTemplate

log = logging.getLogger("gaffer.controller.cluster")

RESEND_AFTER = 2.0
STORE_RETRY = 5.0
"""Seconds before a reconcile that the store refused (disk full, I/O error) is tried again."""
INLINE_SLOTS = 5_000
WORKER_SWITCH = 0.0005
"""GIL switch interval while the worker thread schedules: the loop thread takes the GIL back
for every socket call, and at the default 5 ms each of those waits would add up to stalls."""
"""Below this many slots, scheduling is faster inline than handed to the worker thread."""
STORE_SLICE = 1_000
SEND_SLICE = 50
APPLY_SLICE = 2_000
"""Templates compared, or announced, between two turns of the loop in a large apply."""
PART_BYTES = 2 * 1024 * 1024
"""An assignment bigger than this goes in parts (half a message: room for the envelope)."""
RESTART_ENV = "GAFFER_RESTARTED_AT"
Slot = tuple[str, int]
SendAssign = Callable[[Node, dict[str, Any]], bool]


@dataclass
class Sent:
    generation: int
    digest: str
    bodies: list[dict[str, Any]]
    """The assignment as sent: one body, or its parts (see gaffer.common.parts)."""
    ordinals: dict[str, list[int]]
    at: float
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    before: Sent | None = None
    """The assignment this one replaced (its own ``before`` dropped): the node's reports on
    what that one gave it may still be on their way."""
    _sets: dict[str, frozenset[int]] = field(default_factory=dict, repr=False)

    def assigns(self, template: str, ordinal: int) -> bool:
        """Whether this assignment, or the one it replaced, gave the node ``template.ordinal``."""
        ordinals = self._sets.get(template)
        if ordinals is None:
            ordinals = self._sets[template] = frozenset(self.ordinals.get(template, ()))
        if ordinal in ordinals:
            return True
        return self.before is not None and self.before.assigns(template, ordinal)


class Cluster:
    def __init__(
        self,
        store: Store,
        nodes: NodeTable,
        hub: EventHub,
        send_assign: SendAssign,
        node_grace: float,
        clock: Callable[[], float],
        limits: CountLimits = CountLimits(),
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
        self._dirty = False
        self._replace = False
        self._retry_at: float | None = None
        self._by_node: dict[str, dict[str, list[int]]] = group_by_node(self.placement)
        self._running: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaffer-schedule")
        self.reconciles = 0
        self._demand_cache: dict[str, tuple[StoredTemplate, Demand]] = {}
        self.limits = limits
        self.limited: dict[str, Limited] = {}
        """Templates that want more than the limits allow: only ``placing`` of them is placed."""
        self._total = sum(stored.template.numprocesses for stored in self.templates.values())
        self._over = {
            name for name, stored in self.templates.items()
            if stored.template.numprocesses > limits.per_template
        }
        self._recount()
        self._stored_nodes: dict[str, tuple[dict[str, str], str]] = {}
        for stored in store.nodes():
            self._stored_nodes[stored.name] = (dict(stored.labels), stored.agent_id)
            node = nodes.nodes.get(stored.name)
            if node is None:
                node = nodes.nodes[stored.name] = Node(name=stored.name)
                node.labels = dict(stored.labels)
                node.agent_id = stored.agent_id
            node.cordoned = stored.cordoned
            node.draining = stored.draining

    # ----------------------------------------------------------------- desired state

    def apply(self, templates: Iterable[Template]) -> list[dict[str, Any]]:
        """Create or update the templates, all or none: one store transaction (StorageError
        and nothing saved when the disk refuses). Memory and events follow the commit only."""
        templates = list(templates)
        counts = self._check_counts(templates)
        changes = self.store.put_templates(templates)
        self._announce(self._record(changes))
        self._counted(counts)
        self.kick()
        return _results(changes)

    async def apply_sliced(self, templates: list[Template]) -> list[dict[str, Any]]:
        """``apply`` for a large apply (100,000 templates): the same single transaction, but
        the work before it (comparing with what is stored) and after it (events, rolling
        updates) runs in slices, so the loop keeps answering agents and clients meanwhile."""
        counts = self._check_counts(templates)
        puts = Puts()
        for start in range(0, len(templates), APPLY_SLICE):
            self.store.prepare_puts(templates[start:start + APPLY_SLICE], puts)
            await asyncio.sleep(0)
        changes = self.store.commit_puts(puts)
        changed = self._record(changes)
        self._counted(counts)
        for start in range(0, len(changed), APPLY_SLICE):
            self._announce(changed[start:start + APPLY_SLICE])
            await asyncio.sleep(0)
        self.kick()
        return _results(changes)

    def _record(self, changes: list[Change]) -> list[tuple[Change, Template | None]]:
        """Memory follows the committed changes; the changed ones, each with its template
        from before."""
        changed = []
        for change in changes:
            if not change.changed:
                continue
            assert change.stored is not None
            before = self.templates.get(change.name)
            previous = before.template if before is not None else change.previous
            self.templates[change.name] = change.stored
            changed.append((change, previous))
        return changed

    def _announce(self, changed: list[tuple[Change, Template | None]]) -> None:
        """Events and rolling updates for committed changes."""
        relaunched = []
        for change, previous in changed:
            stored = change.stored
            assert stored is not None
            name, template = change.name, stored.template
            if previous is None:
                self._event(name, "created", stored)
                continue
            if change.kind == "updated":
                self._event(name, "updated", stored)
                if previous.spec_hash() != template.spec_hash():
                    relaunched.append((name, previous, template))
            if previous.numprocesses != template.numprocesses:
                self._event(name, "scaled", stored, previous=previous.numprocesses)
        if relaunched:
            self._specs_changed(relaunched)

    def delete(self, name: str) -> None:
        self.delete_many([name])

    def delete_many(self, names: list[str]) -> None:
        """Delete templates, all in one transaction (or none: TemplateNotFound)."""
        counts = {name: (self._stored(name).template.numprocesses, 0) for name in names}
        self.store.delete_templates(names)
        gone = set(names)
        for name in names:
            del self.templates[name]
            self.rollouts.pop(name, None)
            self.hub.publish(topics.template(name, "deleted"), {"name": name})
        self.failed = {slot: nodes for slot, nodes in self.failed.items() if slot[0] not in gone}
        self._counted(counts)
        self.kick()

    def scale(self, name: str, how: str | int) -> int:
        stored = self._stored(name)
        current = stored.template.numprocesses
        count = parse_scale(how, current)
        if count != current:
            check_counts(self.limits, {name: (current, count)}, self._total)
            change = self.store.set_count(name, count)
            assert change.stored is not None
            self.templates[name] = change.stored
            self._event(name, "scaled", self.templates[name], previous=current)
            self._counted({name: (current, count)})
            self.kick()
        return count

    def wanted(self, name: str) -> int:
        """How many instances of ``name`` are placed (its count, or less when limited)."""
        limited = self.limited.get(name)
        if limited is not None:
            return limited.placing
        stored = self.templates.get(name)
        return stored.template.numprocesses if stored is not None else 0

    def _check_counts(self, templates: list[Template]) -> dict[str, tuple[int, int]]:
        """Refuse a whole apply, before anything is stored, if it would grow a count past a
        limit (LimitExceeded); the counts it changes, (before, after) per template."""
        changes: dict[str, tuple[int, int]] = {}
        for template in templates:
            stored = self.templates.get(template.name)
            before = stored.template.numprocesses if stored is not None else 0
            changes[template.name] = (before, template.numprocesses)
        check_counts(self.limits, changes, self._total)
        return changes

    def _counted(self, changes: dict[str, tuple[int, int]]) -> None:
        """Keep the total and the over-limit set up to date after counts changed."""
        for name, (before, after) in changes.items():
            self._total += after - before
            if after > self.limits.per_template:
                self._over.add(name)
            else:
                self._over.discard(name)
        self._recount()

    def _recount(self) -> None:
        """Find the templates over a limit (only ever from a store written before the limits,
        or under higher ones): place at most the limit, and say so once per template."""
        if not (self.limited or self._over or self._total > self.limits.total):
            return
        counts = {name: stored.template.numprocesses for name, stored in self.templates.items()}
        _, limited = effective_counts(self.limits, counts)
        for name, note in sorted(limited.items()):
            if self.limited.get(name) != note:
                log.error(
                    "template %s wants %s instances, %s: placing only %s; scale it down "
                    "(gafferctl scale %s=N) or raise the limit",
                    name, f"{note.wanted:,}", note.reason, f"{note.placing:,}", name,
                )
        self.limited = limited

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
        node = self._known_node(name)
        self.store.set_node_flags(name, cordoned=cordoned, draining=None if cordoned else False)
        node.cordoned = cordoned
        if not cordoned:
            node.draining = False
        self.kick()

    def drain(self, name: str, draining: bool = True) -> None:
        node = self._known_node(name)
        self.store.set_node_flags(name, cordoned=True, draining=draining)
        node.cordoned = True
        node.draining = draining
        self.hub.publish(topics.node(name, "drain"), {"node": name, "draining": draining})
        self.kick()

    def remember_node(self, node: Node) -> None:
        """Store a node's labels and agent once they change (not on every hello: a thousand
        agents reconnecting would otherwise cost a thousand synchronous disk writes)."""
        known = (dict(node.labels), node.agent_id)
        if self._stored_nodes.get(node.name) != known:
            try:
                self.store.put_node(node.name, node.labels, node.agent_id)
            except StorageError:
                return  # the store logged it; tried again at the node's next hello
            self._stored_nodes[node.name] = known

    def forget_node(self, name: str) -> int:
        """Forget a node that is gone for good: its record goes (its generation stays, so an
        agent that comes back under that name is still fenced), and its slots are placed
        elsewhere at once. Only a ``down`` node: one that is up or suspect may still run
        things. Returns how many slots it held."""
        node = self._known_node(name)
        if node.state is not NodeState.DOWN:
            raise NodeAlive(
                f"node {name!r} is {node.state.value}: only a node that is down can be forgotten "
                f"(drain it with `gafferctl drain {name}` and stop its agent first)"
            )
        held = self.placement_on(name)
        self.store.forget_node(name)
        self.nodes.disconnect(node)
        del self.nodes.nodes[name]
        self._stored_nodes.pop(name, None)
        self.down_since.pop(name, None)
        self.sent.pop(name, None)
        log.warning("node %s forgotten; its %d slots move to other nodes", name, held)
        self.kick()
        return held

    def _known_node(self, name: str) -> Node:
        node = self.nodes.nodes.get(name)
        if node is None:
            raise NodeNotFound(name)
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

    def _specs_changed(self, changed: list[tuple[str, Template, Template]]) -> None:
        """New launch specs: the store forgot their failures in the apply's transaction, and
        each template placed somewhere starts a cluster-wide rolling update."""
        names = {name for name, _, _ in changed}
        self.failed = {slot: n for slot, n in self.failed.items() if slot[0] not in names}
        placed: dict[str, list[str]] = {}
        for node, templates in self._by_node.items():
            for name in names.intersection(templates):
                placed.setdefault(name, []).append(node)
        for name, old, new in changed:
            sent = {node: s.specs[name] for node, s in self.sent.items() if name in s.specs}
            if not sent and name not in placed:
                self.rollouts.pop(name, None)
                continue
            old_spec = with_allowance(_base_spec(old), old.update.max_unavailable)
            for node in placed.get(name, ()):
                # placed there but not on record as sent (its assignment is being resent after
                # a reconnect): it runs the old spec, and must wait its turn like the others
                sent.setdefault(node, old_spec)
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
                if not self._store_failure(slot, node.name):
                    continue
                self.failed[slot] = seen | {node.name}
                log.warning("%s.%d failed on %s; trying another node", slot[0], slot[1], node.name)
                changed = True
        if changed:
            self.kick()
        elif self.rollouts:
            self.kick(placement=False)

    def set_guard(self, may_move: bool) -> None:
        if may_move != self.may_move:
            self.may_move = may_move
            self.kick()

    def check_timers(self) -> None:
        """Called on every tick: lost nodes after their grace, and unacked assignments."""
        now = self._clock()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.kick()
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
                for body in sent.bodies:
                    self._send_assign(node, body)

    def by_node(self, node: str) -> dict[str, list[int]]:
        """{template: ordinals} placed on ``node`` now."""
        return self._by_node.get(node, {})

    def placement_on(self, node: str) -> int:
        return sum(len(ordinals) for ordinals in self._by_node.get(node, {}).values())

    def acked(self, node: Node, generation: int, ok: bool, errors: list[str]) -> None:
        node.generation_acked = max(node.generation_acked, generation)
        if errors:
            log.warning("node %s could not apply part of assignment %d: %s", node.name, generation, "; ".join(errors))
            bad = {e.split(":", 1)[0] for e in errors}
            for slot, owner in self.placement.items():
                if owner == node.name and slot[0] in bad and node.name not in self.failed.get(slot, frozenset()):
                    if self._store_failure(slot, node.name):
                        self.failed[slot] = self.failed.get(slot, frozenset()) | {node.name}
            self.kick()

    def _store_failure(self, slot: Slot, node: str) -> bool:
        """Store that ``slot`` failed on ``node`` before memory says so; False if the store
        refused (it logged why; the next report of the failure tries again)."""
        try:
            self.store.mark_failed(slot[0], slot[1], node)
        except StorageError:
            return False
        return True

    # ----------------------------------------------------------------- reconciling

    def kick(self, placement: bool = True) -> None:
        """Ask for a reconcile: coalesced, and never two at once (a kick during a run makes
        the run go round once more). ``placement=False`` only advances rolling updates and
        resends assignments: a report cannot change where anything should run."""
        self._dirty = True
        self._replace = self._replace or placement
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._reconcile_while_dirty())

    async def _reconcile_while_dirty(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                try:
                    await self.reconcile()
                except StorageError as exc:
                    # the store logged it once; a damaged store refuses until repaired
                    if not isinstance(exc, StorageDamaged):
                        self._retry_at = self._clock() + STORE_RETRY
                except Exception:
                    log.exception("reconcile failed; will retry on the next change")
        finally:
            self._running = None

    async def settled(self) -> None:
        """Wait until no reconcile is running or due (for tests and benchmarks)."""
        while self._running is not None:
            await asyncio.shield(self._running)

    async def reconcile(self) -> Plan:
        """One level-triggered pass. Scheduling a large cluster runs in a worker thread (the
        function is pure), and storing and sending proceed in slices, so the loop keeps
        answering heartbeats and clients while thousands of slots move."""
        now = self._clock()
        if not self._replace and self.plan is not None:
            self._advance_rollouts()
            await self._send_assignments(now)
            return self.plan
        self._replace = False
        self.reconciles += 1
        demands = self._demands()
        infos = self._node_infos(now)
        current = dict(self.placement)
        avoid = dict(self.failed)
        if len(current) + sum(d.count for d in demands) > INLINE_SLOTS:
            loop = asyncio.get_running_loop()
            interval = sys.getswitchinterval()
            sys.setswitchinterval(WORKER_SWITCH)
            try:
                placed = await loop.run_in_executor(self._pool, place, demands, infos, current, avoid)
            finally:
                sys.setswitchinterval(interval)
        else:
            placed = place(demands, infos, current, avoid)
        plan, changes = placed.plan, placed.changes
        gone = {d.name for d in demands if d.name not in self.templates}
        if gone:
            changes = {slot: node for slot, node in changes.items() if slot[0] not in gone}
        if changes:
            await self._save_placement(changes)
        self.placement = plan.placement
        self._by_node = placed.by_node
        self.plan = plan
        if changes:
            c = plan.counts()
            log.info(
                "placement: %d placed (%d kept, %d added, %d moved), %d stopped, %d evicted, %d pending",
                c["placed"], c["kept"], c["added"], c["moved"], c["stopped"], c["evicted"], c["pending"],
            )
        self._announce_failures(plan)
        self._advance_rollouts()
        await self._send_assignments(now)
        return plan

    async def _save_placement(self, changes: dict[Slot, str | None]) -> None:
        """Store placement changes in slices (each a transaction), yielding between them.

        Placement is derived state: after a crash between slices the controller recomputes it
        from the desired state and what agents report, so slices need not be one transaction.
        """
        items = iter(list(changes.items()))
        while chunk := {
            slot: node for slot, node in itertools.islice(items, STORE_SLICE) if slot[0] in self.templates
        }:
            self.store.save_placement(chunk)
            await asyncio.sleep(0)

    def _demands(self) -> list[Demand]:
        """One Demand per template, made again only for templates that changed since the last
        reconcile (a Demand checks itself: 100,000 of them each pass would stall the loop)."""
        demands = []
        cache = self._demand_cache
        for name, stored in self.templates.items():
            known = cache.get(name)
            if known is not None and known[0] is stored:
                demands.append(known[1])
                continue
            template = stored.template
            placement = template.placement
            demand = Demand(
                name=name,
                count=0 if stored.paused else self.wanted(name),
                max_per_node=placement.max_per_node,
                nodes=placement.nodes,
                labels=dict(placement.labels),
            )
            cache[name] = (stored, demand)
            demands.append(demand)
        if len(cache) > len(self.templates):
            for name in [n for n in cache if n not in self.templates]:
                del cache[name]
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
            per_node = {
                node: len(templates[name]) for node, templates in self._by_node.items() if name in templates
            }
            done = {node: self._node_done(name, node, rollout.target_hash) for node in rollout.rolling}
            rollout.advance(per_node, done)
            if rollout.finished:
                del self.rollouts[name]
                log.info("%s: rolling update finished", name)

    def _node_done(self, name: str, node_name: str, target_hash: str) -> bool:
        node = self.nodes.nodes.get(node_name)
        if node is None:
            return False
        wanted = {topics.instance_id(name, o) for o in self._by_node.get(node_name, {}).get(name, ())}
        rows = {i["id"]: i for i in node.instances.values() if i["template"] == name}
        return all(
            (row := rows.get(ident)) is not None and row["spec"] == target_hash and row["state"] == "running"
            for ident in wanted
        )

    async def _send_assignments(self, now: float) -> None:
        by_node = self._by_node
        specs = _SpecCache(self)
        changed: list[tuple[Node, dict[str, Any], str]] = []
        for index, node in enumerate(list(self.nodes.nodes.values())):
            if node.state is NodeState.DOWN or node.peer is None:
                continue
            ordinals = by_node.get(node.name, {})
            body = {
                "templates": {name: specs.get(name, node.name, len(ords)) for name, ords in ordinals.items()},
                "ordinals": ordinals,
            }
            digest = specs.digest(node.name, ordinals)
            previous = self.sent.get(node.name)
            if previous is None or previous.digest != digest:
                changed.append((node, body, digest))
            if index % SEND_SLICE == SEND_SLICE - 1:
                await asyncio.sleep(0)
        if not changed:
            return
        generations = self.store.next_generations(
            [node.name for node, _, _ in changed],
            {node.name: node.generation_acked for node, _, _ in changed},
        )
        for index, (node, body, digest) in enumerate(changed):
            generation = generations[node.name]
            body = {"generation": generation, **body}
            bodies = split_assignment(body, PART_BYTES)
            before = self.sent.get(node.name)
            if before is not None:
                before.before = None
            self.sent[node.name] = Sent(generation, digest, bodies, body["ordinals"], now, specs={
                name: _base_spec_dict(spec) for name, spec in body["templates"].items()
            }, before=before)
            for part in bodies:
                self._send_assign(node, part)
            if index % SEND_SLICE == SEND_SLICE - 1:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop reconciling (the controller is stopping); the desired state is in the store."""
        await cancel_and_wait(self._running)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------- views

    def pending(self) -> dict[str, dict[str, Any]]:
        if self.plan is None:
            return {}
        return {name: {"count": p.count, "reason": p.reason} for name, p in self.plan.pending.items()}

    def template_view(self, name: str) -> dict[str, Any]:
        self._stored(name)
        return self.template_views([name])[0]

    def template_views(self, names: list[str]) -> list[dict[str, Any]]:
        """Views of ``names`` (each must exist), counted in one pass over the placement."""
        wanted = set(names)
        placed: dict[str, int] = dict.fromkeys(wanted, 0)
        running: dict[str, int] = dict.fromkeys(wanted, 0)
        nodes = self.nodes.nodes
        for node_name, templates in self._by_node.items():
            node = nodes.get(node_name)
            for t, ordinals in templates.items():
                if t not in wanted:
                    continue
                placed[t] += len(ordinals)
                if node is None:
                    continue
                for o in ordinals:
                    row = node.instances.get(topics.instance_id(t, o))
                    if row is not None and row["state"] == "running":
                        running[t] += 1
        pending = self.pending()
        views = []
        for name in names:
            stored = self.templates[name]
            views.append({
                "name": name,
                "version": stored.version,
                "paused": stored.paused,
                "numprocesses": stored.template.numprocesses,
                "limited": self.limited[name].view() if name in self.limited else None,
                "placed": placed[name],
                "running": running[name],
                "pending": pending.get(name),
                "rolling": name in self.rollouts,
                "spec": stored.template.to_dict(),
                "created_at": stored.created_at,
                "updated_at": stored.updated_at,
            })
        return views


def _results(changes: list[Change]) -> list[dict[str, Any]]:
    return [{"name": c.name, "change": c.kind, "version": c.version} for c in changes]


@dataclass(frozen=True)
class Placed:
    """A plan, what it changes against the current placement, and its slots per node."""

    plan: Plan
    changes: dict[Slot, str | None]
    by_node: dict[str, dict[str, list[int]]]


def place(
    demands: list[Demand],
    nodes: list[NodeInfo],
    current: dict[Slot, str],
    avoid: dict[Slot, frozenset[str]],
) -> Placed:
    """``schedule`` plus the bookkeeping around it, all pure, so all of it can run in the
    worker thread: only storing and sending remain for the loop."""
    plan = schedule(demands, nodes, current, avoid)
    changes: dict[Slot, str | None] = {}
    for slot, node in plan.placement.items():
        if current.get(slot) != node:
            changes[slot] = node
    for slot in current:
        if slot not in plan.placement:
            changes[slot] = None
    return Placed(plan, changes, group_by_node(plan.placement))


def group_by_node(placement: dict[Slot, str]) -> dict[str, dict[str, list[int]]]:
    """{node: {template: sorted ordinals}}, templates in name order."""
    grouped: dict[str, dict[str, list[int]]] = {}
    for (name, ordinal), node in placement.items():
        grouped.setdefault(node, {}).setdefault(name, []).append(ordinal)
    return {
        node: {name: sorted(ords) for name, ords in sorted(templates.items())}
        for node, templates in grouped.items()
    }


class _SpecCache:
    """Each template's spec dict and digest, built once per pass rather than once per node."""

    def __init__(self, cluster: "Cluster") -> None:
        self._cluster = cluster
        self._specs: dict[tuple[str, int], dict[str, Any]] = {}
        self._digests: dict[tuple[str, str], str] = {}

    def get(self, name: str, node: str, count: int) -> dict[str, Any]:
        rollout = self._cluster.rollouts.get(name)
        if rollout is not None:
            spec = {**rollout.spec_for(node), "numprocesses": count}
            self._digests[(name, node)] = _digest(spec)
            return spec
        key = (name, count)
        spec = self._specs.get(key)
        if spec is None:
            template = self._cluster.templates[name].template
            spec = self._specs[key] = {
                **with_allowance(_base_spec(template), template.update.max_unavailable),
                "numprocesses": count,
            }
            self._digests[(name, f"#{count}")] = _digest(spec)
        return spec

    def digest(self, node: str, ordinals: dict[str, list[int]]) -> str:
        parts = []
        for name, ords in ordinals.items():
            spec_digest = self._digests.get((name, node)) or self._digests[(name, f"#{len(ords)}")]
            parts.append(f"{name}={spec_digest}:{','.join(map(str, ords))}")
        return hashlib.sha256(";".join(parts).encode()).hexdigest()


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
            shown = repr(how) if len(text) <= 40 else f"of {len(text)} characters"
            raise InvalidRequest(f"bad count {shown}: use N, +N or -N")
        if len(digits) > len(str(MAX_COUNT)):
            shown = repr(how) if len(text) <= 40 else f"of {len(digits)} digits"
            raise InvalidRequest(f"bad count {shown}: at most {MAX_COUNT:,} instances")
        value = int(digits)
        count = current + value if text[0] == "+" else current - value if text[0] == "-" else value
    if count < 0:
        raise InvalidRequest(f"count would be {count}: it must stay >= 0")
    if count > MAX_COUNT:
        raise InvalidRequest(f"count would be {count:,}: at most {MAX_COUNT:,} instances")
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

