"""Telling nodes their assignments: numbered, split into parts, recorded, resent as they were.

A reconcile decides which nodes get a new assignment (``Reconcile.sends``); ``Sending`` numbers
them with the store's per-node generations (one transaction for all, so a generation never goes
back, even across controller restarts), splits each into parts that fit a message, records
what went (``sent``: what the next reconcile compares with, what admission trusts, what a
resend repeats) and hands every part to the links. A resend repeats the recorded parts as they
were, with the same generation: the agent ignores it if it applied them already.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

from gaffer.common.parts import split_assignment
from gaffer.controller.liveness import NodeState
from gaffer.controller.reconcile import Send, Sent, resends
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.steps import Steps, run_sliced
from gaffer.controller.statestore import StateStore

PART_BYTES = 2 * 1024 * 1024
"""An assignment bigger than this goes in parts (half a message: room for the envelope)."""
SendAssign = Callable[[Node, dict[str, Any]], bool]


class Sending:
    def __init__(self, store: StateStore, nodes: NodeTable, send_assign: SendAssign) -> None:
        self._store = store
        self._nodes = nodes
        self._send_assign = send_assign
        self.sent: dict[str, Sent] = {}
        """What each node was last sent."""

    async def send(self, sends: Sequence[Send], now: float) -> list[str]:
        """Number, record and send each node's new assignment; the nodes it went to."""
        nodes = self._nodes.nodes
        sends = [s for s in sends if s.node in nodes]
        if not sends:
            return []
        generations = await self._store.next_generations(
            [send.node for send in sends], {send.node: nodes[send.node].generation_acked for send in sends},
        )
        return await run_sliced(self._send_steps(sends, generations, now))

    def _send_steps(self, sends: list[Send], generations: Mapping[str, int], now: float) -> Steps[list[str]]:
        done = []
        for send in sends:
            node = self._nodes.nodes.get(send.node)
            if node is None:
                continue
            generation = generations[send.node]
            bodies = tuple(split_assignment(send.body(generation), PART_BYTES))
            before = self.sent.get(send.node)
            if before is not None and before.before is not None:
                before = replace(before, before=None)
            self.sent[send.node] = Sent(
                generation, send.digest, now, send.orders, send.ordinals, bodies, before,
            )
            done.append(send.node)
            for body in bodies:
                self._send_assign(node, body)
            yield
        return done

    def resend(self, name: str, now: float) -> None:
        """Send ``name`` its last assignment again, as it was."""
        sent = self.sent.get(name)
        node = self._nodes.nodes.get(name)
        if sent is None or node is None:
            return
        self.sent[name] = replace(sent, at=now)
        for body in sent.bodies:
            self._send_assign(node, body)

    def resend_due(self, now: float) -> None:
        """Resend to every connected node that has not acked its latest generation in time."""
        if not self.sent:
            return
        acked = {
            node.name: node.generation_acked for node in self._nodes.nodes.values()
            if node.state is not NodeState.DOWN and node.peer is not None
        }
        for name in resends(self.sent, acked, now):
            self.resend(name, now)

    def forget(self, name: str) -> None:
        self.sent.pop(name, None)
