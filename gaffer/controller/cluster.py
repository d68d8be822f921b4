"""Desired state, and carrying out each reconcile: store what it says, tell each node.

``Cluster`` holds the desired state (from the store), the placement of every ordinal, what
each node was last sent, and the rolling updates under way. Operations change the desired
state durably, then ``kick`` a reconcile. What a reconcile does is decided by one pure function
(``reconcile.reconcile``, which returns a ``Reconcile`` value); this class is its executor:

1. it gathers the inputs as frozen values (``inputs.py``: templates as ``Desired``, nodes as
   ``NodeView``; the placement, failures, rollouts, what was sent) and runs the function in
   steps on the loop, so placing 100,000 slots never stalls heartbeats and clients;
2. it stores the placement changes (in slices), adopts the plan and the rollouts, publishes
   the failures to announce, and has ``Sending`` send each changed node its whole assignment
   with a new stored generation (monotonic per node across controller restarts);
3. it resends what nodes have not acked (on the tick too, by the same pure ``resends``).

Count limits are kept by a ``counts.Tally``. Each pass's wall time goes to ``on_reconciled``
(the metrics' histogram).

Sending the same assignment twice changes nothing on the agent; a node that comes back gets
its current assignment first, and stops whatever is not in it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from gaffer.common import topics
from gaffer.common.errors import (
    NodeAlive,
    NodeNotFound,
    Problem,
    StorageDamaged,
    StorageError,
    TemplateError,
    TemplateNotFound,
)
from gaffer.common.model import InstanceRow, InstanceState, Slot
from gaffer.common.ports import range_problem
from gaffer.common.template import Template
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.counts import CountLimits, Limited, Tally, parse_scale
from gaffer.controller.hub import EventHub
from gaffer.controller.inputs import DesiredCache, node_views
from gaffer.controller.liveness import NodeState
from gaffer.controller.reconcile import (
    Failures,
    Nodes,
    Placement,
    Reconcile,
    reconcile_steps,
)
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.rollnotes import report_steps
from gaffer.controller.rollout import Rollout
from gaffer.controller.scheduler import Plan
from gaffer.controller.sending import SendAssign, Sending
from gaffer.controller.startgate import StartGate, graph_check
from gaffer.controller.steps import run_sliced
from gaffer.controller.observed import Loaded, Observed, adopt_nodes
from gaffer.controller.statestore import StateStore
from gaffer.controller.template_rows import Change, Puts, StoredTemplate
from gaffer.controller.views import apply_results, launch_of, template_views

log = logging.getLogger("gaffer.controller.cluster")

STORE_RETRY = 5.0
"""Seconds before a reconcile that the store refused (disk full, I/O error) is tried again."""
STORE_SLICE = 1_000
APPLY_SLICE = 2_000
"""Templates compared, or announced, between two turns of the loop in a large apply."""


class Cluster:
    def __init__(
        self,
        store: StateStore,
        loaded: Loaded,
        nodes: NodeTable,
        hub: EventHub,
        send_assign: SendAssign,
        node_grace: float,
        clock: Callable[[], float],
        limits: CountLimits = CountLimits(),
        on_reconciled: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.hub = hub
        self.sending = Sending(store, nodes, send_assign)
        self.sent = self.sending.sent
        """What each node was last sent (``Sending`` keeps it)."""
        self.node_grace = node_grace
        self._clock = clock
        self.templates: dict[str, StoredTemplate] = dict(loaded.templates)
        self.restarts: dict[str, int] = dict(loaded.restarts)
        self.gate = StartGate(self.templates)
        self.placement: Mapping[Slot, str] = loaded.placement
        """Never changed in place: each pass replaces it (a pass in steps reads the old one)."""
        self.failed: dict[Slot, frozenset[str]] = dict(loaded.failed)
        self._writing = asyncio.Lock()
        """One operation at a time, from its checks to its memory change (its write between)."""
        self.rollouts: dict[str, Rollout] = {}
        self.down_since: dict[str, float] = {}
        self.may_move = False
        self.plan: Plan | None = None
        self.lost: frozenset[str] = frozenset()
        self._announced: set[Slot] = set()
        self._fresh: set[str] = set()
        self._dirty = False
        self._replace = False
        self._retry_at: float | None = None
        self._by_node: Mapping[str, Mapping[str, Sequence[int]]] = {}
        self._keys: Mapping[str, str] = {}
        self._running: asyncio.Task | None = None
        self._on_reconciled = on_reconciled
        self.reconciles = 0
        self._desired = DesiredCache()
        self.tally = Tally(limits, self._counts())
        """Templates that want more than the limits allow: only ``placing`` of them is placed."""
        _log_limited(self.tally.recount(self._counts))
        self._observed = Observed(stored_nodes=adopt_nodes(nodes, loaded.nodes))

    # ----------------------------------------------------------------- desired state

    async def apply(self, templates: Iterable[Template]) -> list[dict[str, Any]]:
        """Create or update the templates, all or none: one store transaction (StorageError
        and nothing saved when the disk refuses). Memory and events follow the commit only."""
        templates = list(templates)
        async with self._writing:
            counts = self._check_counts(templates)
            changes = await self.store.put_templates(templates)
            self._announce(self._record(changes))
            self._counted(counts)
        self.kick()
        return apply_results(changes)

    async def apply_sliced(self, templates: list[Template]) -> list[dict[str, Any]]:
        """``apply`` for a large apply (100,000 templates): the same single transaction, but
        the work before it (comparing with what is stored) and after it (events) runs in
        slices, so the loop keeps answering agents and clients meanwhile."""
        async with self._writing:
            counts = self._check_counts(templates)
            puts = Puts()
            for start in range(0, len(templates), APPLY_SLICE):
                await self.store.prepare_puts(templates[start:start + APPLY_SLICE], puts)
                await asyncio.sleep(0)
            changes = await self.store.commit_puts(puts)
            changed = self._record(changes)
            self._counted(counts)
        for start in range(0, len(changed), APPLY_SLICE):
            self._announce(changed[start:start + APPLY_SLICE])
            await asyncio.sleep(0)
        self.kick()
        return apply_results(changes)

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
            self.gate.note(change.name, change.stored.template)
            changed.append((change, previous))
        return changed

    def _announce(self, changed: list[tuple[Change, Template | None]]) -> None:
        """Events for committed changes. A new launch spec lost its failures in the store
        (same transaction): memory follows; the reconcile starts its rolling update."""
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
                    self._forget_failures(name)
            if previous.numprocesses != template.numprocesses:
                self._event(name, "scaled", stored, previous=previous.numprocesses)

    async def delete(self, name: str) -> None:
        await self.delete_many([name])

    async def delete_many(self, names: list[str], applying: Sequence[Template] = ()) -> None:
        """Delete templates, all in one transaction (or none: TemplateNotFound, or TemplateError
        when a template left, or in ``applying`` that comes next, depends on one)."""
        async with self._writing:
            counts = {name: (self._stored(name).template.numprocesses, 0) for name in names}
            graph_check(self.templates, applying, names)
            await self.store.delete_templates(names)
            gone = set(names)
            for name in names:
                del self.templates[name]
                self.restarts.pop(name, None)
                self._observed.forget_template(name)
                self.hub.publish(topics.template(name, "deleted"), {"name": name})
            self.failed = {slot: nodes for slot, nodes in self.failed.items() if slot[0] not in gone}
            self._counted(counts)
        self.kick()

    async def scale(self, name: str, how: str | int) -> int:
        async with self._writing:
            stored = self._stored(name)
            current = stored.template.numprocesses
            count = parse_scale(how, current)
            port = stored.template.port
            problem = range_problem(port, count) if port is not None else None
            if problem is not None:
                raise TemplateError([Problem(name, "port", problem)])
            if count == current:
                return count
            self.tally.check({name: (current, count)})
            change = await self.store.set_count(name, count)
            assert change.stored is not None
            self.templates[name] = change.stored
            self._event(name, "scaled", self.templates[name], previous=current)
            self._counted({name: (current, count)})
        self.kick()
        return count

    def wanted(self, name: str) -> int:
        """How many instances of ``name`` are placed (its count, or less when limited)."""
        stored = self.templates.get(name)
        return self.tally.placing(name, stored.template.numprocesses) if stored is not None else 0

    def _check_counts(self, templates: list[Template]) -> dict[str, tuple[int, int]]:
        """Refuse a whole apply, before anything is stored, if it would grow a count past a
        limit (LimitExceeded) or break a ``depends_on`` (TemplateError); the counts it changes,
        (before, after) per template."""
        graph_check(self.templates, templates)
        changes: dict[str, tuple[int, int]] = {}
        for template in templates:
            stored = self.templates.get(template.name)
            before = stored.template.numprocesses if stored is not None else 0
            changes[template.name] = (before, template.numprocesses)
        self.tally.check(changes)
        return changes

    def _counted(self, changes: dict[str, tuple[int, int]]) -> None:
        _log_limited(self.tally.counted(changes, self._counts))

    def _counts(self) -> dict[str, int]:
        return {name: stored.template.numprocesses for name, stored in self.templates.items()}

    def set_limits(self, node_grace: float, limits: CountLimits) -> None:
        """New limits and grace (a config reload): counts are judged again at once; the next
        reconcile places what the limits now allow."""
        self.node_grace = node_grace
        if limits != self.tally.limits:
            self.tally = Tally(limits, self._counts())
            _log_limited(self.tally.recount(self._counts))
        self.kick()

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause, or resume (its failures forgotten too): one transaction, then memory."""
        async with self._writing:
            self._stored(name)
            changed, stored = await self.store.pause(name, paused)
            if not paused:
                self._forget_failures(name)
            self.templates[name] = stored
            if changed:
                self._event(name, "stopped" if paused else "started", stored)
        self.kick()

    async def restart(self, name: str) -> int:
        """Rolling restart: a new restart generation (stored beside the spec, never in it),
        which every node rolls to; its failures are forgotten. A paused template resumes, in
        the same transaction. Returns the generation."""
        async with self._writing:
            stored = self._stored(name)
            generation, after = await self.store.restart_template(name)
            self.restarts[name] = generation
            self._forget_failures(name)
            self.templates[name] = after
            self._event(name, "updated", stored, restart=generation)
            if stored.paused:
                self._event(name, "started", after)
        self.kick()
        return generation

    def _forget_failures(self, name: str) -> None:
        self.failed = {slot: n for slot, n in self.failed.items() if slot[0] != name}
        self._announced = {slot for slot in self._announced if slot[0] != name}
        self._observed.forget_template(name)

    async def cordon(self, name: str, cordoned: bool) -> None:
        """Cordon: keep what the node runs, place nothing new. Uncordon also ends a drain."""
        async with self._writing:
            node = self._known_node(name)
            await self.store.set_node_flags(name, cordoned=cordoned, draining=None if cordoned else False)
            node.cordoned = cordoned
            if not cordoned:
                node.draining = False
        self.kick()

    async def drain(self, name: str, draining: bool = True) -> None:
        async with self._writing:
            node = self._known_node(name)
            await self.store.set_node_flags(name, cordoned=True, draining=draining)
            node.cordoned = True
            node.draining = draining
        self.hub.publish(topics.node(name, "drain"), {"node": name, "draining": draining})
        self.kick()

    def remember_node(self, node: Node) -> None:
        """Store a node's labels and agent once they change (not on every hello: a thousand
        agents reconnecting would cost a thousand writes); the next pass stores it."""
        if self._observed.note_node(node.name, (dict(node.labels), node.agent_id)):
            self.kick(placement=False)

    async def forget_node(self, name: str) -> int:
        """Forget a node that is gone for good: its record goes (its generation stays, so an
        agent that comes back under that name is still fenced), and its slots are placed
        elsewhere at once. Only a ``down`` node: one that is up or suspect may still run
        things. Returns how many slots it held."""
        async with self._writing:
            node = self._known_node(name)
            if node.state is not NodeState.DOWN:
                raise NodeAlive(
                    f"node {name!r} is {node.state.value}: only a node that is down can be forgotten "
                    f"(drain it with `gafferctl drain {name}` and stop its agent first)"
                )
            held = self.placement_on(name)
            await self.store.forget_node(name)
            self.nodes.disconnect(node)
            del self.nodes.nodes[name]
            self._observed.forget_node(name)
        self.down_since.pop(name, None)
        self.sending.forget(name)
        self._fresh.discard(name)
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

    # ----------------------------------------------------------------- observations

    def node_changed(self, node: Node) -> None:
        """A node's liveness changed (or it said hello): re-judge; one that is up gets its
        whole assignment anew."""
        now = self._clock()
        if node.state is NodeState.DOWN:
            self.down_since.setdefault(node.name, now)
        else:
            self.down_since.pop(node.name, None)
        if node.state is NodeState.UP:
            self._fresh.add(node.name)
        self.kick()

    def instances_reported(self, node: Node, rows: Iterable[InstanceRow]) -> None:
        """Failed ordinals are tried elsewhere; rolling nodes may have finished."""
        changed = False
        for row in rows:
            if row["state"] != InstanceState.FAILED or type(row["ordinal"]) is not int:
                continue
            slot = (row["template"], row["ordinal"])
            if self.placement.get(slot) != node.name:
                continue
            if self._failed_on(slot, node.name):
                log.info("%s.%d failed on %s; trying another node", slot[0], slot[1], node.name)
                changed = True
        if self.gate.held and self.gate.judge(self.templates, self.wanted, self._by_node, self.nodes.nodes):
            changed = True  # what a template waits for is there: place it
        if changed or (self.plan is not None and self.plan.stayed):
            self.kick()  # (a drain waits for readiness to move the slots that stayed)
        elif self.rollouts:
            self.kick(placement=False)

    def acked(self, node: Node, generation: int, errors: list[dict[str, Any]]) -> None:
        """An agent applied assignment ``generation``; ``errors`` ({template, code, message})
        name the templates it could not run: their ordinals there are tried elsewhere."""
        node.generation_acked = max(node.generation_acked, generation)
        if not errors:
            return
        log.warning(
            "node %s could not apply part of assignment %d: %s", node.name, generation,
            "; ".join(f"{e['template']}: {e['message']} ({e['code']})" for e in errors),
        )
        bad = {e["template"] for e in errors}
        for name in sorted(bad):
            for ordinal in self._by_node.get(node.name, {}).get(name, ()):
                self._failed_on((name, ordinal), node.name)
        self.kick()

    def _failed_on(self, slot: Slot, node: str) -> bool:
        """Note that ``slot`` failed on ``node`` for the next pass to store; False if known."""
        if node in self.failed.get(slot, ()) or self._observed.has_failure(slot, node):
            return False
        self._observed.add_failure(slot, node)
        return True

    async def _store_observed(self) -> None:
        """Store what observations asked for (``observed``), then remember it."""
        for slot, node in await self._observed.write(self.store, self.templates, self.nodes.nodes):
            self.failed[slot] = self.failed.get(slot, frozenset()) | {node}

    def set_guard(self, may_move: bool) -> None:
        if may_move != self.may_move:
            self.may_move = may_move
            self.kick()

    def check_timers(self) -> None:
        """Called on every tick: a store retry, nodes lost after their grace, and resends."""
        now = self._clock()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.kick()
        if self.may_move:
            due = {name for name, since in self.down_since.items() if now - since >= self.node_grace}
            if any(self.placement_on(name) for name in due - self.lost):
                self.kick()
        self.sending.resend_due(now)
        if any(rollout.due(now) for rollout in self.rollouts.values()):
            self.kick(placement=False)

    def by_node(self, node: str) -> Mapping[str, Sequence[int]]:
        """{template: ordinals} placed on ``node`` now."""
        return self._by_node.get(node, {})

    def placement_on(self, node: str) -> int:
        return sum(len(ordinals) for ordinals in self._by_node.get(node, {}).values())

    # ----------------------------------------------------------------- reconciling

    def kick(self, placement: bool = True) -> None:
        """Ask for a reconcile: coalesced, and never two at once (a kick during a run makes
        the run go round once more). ``placement=False`` keeps the last plan and only advances
        rolling updates and sends: a report cannot change where anything should run."""
        self._dirty = True
        self._replace = self._replace or placement
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._reconcile_while_dirty())

    async def _reconcile_while_dirty(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                started = time.perf_counter()
                try:
                    await self.reconcile()
                    self._on_reconciled(time.perf_counter() - started)
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

    async def reconcile(self) -> Reconcile:
        """One level-triggered pass: gather the inputs, let ``reconcile`` decide (in steps on
        the loop), then carry out what it decided."""
        await self._store_observed()
        now = self._clock()
        scheduling = self._replace or self.plan is None
        self._replace = False
        if scheduling:
            self.reconciles += 1
            self.gate.judge(self.templates, self.wanted, self._by_node, self.nodes.nodes)
        desired = await run_sliced(self._desired.steps(self.templates, self.restarts, self.gate.placing(self.wanted)))
        placement = Placement(
            current=self.placement, plan=self.plan, by_node=self._by_node, keys=self._keys,
            replace=scheduling,
        )
        failures = Failures(dict(self.failed), frozenset(self._announced))
        result = await run_sliced(reconcile_steps(
            desired, self._nodes(now), placement, dict(self.rollouts), failures, now,
        ))
        await self._carry_out(result, now)
        return result

    def _nodes(self, now: float) -> Nodes:
        """The nodes as the reconcile sees them."""
        return Nodes(
            views=node_views(self.nodes.nodes, self.down_since, now), sent=dict(self.sent),
            fresh=frozenset(self._fresh), may_move=self.may_move, grace=self.node_grace,
        )

    async def _carry_out(self, result: Reconcile, now: float) -> None:
        """Store and send what ``result`` says, in that order: placement is stored before any
        node hears of it."""
        if result.changes:
            await self._save_placement(result.changes)
        if result.scheduled:
            # adopted, not copied: these are never changed in place, only replaced by the
            # next pass, so a pass still running on the old ones is never disturbed
            self.placement = result.plan.placement
            self.plan = result.plan
            self._by_node = result.by_node
            self._keys = result.keys
        for name in sorted(set(result.lost) - self.lost):
            log.warning("node %s is lost (down for %gs): its %d slots are placed elsewhere",
                        name, self.node_grace, self.placement_on(name))
        self.lost = frozenset(result.lost)
        self.rollouts = dict(result.rollouts)
        report_steps(result.rollout_steps, self.templates, self.rollouts, self.hub.publish)
        for failure in result.announce:
            self._announced.add(failure.slot)
            self.hub.publish(topics.proc(failure.slot[0], "failed"), failure.payload())
        if result.acts:
            log.info("reconcile %s", " ".join(f"{k}={v}" for k, v in result.log_fields().items()))
        self._fresh.difference_update(await self.sending.send(result.sends, now))
        for name in result.resends:
            self.sending.resend(name, now)

    async def _save_placement(self, changes: Mapping[Slot, str | None]) -> None:
        """Store placement changes in slices (each a transaction), yielding between them.

        Placement is derived state: after a crash between slices the controller recomputes it
        from the desired state and what agents report, so slices need not be one transaction.
        """
        items = iter(list(changes.items()))
        while chunk := {
            slot: node for slot, node in itertools.islice(items, STORE_SLICE) if slot[0] in self.templates
        }:
            await self.store.save_placement(chunk)
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop reconciling (the controller is stopping); the desired state is in the store."""
        await cancel_and_wait(self._running)

    # ----------------------------------------------------------------- views

    def pending(self) -> dict[str, dict[str, Any]]:
        """Templates not all placed, with why: no node can take them, or their ``depends_on``."""
        return self.gate.pending(self.plan.pending if self.plan is not None else {}, self.templates, self.wanted)

    def template_view(self, name: str) -> dict[str, Any]:
        """``get``: one view, with its ``launch`` (``views.launch_of``)."""
        stored = self._stored(name)
        return {**self.template_views([name])[0], "launch": launch_of(stored, self.restarts.get(name, 0))}

    def template_views(self, names: list[str]) -> list[dict[str, Any]]:
        """Views of ``names`` (each must exist), counted in one pass over the placement."""
        return template_views(
            names, self.templates, self._by_node, self.nodes.nodes, self.pending(),
            self.tally.limited, self.rollouts,
        )


def _log_limited(fresh: Mapping[str, Limited]) -> None:
    """Say once per template (and change) that a stored count is over a limit."""
    for name, note in sorted(fresh.items()):
        log.error(
            "template %s wants %s instances, %s: placing only %s; scale it down "
            "(gafferctl scale %s=N) or raise the limit",
            name, f"{note.wanted:,}", note.reason, f"{note.placing:,}", name,
        )
