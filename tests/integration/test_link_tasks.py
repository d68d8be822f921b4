"""The agent's link owns what it starts: commands still running end when the link stops.

A fake controller (a plain ROUTER on a unix socket) welcomes the link and sends commands; the
Manager behind the link runs on fake processes, since no process is needed here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zmq
import zmq.asyncio

from gaffer.agent.lease import Lease
from gaffer.agent.link import ControllerLink, LinkSettings
from gaffer.agent.manager import Manager
from gaffer.common import protocol
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses


async def test_stopping_the_link_ends_commands_still_running(tmp_path):
    """A command handler still running when the link stops is cancelled and awaited, and
    every fresh message from the controller renewed the lease."""
    ctx = zmq.asyncio.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path / 'controller.sock'}"
    fake.bind(endpoint)
    started, ended = asyncio.Event(), asyncio.Event()

    async def hang(_op: str, _args: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            ended.set()

    clock = FakeClock()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock))
    lease = Lease(held=True)
    settings = LinkSettings(controller=endpoint, node="n1", labels={}, state_dir=tmp_path, heartbeat=1.0, timeout=30.0)
    link = ControllerLink(manager, settings, "agent-1", lease, commands={"hang": hang})
    link.start()
    try:
        peer, hello = await asyncio.wait_for(fake.recv_multipart(), 5)
        assert protocol.decode(hello, protocol.AGENT_TO_CONTROLLER).kind == "hello"
        fake.send_multipart([peer, protocol.encode("welcome", 1, {
            "node": "n1", "controller": "fake", "heartbeat": 1.0, "timeout": 30.0, "events_upto": 0,
        })])
        fake.send_multipart([peer, protocol.encode("command", 2, {"id": 7, "op": "hang", "args": {}})])
        await asyncio.wait_for(started.wait(), 5)
        assert lease.until is not None and lease.held, "renewed, but held until an assignment"
    finally:
        await link.stop()
        fake.close(0)
        ctx.destroy(0)
    assert ended.is_set(), "the command was left running"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_heartbeat_never_looks_stale_while_instances_change(tmp_path):
    """Changed rows are reported before each heartbeat, so its digest always matches what
    the controller was told and a burst of changes never costs a full report."""
    ctx = zmq.asyncio.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path / 'controller.sock'}"
    fake.bind(endpoint)
    clock = FakeClock()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock))
    manager.add(template("web", numprocesses=0))
    settings = LinkSettings(controller=endpoint, node="n1", labels={}, state_dir=tmp_path, heartbeat=0.01, timeout=30.0)
    link = ControllerLink(manager, settings, "agent-1", Lease(held=False))
    link.start()
    rows: dict[str, Any] = {}
    beats = stale = 0
    try:
        peer, _ = await asyncio.wait_for(fake.recv_multipart(), 5)
        fake.send_multipart([peer, protocol.encode("welcome", 1, {
            "node": "n1", "controller": "fake", "heartbeat": 0.01, "timeout": 30.0, "events_upto": 0,
        })])
        for count in range(1, 41):  # bounded: 40 changes, each followed by the messages of 5 ms
            manager.scale("web", count % 7)
            clock.advance(0)
            async with asyncio.timeout(5):
                while (await fake.poll(5)) and beats < 1000:
                    message = protocol.decode((await fake.recv_multipart())[1], protocol.AGENT_TO_CONTROLLER)
                    if message.kind == "report":
                        if message.body["full"]:
                            rows.clear()
                        rows.update((r["id"], r) for r in message.body["instances"])
                        for ident in message.body["removed"]:
                            rows.pop(ident, None)
                    elif message.kind == "heartbeat":
                        beats += 1
                        stale += message.body["digest"] != protocol.instances_digest(rows.values())
    finally:
        await link.stop()
        fake.close(0)
        ctx.destroy(0)
    assert beats >= 10
    assert stale == 0
