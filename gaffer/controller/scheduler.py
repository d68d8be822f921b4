"""Cluster placement as one pure function: (demands, nodes, current placement) -> Plan.

The controller calls ``schedule`` each time something changes (a template applied, scaled or
deleted, a node's state, cordon or drain, an instance failed on a node) and sends each node the
slots the plan gives it. Keeping the decision pure (no I/O, no clock, no randomness) makes it
testable with scenario tables and properties, and makes it safe to call again at any time: the
same input always gives the same plan, and a plan fed back as ``current`` changes nothing.

Vocabulary::

    slot      (template, ordinal), the unit placed; ordinals 1..count are wanted
    open      a node that may receive new slots: up, not cordoned, not draining
    holding   a node that may keep the slots it runs: up, suspect or down (within grace),
              not draining; a cordoned node holds but is not open. A draining node keeps
              the slots told to ``stay`` (their template has no instance to spare yet:
              ``drainpace``) and those that find no other node (they leave once one is free)
    eligible  an open node matching a template's ``nodes`` list and ``labels`` selector

Flow, in two passes so that nothing moves that need not::

    current ──► stopped   (template gone, or ordinal above count: scale-down)
            ──► kept      (node holds it, or it is told to stay on its draining node; still
                           matches, not avoided, within max_per_node, lowest ordinals first)
            ──► to place  (everything else wanted, in template-name then ordinal order)
                  └──► on the eligible node with the fewest slots of the template, then the
                       fewest slots overall, then the smallest name; or pending, with a reason

Liveness decides ``down`` versus ``lost`` (a down node's grace period has passed): the
scheduler only reads the state it is given.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from itertools import islice
from operator import itemgetter
from dataclasses import dataclass, field, replace
from typing import Any, Collection, Iterable, Mapping, Sequence

from gaffer.common.model import Slot
from gaffer.controller.pendreason import FAILED_EVERYWHERE, why_pending
from gaffer.controller.steps import CHUNK, Steps, chunks, finish, sorted_slots

__all__ = ["FAILED_EVERYWHERE", "Demand", "NodeInfo", "Pending", "Plan", "schedule", "schedule_steps"]

NODE_STATES = ("up", "suspect", "down", "lost")
HOLDING_STATES = frozenset({"up", "suspect", "down"})
_UNLIMITED = 1 << 62
_NO_AVOID: Mapping[Slot, frozenset[str]] = {}


@dataclass(frozen=True)
class NodeInfo:
    """What placement needs to know about one node."""

    name: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    cordoned: bool = False
    draining: bool = False

    def __post_init__(self) -> None:
        _check_name("node", self.name)
        where = f"node {self.name!r}"
        if self.state not in NODE_STATES:
            choices = ", ".join(NODE_STATES)
            raise ValueError(f"{where}: state must be one of {choices}, got {self.state!r}")
        object.__setattr__(self, "state", getattr(self.state, "value", self.state))
        _check_labels(where, self.labels)
        for flag in ("cordoned", "draining"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{where}: {flag} must be a boolean")

    @property
    def holds(self) -> bool:
        """Whether slots already here may stay here."""
        return self.state in HOLDING_STATES and not self.draining

    @property
    def open(self) -> bool:
        """Whether new or moved slots may come here."""
        return self.state == "up" and not self.cordoned and not self.draining


@dataclass(frozen=True)
class Demand:
    """One template's cluster-wide wish: ordinals 1..count, under its placement constraints."""

    name: str
    count: int
    max_per_node: int | None = None
    nodes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name("demand", self.name)
        where = f"demand {self.name!r}"
        if not _is_int(self.count) or self.count < 0:
            raise ValueError(f"{where}: count must be an integer >= 0, got {self.count!r}")
        if self.max_per_node is not None and (
            not _is_int(self.max_per_node) or self.max_per_node < 1
        ):
            raise ValueError(
                f"{where}: max_per_node must be an integer >= 1 or None, "
                f"got {self.max_per_node!r}"
            )
        if isinstance(self.nodes, str) or not all(isinstance(n, str) for n in self.nodes):
            raise ValueError(f"{where}: nodes must be a sequence of node names")
        object.__setattr__(self, "nodes", tuple(self.nodes))
        _check_labels(where, self.labels)
        object.__setattr__(self, "_allowed", frozenset(self.nodes))

    def fits(self, node: NodeInfo) -> bool:
        """Whether the node passes this template's ``nodes`` list and ``labels`` selector."""
        if self._allowed and node.name not in self._allowed:
            return False
        labels = node.labels
        return all(labels.get(key) == value for key, value in self.labels.items())

    def constraint_key(self) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        return self._allowed, frozenset(self.labels.items())

    def describe_constraints(self) -> str:
        parts = []
        if self.labels:
            parts.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        if self.nodes:
            parts.append("nodes " + ",".join(sorted(self._allowed)))
        return "; ".join(parts) or "no node is up, uncordoned and not draining"


