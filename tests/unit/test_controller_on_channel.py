"""A real Controller and simulated agents over in-memory channels, on a fake clock.

No socket, no process, no sleep: the controller serves on a ``MemoryRouter``, three
``ChannelAgent``s speak the agent protocol to it, and time moves only when the test advances
the ``FakeClock`` (the agents' heartbeats fire on it; the controller ticks on it). What the
cluster does under a fault is then checked step by step, the same way every run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import msgpack
import pytest

from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness, NodeState
from gaffer.controller.reconcile import RESEND_AFTER
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import template, loop_turn
from gaffer.testing.channel import MemoryRouter
from gaffer.testing.clock import FakeClock
from gaffer.testing.simagent import ChannelAgent, SimFleet

LIVENESS = Liveness(interval=1.0, suspect_misses=3, down_misses=5, startup_grace=3.0)
NODE_GRACE = 2.0
TURNS = 5_000
"""Loop turns a step may take at most (a reconcile and its sends take a few dozen)."""


async def until(predicate: Callable[[], bool], what: str, turns: int = TURNS) -> None:
    """Let the loop run (time standing still) until ``predicate`` holds; fail after ``turns``."""
    for _ in range(turns):
        if predicate():
            return
        await loop_turn()
    raise AssertionError(f"not within {turns} loop turns: {what}")


class Lab:
    """A controller on a fake clock and simulated agents, all in memory."""

    def __init__(self, data_dir: Path, nodes: int) -> None:
        self.clock = FakeClock(start=1000.0)
        self.router = MemoryRouter(clock=self.clock)
        self.controller = Controller(
            ControllerSettings(data_dir=data_dir, liveness=LIVENESS, node_grace=NODE_GRACE),
            clock=self.clock.time,
        )
        self.fleet = SimFleet(self.clock, rng=random.Random(8))
        self.agents = [
            ChannelAgent(self.fleet, i, self.router.connect, name=f"n{i}") for i in range(nodes)
        ]
        self._beat = False

    async def start(self) -> None:
        await self.controller.serve_on(self.router.channel)
        for agent in self.agents:
            agent.start()
        await until(lambda: all(a.welcomed for a in self.agents), "every agent welcomed")

    async def stop(self) -> None:
        for agent in self.agents:
            agent.silence()
        await self.controller.stop()

    async def settle(self) -> None:
        """Run the loop until no reconcile runs and no message waits anywhere."""
        cluster = self.controller.cluster
        assert cluster is not None

        def quiet() -> bool:
            return (cluster._running is None and self.router.channel.queued == 0
                    and all(a.channel is None or a.channel.queued == 0 for a in self.agents))

        for _ in range(3):  # a reply may kick another round
            await until(quiet, "the cluster settled")
            await loop_turn()
        await until(quiet, "the cluster settled")

    async def run_for(self, seconds: float) -> None:
        """Advance the clock in half-heartbeat steps, ticking the controller at each, as its
        ``Ticks`` task does."""
        ticks = self.controller.ticks
        assert ticks is not None
        for _ in range(round(seconds / (LIVENESS.interval / 2))):
            self.clock.advance(LIVENESS.interval / 2)
            await self.settle()
            self._beat = not self._beat
            await ticks.tick(self._beat)
            await self.settle()

    def held(self) -> dict[str, set[str]]:
        """What each agent runs, as it would report it."""
        return {a.name: set(a.rows) for a in self.agents}


@pytest.fixture
async def lab(tmp_path):
    lab = Lab(tmp_path / "data", nodes=3)
    await lab.start()
    yield lab
    await lab.stop()


async def test_agents_register_and_run_what_they_are_assigned(lab: Lab):
    """Three agents say hello, are welcomed, and run the six instances placed on them."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await cluster.apply([template("web", numprocesses=6)])
    await lab.settle()
    held = lab.held()
    assert sorted(len(ids) for ids in held.values()) == [2, 2, 2]
    assert set().union(*held.values()) == {f"web.{i}" for i in range(1, 7)}
    assert all(a.generation >= 1 and a.welcomed for a in lab.agents)
    nodes = lab.controller.nodes.nodes
    assert {n.state for n in nodes.values()} == {NodeState.UP}
    assert all(node.running == 2 for node in nodes.values())


async def test_a_silent_node_is_judged_down_and_its_instances_move_after_the_grace(lab: Lab):
    """n1 goes silent: down after the liveness timeout, its instances stay placed during the
    node grace, then they are placed on n0 and n2, which run all six; n1 gets nothing more."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await lab.run_for(LIVENESS.startup_grace)
    await cluster.apply([template("web", numprocesses=6)])
    await lab.settle()
    silent = lab.agents[1]
    lost_ids = set(silent.rows)
    assert len(lost_ids) == 2
    silent.silence()
    generation = silent.generation

    await lab.run_for(LIVENESS.down_after)
    node = lab.controller.nodes.nodes["n1"]
    assert node.state is NodeState.DOWN
    assert cluster.placement_on("n1") == 2, "moved before the node grace"

    await lab.run_for(NODE_GRACE + LIVENESS.interval)
    assert cluster.lost == frozenset({"n1"})
    assert cluster.placement_on("n1") == 0
    others = lab.held()
    moved = others["n0"] | others["n2"]
    assert moved == {f"web.{i}" for i in range(1, 7)} and lost_ids <= moved
    assert silent.generation == generation


async def test_an_unacked_assignment_is_resent_on_the_tick(lab: Lab):
    """An agent whose ack was lost gets the same generation again after RESEND_AFTER, and
    its ack of that one is taken."""
    cluster = lab.controller.cluster
    assert cluster is not None
    channel = lab.agents[0].channel
    assert channel is not None
    send = channel.send
    lost: list[int] = []

    def lose_the_first_ack(frames: list[bytes]) -> bool:
        _, kind, _, body = msgpack.unpackb(frames[0])
        if kind == "ack" and body["generation"] > 1 and not lost:
            lost.append(body["generation"])
            return True
        return send(frames)

    channel.send = lose_the_first_ack  # type: ignore[method-assign]
    await cluster.apply([template("web", numprocesses=3)])
    await lab.settle()
    node = lab.controller.nodes.nodes["n0"]
    assert lost == [cluster.sent["n0"].generation] and node.generation_acked < lost[0]
    assigns = lab.fleet.counts["assigns"]
    await lab.run_for(RESEND_AFTER - LIVENESS.interval)
    assert lab.fleet.counts["assigns"] == assigns, "resent too early"
    await lab.run_for(2 * LIVENESS.interval)
    assert lab.fleet.counts["assigns"] == assigns + 1
    assert node.generation_acked == lost[0] == cluster.sent["n0"].generation


async def test_a_lost_node_that_comes_back_stops_what_moved_away(lab: Lab):
    """No resurrection: n1 returns after its instances moved; it says hello with what it
    still runs, gets its current (empty) assignment and runs none of them any more."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await lab.run_for(LIVENESS.startup_grace)
    await cluster.apply([template("web", numprocesses=6)])
    await lab.settle()
    back = lab.agents[1]
    back.silence()
    await lab.run_for(LIVENESS.down_after + NODE_GRACE + LIVENESS.interval)
    assert cluster.lost == frozenset({"n1"}) and len(back.rows) == 2
    back.reconnect()
    await lab.run_for(LIVENESS.interval)
    assert lab.controller.nodes.nodes["n1"].state is NodeState.UP
    assert back.rows == {}
    held = lab.held()
    assert held["n0"] | held["n2"] == {f"web.{i}" for i in range(1, 7)}
