"""Cluster-wide rolling updates: which version each node runs while a template changes.

A node's Manager rolls its own instances, at most its allowance at a time. The controller
makes that add up across the cluster: when a template's version changes (a new spec, or a
restart), nodes that run the template keep the order they were last sent until their turn; a
node whose turn it is gets the new version with an allowance, and the allowances of all
rolling nodes never sum to more than the template's ``update.max_unavailable`` (the budget).
A node is done once every instance it runs of the template reports the new version and
``ready`` (the row's flag: serving, not just started); its allowance then goes to the next node.

A rollout makes progress when more instances of the new version are ready than ever before in
it. One that makes none for the template's ``update.progress_deadline`` seconds is stuck: it
sends no further node its turn (the rolling nodes' own allowance is used up by replacements
that are not ready, so they take nothing more down either), and the old instances still running
stay. It goes on by itself if its new instances turn ready after all; a new version starts a
new rollout.

Values only: ``start_rollout``, ``progress`` and ``advance`` return a new ``Rollout``, with
time passed in; the reconcile feeds them what nodes run and report, and asks ``order_for`` what
to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from gaffer.controller.orders import Order, Version


@dataclass(frozen=True)
class Rollout:
    target: Version
    budget: int
    waiting: Mapping[str, Order] = field(default_factory=dict)
    """Nodes that keep the order they were last sent until their turn."""
    rolling: Mapping[str, int] = field(default_factory=dict)
    """Nodes rolling to ``target`` now, with their allowance."""
    deadline: float = 600.0
    """Seconds without progress after which the rollout is stuck (``update.progress_deadline``)."""
    progress_at: float = 0.0
    """When it started or last made progress."""
    best: int = 0
    """The most instances of ``target`` seen ready at once during it."""
    stuck: bool = False

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.rolling

    def order_for(self, node: str, allowance: int) -> Order:
        """What ``node`` runs now; ``allowance`` is the template's own, for nodes that are
        not in the rollout (new to the template, or done)."""
        waiting = self.waiting.get(node)
        if waiting is not None:
            return waiting
        share = self.rolling.get(node)
        return Order(self.target, share if share is not None else allowance)

    def due(self, now: float) -> bool:
        """Whether ``progress`` would now find it stuck (the controller's timer asks)."""
        return not self.stuck and not self.finished and now - self.progress_at >= self.deadline


def progress(rollout: Rollout, ready: int, now: float) -> Rollout:
    """The rollout once ``ready`` instances of its target are seen ready at ``now``.

    More than ever seen is progress (it also ends a stuck spell); none for ``deadline`` seconds
    makes it stuck."""
    if ready > rollout.best:
        return replace(rollout, best=ready, progress_at=now, stuck=False)
    if rollout.due(now):
        return replace(rollout, stuck=True)
    return rollout


def advance(rollout: Rollout, ordinals_on: Mapping[str, int], done: Mapping[str, bool]) -> Rollout:
    """The rollout after finished nodes free their allowance and the next ones start.

    ``ordinals_on[node]`` is how many ordinals of the template a node runs now;
    ``done[node]`` whether a rolling node reports them all updated and ready. A node that
    runs none of the template any more leaves the rollout. A stuck rollout gives no waiting
    node its turn.
    """
    rolling = {
        node: share for node, share in rollout.rolling.items()
        if not done.get(node, False) and ordinals_on.get(node, 0) > 0
    }
    waiting = {node: order for node, order in rollout.waiting.items() if ordinals_on.get(node, 0) > 0}
    spare = 0 if rollout.stuck else rollout.budget - sum(rolling.values())
    for node in sorted(waiting):
        if spare <= 0:
            break
        share = min(spare, ordinals_on[node])
        rolling[node] = share
        del waiting[node]
        spare -= share
    if rolling == rollout.rolling and waiting == rollout.waiting:
        return rollout
    return replace(rollout, waiting=waiting, rolling=rolling)


def start_rollout(
    previous: Rollout | None,
    target: Version,
    budget: int,
    sent: Mapping[str, Order],
    now: float = 0.0,
    deadline: float = 600.0,
) -> Rollout:
    """A rollout to ``target`` for the nodes that were last sent another version (``sent``).

    Nodes already rolling to an earlier target roll on to the new one and keep their allowance
    while the new budget has room (their restarts are under way and count against it); the
    others wait, keeping what they were sent.
    """
    budget = max(1, budget)
    rolling: dict[str, int] = {}
    spare = budget
    if previous is not None:
        for node in sorted(previous.rolling):
            if node in sent and spare > 0:
                rolling[node] = min(previous.rolling[node], spare)
                spare -= rolling[node]
    waiting = {node: order for node, order in sent.items() if node not in rolling}
    return Rollout(
        target=target, budget=budget, waiting=waiting, rolling=rolling, deadline=deadline, progress_at=now,
    )