@dataclass(frozen=True)
class Pending:
    """Wanted slots of one template that could not be placed, and why."""

    ordinals: tuple[int, ...]
    reason: str

    @property
    def count(self) -> int:
        return len(self.ordinals)


@dataclass(frozen=True)
class Plan:
    """The placement of every wanted slot that fits, and how it differs from ``current``.

    Every slot of ``current`` is exactly one of: kept (same node), ``moved`` (placed on
    another node), ``stopped`` (no longer wanted) or ``evicted`` (still wanted, but it could
    not stay and has nowhere to go: it is pending). ``added`` are placed slots that were not in
    ``current``. Slot tuples are sorted by template then ordinal.
    """

    placement: Mapping[Slot, str]
    pending: Mapping[str, Pending]
    moved: tuple[Slot, ...]
    stopped: tuple[Slot, ...]
    added: tuple[Slot, ...] = ()
    evicted: tuple[Slot, ...] = ()
    stayed: tuple[Slot, ...] = ()
    """Kept slots that stay on a draining node because they were told to (``stay``)."""

    def by_node(self) -> dict[str, dict[str, list[int]]]:
        """{node: {template: [ordinals]}}, everything sorted: what each agent is sent."""
        grouped: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for (template, ordinal), node in self.placement.items():
            grouped[node][template].append(ordinal)
        return {
            node: {name: sorted(grouped[node][name]) for name in sorted(grouped[node])}
            for node in sorted(grouped)
        }

    def counts(self) -> dict[str, int]:
        placed = len(self.placement)
        return {
            "placed": placed,
            "kept": placed - len(self.moved) - len(self.added),
            "added": len(self.added),
            "moved": len(self.moved),
            "stopped": len(self.stopped),
            "evicted": len(self.evicted),
            "stayed": len(self.stayed),
            "pending": sum(p.count for p in self.pending.values()),
        }

    def log_fields(self) -> dict[str, Any]:
        """Flat, JSON-ready fields for one structured log line per scheduling pass."""
        fields_ = dict(self.counts())
        fields_["nodes_used"] = len(set(self.placement.values()))
        fields_["pending_templates"] = {name: p.count for name, p in sorted(self.pending.items())}
        return fields_


def schedule(
    demands: Iterable[Demand],
    nodes: Iterable[NodeInfo],
    current: Mapping[Slot, str],
    avoid: Mapping[Slot, frozenset[str]] = _NO_AVOID,
    stay: Collection[Slot] = frozenset(),
) -> Plan:
    """Place every wanted slot, moving as little as possible.

    ``current`` maps each slot that runs somewhere to its node (a node absent from ``nodes`` is
    treated as lost). ``avoid`` lists, per slot, nodes it must not run on (it failed there).
    ``stay`` lists slots that keep their draining node for now (its template cannot spare them
    yet). Raises ValueError naming the offending demand or node on bad input.
    """
    return finish(schedule_steps(demands, nodes, current, avoid, stay))


