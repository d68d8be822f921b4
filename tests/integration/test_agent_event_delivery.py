"""Agent -> controller delivery on real sockets: what an agent's node did while the controller
held it down reaches subscribers once it is back, and an overflow is published with its count.

The link runs through a TCP proxy (``linkproxy``) that can pause the agent -> controller
direction: the controller hears nothing and holds the node down, while the agent still hears
the controller's beats and goes on spawning. What the agent sent meanwhile reaches the
controller late, on a session it has already closed, and is refused: only a resend after the
new ``welcome`` delivers it. Subscribers are real SUB sockets on the controller's PUB endpoint.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from typing import Any

import pytest
import zmq

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.common import protocol
from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import poll_until
from linkproxy import LinkProxy
from procs_helpers import remove_node_cgroups
from test_agent_faults import AGENT_BIN, FAST, Lab, spec


class Subscriber:
    """A SUB socket on the controller's events endpoint; ``events()`` reads what has come."""

    def __init__(self, controller: Controller, *prefixes: str) -> None:
        self._controller = controller
        self._prefixes = prefixes
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        for prefix in prefixes:
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self._sock.connect(controller.pub_endpoint)
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def ready(self) -> None:
        await poll_until(lambda: all(self._controller.subscribed(p) for p in self._prefixes),
                         what="the controller to see the subscription")

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        for _ in range(100_000):  # bounded: far more than a test publishes
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            message = protocol.decode(frames[1], protocol.PUBLISHED)
            self.seen.append((message.body["topic"], message.body["data"]))
        return self.seen

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.destroy(0)


class ProxiedLab(Lab):
    """test_agent_faults' Lab, with the agent daemon's link through a LinkProxy."""

    proxy: LinkProxy

    async def start_proxy(self) -> None:
        assert self.controller is not None
        self.proxy = LinkProxy.to(self.controller.endpoint)
        await self.proxy.start()

    async def start_agent(self, tracking: str = "auto") -> subprocess.Popen:
        argv = [AGENT_BIN, "--controller", self.proxy.endpoint, "--name", self.node,
                "--state-dir", str(self.state), "--insecure"]
        with open(self.root / "agent.log", "ab") as log:
            agent = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        self.agents.append(agent)
        await self.wait_node(lambda n: n["state"] == "up" and n.get("version"))
        self.note_keeper()
        return agent


@pytest.fixture
async def plab(tmp_path_factory):
    root = tmp_path_factory.mktemp("gf")
    lab = ProxiedLab(root)
    try:
        yield lab
    finally:
        if hasattr(lab, "proxy"):
            await lab.proxy.close()
        await lab.close()


def spawned_pids(sub: Subscriber, template: str) -> set[int]:
    return {data["pid"] for topic, data in sub.events() if topic == f"proc.{template}.spawn"}


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class TestNodeDownAndBack:
    async def test_every_spawn_the_os_saw_reaches_a_subscriber(self, plab: ProxiedLab):
        """The node is held down while its agent respawns killed processes: once it is back,
        every instance process that appeared in /proc with GAFFER_ env has its
        proc.web.spawn event at a subscriber (same pids)."""
        await plab.start_controller()
        await plab.start_proxy()
        assert plab.controller is not None
        sub = Subscriber(plab.controller, "proc.web.spawn")
        try:
            await sub.ready()
            await plab.start_agent()
            await plab.call("apply", templates=[spec("web", 3, "sleep", "300", redirect_output=[])])
            first = await plab.wait_running(lambda r: len(r) == 3)
            in_proc = {pid for pids in plab.leaders().values() for pid in pids}
            assert in_proc == set(first.values())

            plab.proxy.pause()
            for pid in first.values():
                _kill(pid)

            def respawned() -> bool:
                in_proc.update(pid for pids in plab.leaders().values() for pid in pids)
                return len(in_proc) >= 6

            await poll_until(respawned, what="the agent to respawn what was killed")
            await poll_until(lambda: plab.proxy.held().count(b"proc.web.spawn") >= 3,
                             what="the respawns' events to be sent (and held)")
            await plab.wait_node(lambda n: n["state"] == "down")
            plab.proxy.resume()
            await plab.wait_node(lambda n: n["state"] == "up")

            await poll_until(lambda: in_proc <= spawned_pids(sub, "web"), timeout=10,
                             what="a spawn event for every pid /proc showed")
            assert len(in_proc) == 6
            running = await plab.running()
            assert set(running.values()) <= in_proc
        finally:
            sub.close()


class TestOverflow:
    async def test_an_overflow_is_published_once_with_its_count(self, tmp_path):
        """An agent keeping at most 2 unacknowledged events, its node held down while 3
        processes are killed: node.<name>.events_lost is published and its counts add up to
        exactly what the agent dropped."""
        node = "ov-" + secrets.token_hex(4)
        controller = Controller(ControllerSettings(
            bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "controller",
            insecure=True, liveness=FAST, node_grace=30.0,
        ))
        await controller.start()
        proxy = LinkProxy.to(controller.endpoint)
        await proxy.start()
        sub = Subscriber(controller, f"node.{node}.events_lost")
        agent = Agent(LinkSettings(
            controller=proxy.endpoint, node=node, labels={}, state_dir=tmp_path / "agent",
            heartbeat=0.1, timeout=0.5,
        ), keeper=False, outbox_capacity=2)
        try:
            await sub.ready()
            await agent.start()
            await poll_until(agent.connected.is_set, what="the agent to be welcomed")
            await _apply(controller, spec("web", 3, "sleep", "300", redirect_output=[]))
            await poll_until(lambda: _running(agent) == 3, what="three running")
            pids = [row["pid"] for row in agent.manager.instances()]

            proxy.pause()
            dropped_before = agent.link.outbox.lost
            for pid in pids:
                _kill(pid)
            await poll_until(lambda: agent.link.outbox.lost >= dropped_before + 4,
                             what="the agent to drop events it could not deliver")
            await poll_until(lambda: controller.nodes.nodes[node].state.value == "down",
                             what="the node to be held down")
            proxy.resume()

            def reported() -> int:
                return sum(data["count"] for topic, data in sub.events())

            await poll_until(lambda: reported() == agent.link.outbox.lost, timeout=10,
                             what="the loss to be published")
            assert all(data == {"node": node, "count": data["count"]} for _, data in sub.seen)
        finally:
            sub.close()
            await agent.stop(stop_processes=True)
            await proxy.close()
            await controller.stop()
            remove_node_cgroups(node)


async def _apply(controller: Controller, template: dict[str, Any]) -> None:
    client = AsyncClient(controller.endpoint, timeout=5.0)
    try:
        await client.call("apply", templates=[template])
    finally:
        await client.close()


def _running(agent: Agent) -> int:
    return sum(1 for row in agent.manager.instances() if row["state"] == "running")
