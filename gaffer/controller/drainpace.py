"""How fast a drain may take a template's instances out of service, and when a drain is done.

A drain moves every slot off a node. Moving one is break-before-make: the draining node stops
it and another node starts it, so it serves nowhere until the new instance is ready. For a
template with a readiness check (``health`` or ``notify``) that gap is what the operator set
``update.max_unavailable`` to bound, so a drain paces itself as a rolling update does, and as
Nomad's ``migrate`` and a Kubernetes PodDisruptionBudget pace theirs::

    not ready  = wanted ordinals (1..count) not ready on the node they are placed on
                 (no row yet, starting, running without a passing check, unhealthy, or on a
                 node that is neither up nor suspect: nobody can say it serves)
    spare      = max_unavailable - not ready
    leave now  = the first ``spare`` serving slots on draining nodes (lowest ordinals)
    stay       = the other serving slots on draining nodes, until a replacement is ready

A slot on a draining node that does not serve leaves at once: moving it costs nothing. Other
trouble counts too (an instance crash-looping elsewhere uses the allowance), as it does for a
PodDisruptionBudget: a drain never makes a degraded template worse. Templates without a check
are not paced (they are ready once running, and pacing them would make a drain of many
instances wait ``startsecs`` for each).

Why not make-before-break (start the replacement, then stop the old one)? Two processes would
then run as the same ``<template>.<ordinal>`` with the same ``GAFFER_INSTANCE``, which gaffer
promises never to do once settled, and which breaks work sharded by ordinal. To add capacity
before a drain, scale up first.

``drain_left`` is what ``gafferctl drain --wait`` waits on: a slot that was on the node counts
as moved once it neither runs there nor is placed there, and is ready where it is placed now
(or completed there, for a job; or is no longer wanted). Pure: no clock, no I/O; the controller passes what it knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Sequence

from gaffer.common.model import Slot, instance_id, parse_instance_id
from gaffer.controller.scheduler import NodeInfo

SERVING_STATES = frozenset({"up", "suspect"})
"""Node states whose rows say what runs (a down node's rows are its last word, stale)."""

Rows = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""{node: {instance id: row}}: what each node reports."""
ByNode = Mapping[str, Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class Pace:
    """One template a drain paces: ``count`` ordinals wanted, ``max_unavailable`` of them may
    be not ready at once (``update.max_unavailable``)."""

    count: int
    max_unavailable: int


def serving(slot: Slot, node: str | None, nodes: Mapping[str, NodeInfo], rows: Rows) -> bool:
    """Whether ``slot`` is ready on ``node`` (its row's ``ready`` flag, on a node heard from)."""
    row = _row(slot, node, nodes, rows)
    return row is not None and bool(row.get("ready", False))


def arrived(slot: Slot, node: str | None, nodes: Mapping[str, NodeInfo], rows: Rows) -> bool:
    """Whether ``slot`` is done moving to ``node``: ready there, or a job that completed there
    (exit status 0; it will never be ready)."""
    row = _row(slot, node, nodes, rows)
    if row is None:
        return False
    return bool(row.get("ready", False)) or (row.get("state") == "exited" and row.get("exit_code") == 0)


def _row(slot: Slot, node: str | None, nodes: Mapping[str, NodeInfo], rows: Rows) -> Mapping[str, Any] | None:
    info = nodes.get(node) if node is not None else None
    if info is None or info.state not in SERVING_STATES:
        return None
    return rows.get(info.name, {}).get(instance_id(*slot))


def drain_stays(
    paces: Mapping[str, Pace],
    nodes: Mapping[str, NodeInfo],
    by_node: ByNode,
    current: Mapping[Slot, str],
    rows: Rows,
) -> frozenset[Slot]:
    """The serving slots on draining nodes that must stay this pass: moving them now would
    leave more than ``max_unavailable`` of their template not ready (see the module doc)."""
    leaving: dict[str, list[int]] = {}
    for node in sorted(by_node):
        info = nodes.get(node)
        if info is None or not info.draining:
            continue
        for name, ordinals in by_node[node].items():
            pace = paces.get(name)
            if pace is None:
                continue
            mine = [o for o in ordinals if o <= pace.count and serving((name, o), node, nodes, rows)]
            if mine:
                leaving.setdefault(name, []).extend(mine)
    stays: list[Slot] = []
    for name in sorted(leaving):
        pace = paces[name]
        ready = sum(
            serving((name, o), current.get((name, o)), nodes, rows) for o in range(1, pace.count + 1)
        )
        spare = max(0, pace.max_unavailable - (pace.count - ready))
        stays.extend((name, o) for o in sorted(leaving[name])[spare:])
    return frozenset(stays)


def moving_from(node: str, by_node: ByNode, running: Iterable[str]) -> frozenset[str]:
    """The instance ids a drain of ``node`` has to move: placed there, or running there."""
    ids = set(running)
    for name, ordinals in by_node.get(node, {}).items():
        ids.update(instance_id(name, o) for o in ordinals)
    return frozenset(ids)


def drain_left(
    node: str,
    moving: Collection[str],
    wanted: Mapping[str, int],
    placement: Mapping[Slot, str],
    running: Collection[str],
    nodes: Mapping[str, NodeInfo],
    rows: Rows,
) -> frozenset[str]:
    """The ids of ``moving`` not yet moved off ``node``: still running or placed there, or
    wanted (``wanted``: each template's count) but not ready where they are placed now (a job
    that completed there has arrived)."""
    left = set()
    for ident in moving:
        parsed = parse_instance_id(ident)
        slot = parsed.slot if parsed is not None else None
        if ident in running or (slot is not None and placement.get(slot) == node):
            left.add(ident)
        elif slot is not None and slot[1] <= wanted.get(slot[0], 0):
            if not arrived(slot, placement.get(slot), nodes, rows):
                left.add(ident)
    return frozenset(left)
