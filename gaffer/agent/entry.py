"""The Manager's record of one template on this node: what is wanted, and what is."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from gaffer.agent.flapping import FlapState
from gaffer.agent.instance import Instance
from gaffer.agent.lifecycle import Policy, State
from gaffer.agent.plan import Ordinal, Wanted
from gaffer.agent.runs import Runs
from gaffer.common.template import Template


@dataclass(eq=False)
class Entry:
    """``wanted`` is replaced (never changed in place) by every operation; ``instances`` has
    one record per ordinal that runs, ran or waits here, each with its own crash-loop state
    (``Instance.flap``); ``start_queue`` the spawns of the last plan not yet made (they go
    in batches)."""

    template: Template
    wanted: Wanted
    policy: Policy
    instances: dict[Ordinal, Instance] = field(default_factory=dict)
    runs: Runs = field(default_factory=Runs)
    converge_pending: bool = False
    rolling: bool = False
    start_queue: collections.deque = field(default_factory=collections.deque)
    start_pending: bool = False
    gone_as: str = "deleted"
    """The ``template.<t>.<kind>`` its removal is announced as: ``failed`` when every instance
    here had failed (the controller then took it away), else ``deleted``."""

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def deleting(self) -> bool:
        return self.wanted.deleting

    def instance(self, ordinal: Ordinal) -> Instance:
        """The record of ``ordinal``, made (stopped) if it has none yet."""
        inst = self.instances.get(ordinal)
        if inst is None:
            inst = self.instances[ordinal] = Instance(self.template.name, ordinal)
        return inst

    def reset_flapping(self) -> None:
        """Forget every instance's crash-loop history (started or paused by hand); the timer
        of a suspension is the instance's respawn timer, cancelled by whoever moves it."""
        for inst in self.instances.values():
            inst.flap = FlapState()

    def status(self, now: float) -> str:
        """``failed`` only once every instance that should run here gave up; ``flapping``
        while some are suspended at ``now`` (their siblings run as usual)."""
        if self.wanted.deleting:
            return "deleting"
        if not self.wanted.active:
            return "stopped"
        mine = [self.instances.get(ordinal) for ordinal in self.wanted.here]
        if mine and all(inst is not None and inst.state is State.FAILED for inst in mine):
            return "failed"
        if any(inst is not None and inst.suspended(now) for inst in mine):
            return "flapping"
        return "active"

    def payload(self, node: str) -> dict[str, Any]:
        """The payload of a ``template.<name>.<kind>`` event."""
        return {
            "node": node,
            "name": self.template.name,
            "numprocesses": self.template.numprocesses,
            "spec": self.wanted.spec,
        }