def schedule_steps(
    demands: Iterable[Demand],
    nodes: Iterable[NodeInfo],
    current: Mapping[Slot, str],
    avoid: Mapping[Slot, frozenset[str]] = _NO_AVOID,
    stay: Collection[Slot] = frozenset(),
) -> Steps[Plan]:
    """``schedule`` in steps (see ``steps``): it pauses after every few thousand slots, so a
    controller can place 100,000 of them without stalling its loop. ``current`` and ``avoid``
    must not change until it returns."""
    wanted = _by_name(demands, "demand")
    cluster = _by_name(nodes, "node")
    board = _Board(cluster)
    held, stopped = yield from _sort_current(wanted, current)
    work = 0
    for name in sorted(held):
        demand = wanted[name]
        verdicts: dict[str, int] = {}
        for part in chunks(sorted(held[name], key=_FIRST)):
            _keep(board, demand, part, avoid, verdicts, stay)
            work += len(part)
            if work >= CHUNK:
                yield
                work = 0
    pending: dict[str, Pending] = {}
    for name in sorted(wanted):
        demand = wanted[name]
        missing = yield from _missing(board.placement, demand)
        work += demand.count
        if missing:
            unplaced = yield from _place(board, demand, missing, avoid)
            if unplaced is not None:
                unplaced = _stay_while_draining(board, demand, unplaced, current, avoid)
            if unplaced is not None:
                pending[name] = unplaced
            work += len(missing)
        if work >= CHUNK:
            yield
            work = 0
    plan = yield from _plan(board.placement, pending, current, stopped)
    return replace(plan, stayed=tuple(sorted(board.stayed))) if board.stayed else plan


def _stay_while_draining(
    board: "_Board",
    demand: "Demand",
    unplaced: "Pending",
    current: Mapping[Slot, str],
    avoid: Mapping[Slot, frozenset[str]],
) -> "Pending | None":
    """A slot on a draining node that found nowhere else to go stays where it runs.

    Draining moves slots away without losing any: a drain only completes once each slot has
    somewhere else to run (as Nomad keeps an allocation whose replacement cannot be placed).
    """
    left = []
    cap = demand.max_per_node or _UNLIMITED
    tally = board.tallies.setdefault(demand.name, {})
    for ordinal in unplaced.ordinals:
        slot = (demand.name, ordinal)
        node = board.cluster.get(current.get(slot, ""))
        stays = (
            node is not None and node.draining and node.state in HOLDING_STATES
            and demand.fits(node) and node.name not in avoid.get(slot, ())
            and tally.get(node.name, 0) < cap
        )
        if stays:
            board.put(slot, node.name)
        else:
            left.append(ordinal)
    if not left:
        return None
    return Pending(tuple(left), unplaced.reason)


class _Group:
    """The open nodes matching one (nodes, labels) constraint, least loaded first.

    Loads only grow during a pass, so an entry can only understate its node's load. An entry
    found stale at the top goes back with the true load, so each member keeps exactly one
    entry and every node handed out is the true minimum of (load, name). Shared by every
    template with the same constraint, this avoids a scan of all nodes per template.
    """

    def __init__(self, names: Sequence[str], load: Mapping[str, int]) -> None:
        self.members = frozenset(names)
        self.heap = [(load.get(name, 0), name) for name in names]
        heapq.heapify(self.heap)

    def pop(self, load: Mapping[str, int]) -> str | None:
        heap = self.heap
        while heap:
            seen, name = heap[0]
            now = load.get(name, 0)
            if seen == now:
                heapq.heappop(heap)
                return name
            heapq.heapreplace(heap, (now, name))
        return None

    def push(self, name: str, load: Mapping[str, int]) -> None:
        heapq.heappush(self.heap, (load.get(name, 0), name))


