"""The controller's clock work: liveness judged twice per heartbeat interval, beats, expiry.

Every half interval ``Ticks`` asks the pure ``liveness.judge`` what each node's silence means
and applies the verdict (state changes through ``AgentMessages.set_state``, the guard that
allows moving anything through the cluster); every other tick it beats each agent and expires
abandoned staged applies; every tick it lets the cluster check its own timers (lost nodes,
resends, a store retry). A failing tick is logged; the next one runs anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.agents import AgentMessages
from gaffer.controller.cluster import Cluster
from gaffer.controller.links import Links
from gaffer.controller.liveness import Liveness, NodeState, judge
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.staging import Stages
from gaffer.controller.steps import run_sliced

log = logging.getLogger("gaffer.controller")


class Ticks:
    def __init__(
        self,
        liveness: Liveness,
        nodes: NodeTable,
        agents: AgentMessages,
        links: Links,
        cluster: Cluster,
        stages: Stages,
        clock: Callable[[], float],
    ) -> None:
        self._liveness = liveness
        self._nodes = nodes
        self._agents = agents
        self._links = links
        self._cluster = cluster
        self._stages = stages
        self._clock = clock
        self._started = clock()
        self._cut_off = False
        self._regained_at: float | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        """A tick every half interval on a fixed cadence, so the time a tick takes (beats to a
        thousand nodes go out in steps, between other work) does not stretch the period."""
        loop = asyncio.get_running_loop()
        period = self._liveness.interval / 2
        due = loop.time()
        beat = False
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > period:
                due = loop.time()  # a tick or the loop ran long: go on from now, no burst
            beat = not beat
            try:
                await self.tick(beat)
            except Exception:
                log.exception("controller tick failed")

    async def tick(self, beat: bool) -> None:
        self.judge()
        if beat:
            await run_sliced(self._links.beat_steps(self._generation_of))
            self._stages.expire(self._clock())
        self._cluster.check_timers()

    def _generation_of(self, node: Node) -> int:
        sent = self._cluster.sent.get(node.name)
        return sent.generation if sent is not None else node.generation_acked

    def judge(self) -> None:
        """Apply the liveness verdict. When a cut-off ends, every node gets a fresh timeout
        from that moment: silence the controller could not hear proves nothing."""
        now = self._clock()
        nodes = self._nodes.nodes
        verdict = judge(
            {name: node.last_heard for name, node in nodes.items()},
            now,
            self._started,
            self._liveness,
            already_down=[n for n, node in nodes.items() if node.state is NodeState.DOWN],
            regained_at=self._regained_at,
        )
        if self._cut_off and not verdict.cut_off:
            log.warning("most nodes are heard again: every node gets a fresh timeout")
            self._regained_at = now
            self._cut_off = False
            self.judge()
            return
        self._cut_off = verdict.cut_off
        for name, state in verdict.states.items():
            node = nodes[name]
            if state is not node.state:
                self._agents.set_state(node, state)
        if verdict.cut_off and self._cluster.may_move:
            log.error("most nodes went silent at once: assuming this controller is cut off; moving nothing")
        self._cluster.set_guard(verdict.may_move)
