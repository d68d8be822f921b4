"""Cluster-wide rolling updates: which spec each node gets while a template changes.

A node's Manager rolls its own instances, at most its template's ``update.max_unavailable``
at a time. The controller makes that add up across the cluster: when a spec changes, nodes
that run the template keep the old spec until their turn; a node whose turn it is gets the new
spec with a local allowance, and the allowances of all rolling nodes never sum to more than
the template's ``max_unavailable``. A node is done once every instance it runs of the template
reports the new spec and ``running``; its allowance then goes to the next node.

Pure bookkeeping: the controller feeds it what nodes run and report, and asks for specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Rollout:
    target: dict[str, Any]
    target_hash: str
    budget: int
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    rolling: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.rolling

    def advance(self, ordinals_on: Mapping[str, int], done: Mapping[str, bool]) -> None:
        """Free the allowance of finished nodes and start the next ones.

        ``ordinals_on[node]`` is how many ordinals of the template a node runs now;
        ``done[node]`` whether a rolling node reports them all updated and running.
        """
        for node in list(self.rolling):
            if done.get(node, False) or ordinals_on.get(node, 0) == 0:
                del self.rolling[node]
        for node in list(self.waiting):
            if ordinals_on.get(node, 0) == 0:
                del self.waiting[node]
        spare = self.budget - sum(self.rolling.values())
        for node in sorted(self.waiting):
            if spare <= 0:
                break
            share = min(spare, ordinals_on[node])
            self.rolling[node] = share
            del self.waiting[node]
            spare -= share

    def spec_for(self, node: str) -> dict[str, Any]:
        """The spec ``node`` should run now (without its per-node count)."""
        if node in self.waiting:
            return self.waiting[node]
        if node in self.rolling:
            return with_allowance(self.target, self.rolling[node])
        return self.target


def with_allowance(spec: dict[str, Any], allowance: int) -> dict[str, Any]:
    out = dict(spec)
    out["update"] = {**spec.get("update", {}), "max_unavailable": allowance}
    return out


def start_rollout(
    previous: Rollout | None,
    target: dict[str, Any],
    target_hash: str,
    budget: int,
    sent: Mapping[str, dict[str, Any]],
) -> Rollout:
    """A rollout to ``target`` given the spec each node was last sent (``sent``).

    Nodes already rolling to an earlier target keep their allowance and roll on to the new
    target (their restarts are under way and count against the budget either way).
    """
    rollout = Rollout(target=target, target_hash=target_hash, budget=max(1, budget))
    for node, spec in sent.items():
        if previous is not None and node in previous.rolling:
            rollout.rolling[node] = previous.rolling[node]
        else:
            rollout.waiting[node] = spec
    return rollout