class _Board:
    """Running tallies while one ``schedule`` call fills the cluster."""

    def __init__(self, cluster: Mapping[str, NodeInfo]) -> None:
        self.cluster = cluster
        self.open = [cluster[name] for name in sorted(cluster) if cluster[name].open]
        self.placement: dict[Slot, str] = {}
        self.load: dict[str, int] = {}
        self.tallies: dict[str, dict[str, int]] = {}
        self.groups: dict[object, _Group] = {}
        self.stayed: list[Slot] = []

    def put(self, slot: Slot, node: str) -> None:
        self.placement[slot] = node
        self.load[node] = self.load.get(node, 0) + 1
        tally = self.tallies.setdefault(slot[0], {})
        tally[node] = tally.get(node, 0) + 1

    def group_for(self, demand: Demand) -> _Group:
        key = demand.constraint_key()
        group = self.groups.get(key)
        if group is None:
            names = [node.name for node in self.open if demand.fits(node)]
            group = self.groups[key] = _Group(names, self.load)
        return group


def _sort_current(
    wanted: Mapping[str, Demand], current: Mapping[Slot, str]
) -> Steps[tuple[dict[str, list[tuple[int, str]]], list[Slot]]]:
    """Split current slots into the wanted ones (per template) and those to stop."""
    held: dict[str, list[tuple[int, str]]] = defaultdict(list)
    stopped: list[Slot] = []
    items = iter(current.items())
    for _ in range(0, len(current), CHUNK):
        for slot, node in islice(items, CHUNK):
            name, ordinal = slot
            demand = wanted.get(name)
            if demand is not None and 1 <= ordinal <= demand.count:
                held[name].append((ordinal, node))
            else:
                stopped.append(slot)
        yield
    return held, (yield from sorted_slots(stopped))


def _missing(placement: Mapping[Slot, str], demand: Demand) -> Steps[list[int]]:
    """The wanted ordinals of ``demand`` not placed yet, ascending."""
    name, count = demand.name, demand.count
    if count <= CHUNK:
        return [o for o in range(1, count + 1) if (name, o) not in placement]
    missing: list[int] = []
    for start in range(1, count + 1, CHUNK):
        missing += [o for o in range(start, min(start + CHUNK, count + 1)) if (name, o) not in placement]
        yield
    return missing


def _keep(
    board: _Board,
    demand: Demand,
    held: Sequence[tuple[int, str]],
    avoid: Mapping[Slot, frozenset[str]],
    verdicts: dict[str, int],
    stay: Collection[Slot],
) -> None:
    """Leave each slot where it runs if it may stay; lowest ordinals win a shrunk max_per_node
    (``held`` comes sorted, in consecutive parts; ``verdicts`` caches, per node, whether the
    template may stay there: _HOLDS, only the slots in ``stay`` (_STAYS, draining), or not)."""
    name = demand.name
    cap = demand.max_per_node or _UNLIMITED
    tally = board.tallies.setdefault(name, {})
    for ordinal, node_name in held:
        fine = verdicts.get(node_name)
        if fine is None:
            fine = verdicts[node_name] = _verdict(board.cluster.get(node_name), demand, stay)
        if not fine or tally.get(node_name, 0) >= cap:
            continue
        slot = (name, ordinal)
        if node_name in avoid.get(slot, ()) or (fine == _STAYS and slot not in stay):
            continue
        board.put(slot, node_name)
        if fine == _STAYS:
            board.stayed.append(slot)


_HOLDS, _STAYS = 1, 2


def _verdict(node: NodeInfo | None, demand: Demand, stay: Collection[Slot]) -> int:
    if node is None or not demand.fits(node):
        return 0
    if node.holds:
        return _HOLDS
    return _STAYS if stay and node.draining and node.state in HOLDING_STATES else 0


def _place(
    board: _Board,
    demand: Demand,
    missing: Sequence[int],
    avoid: Mapping[Slot, frozenset[str]],
) -> Steps[Pending | None]:
    """Put each missing ordinal on the best eligible node; return what did not fit.

    Nodes this template does not run on yet (tally 0) always beat those it does, so they come
    from the shared group heap; nodes it already runs on wait in a per-template heap keyed by
    (tally, load, name).
    """
    group = board.group_for(demand)
    if not group.members:
        return Pending(tuple(missing), f"no eligible node ({demand.describe_constraints()})")
    name, load = demand.name, board.load
    cap = demand.max_per_node or _UNLIMITED
    tally = board.tallies.setdefault(name, {})
    touched = set(tally)
    crowded = [(t, load[n], n) for n, t in tally.items() if t < cap and n in group.members]
    heapq.heapify(crowded)
    fresh_left = len(group.members - touched)
    taken: list[str] = []
    unplaced: list[int] = []
    done = 0
    for part in chunks(missing):
        for ordinal in part:
            slot = (name, ordinal)
            avoided = avoid.get(slot, ())
            node = _take_fresh(group, load, touched, avoided, taken) if fresh_left else None
            if node is not None:
                fresh_left -= 1
                touched.add(node)
            else:
                node = _pop_allowed(crowded, avoided)
            if node is not None:
                board.put(slot, node)
                if tally[node] < cap:
                    heapq.heappush(crowded, (tally[node], load[node], node))
            elif crowded or fresh_left:
                unplaced.append(ordinal)
            else:
                break
            done += 1
        else:
            if len(part) == CHUNK:
                yield
            continue
        unplaced.extend(missing[done:])
        break
    for node in taken:
        group.push(node, load)
    if not unplaced:
        return None
    return Pending(tuple(unplaced), why_pending(demand, unplaced, group.members, tally, avoid))


def _take_fresh(
    group: _Group,
    load: Mapping[str, int],
    touched: set[str],
    avoided: Collection[str],
    taken: list[str],
) -> str | None:
    """The least loaded group member this template is not on yet, and not avoided by the slot.

    Members the template is on are held out of the group (in ``taken``) until the template is
    done; avoided ones go straight back.
    """
    skipped = []
    chosen = None
    while (node := group.pop(load)) is not None:
        if node in touched:
            taken.append(node)
        elif node in avoided:
            skipped.append(node)
        else:
            taken.append(node)
            chosen = node
            break
    for node in skipped:
        group.push(node, load)
    return chosen


def _pop_allowed(heap: list[tuple[int, int, str]], avoided: Collection[str]) -> str | None:
    """Pop the best node not in ``avoided``; skipped entries go back on the heap."""
    if not avoided:
        return heapq.heappop(heap)[2] if heap else None
    skipped = []
    chosen = None
    while heap:
        entry = heapq.heappop(heap)
        if entry[2] in avoided:
            skipped.append(entry)
        else:
            chosen = entry[2]
            break
    for entry in skipped:
        heapq.heappush(heap, entry)
    return chosen


def _plan(
    placement: dict[Slot, str],
    pending: dict[str, Pending],
    current: Mapping[Slot, str],
    stopped: list[Slot],
) -> Steps[Plan]:
    moved, added = [], []
    items = iter(placement.items())
    for _ in range(0, len(placement), CHUNK):
        for slot, node in islice(items, CHUNK):
            was = current.get(slot)
            if was is None:
                added.append(slot)
            elif was != node:
                moved.append(slot)
        yield
    gone = set(stopped)
    evicted = []
    items = iter(current)
    for _ in range(0, len(current), CHUNK):
        evicted += [slot for slot in islice(items, CHUNK) if slot not in placement and slot not in gone]
        yield
    return Plan(
        placement=placement,
        pending=pending,
        moved=tuple((yield from sorted_slots(moved))),
        stopped=tuple(stopped),
        added=tuple((yield from sorted_slots(added))),
        evicted=tuple((yield from sorted_slots(evicted))),
    )


_FIRST = itemgetter(0)


def _by_name(items: Iterable[Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in items:
        if item.name in found:
            raise ValueError(f"{kind} {item.name!r}: listed twice")
        found[item.name] = item
    return found


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")


def _check_labels(where: str, labels: object) -> None:
    if not isinstance(labels, Mapping):
        raise ValueError(f"{where}: labels must be a mapping of strings to strings")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{where}: labels.{key}: must map a string to a string, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
