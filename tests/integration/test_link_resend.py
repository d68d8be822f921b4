"""The agent's link keeps its state events until acknowledged and resends, after a new welcome,
exactly those the controller lacks.

A fake controller (a plain ROUTER on a unix socket) welcomes the link, acknowledges part of
what it got, asks for a new hello (``refuse hello_required``, as a controller that held the
node down does) and welcomes it again with ``events_upto``. The Manager runs on fake processes.
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


class FakeController:
    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.peer = b""
        self.seq = 0

    def send(self, kind: str, body: dict[str, Any]) -> None:
        self.seq += 1
        self.sock.send_multipart([self.peer, protocol.encode(kind, self.seq, body)])

    def welcome(self, upto: int) -> None:
        self.send("welcome", {
            "node": "n1", "controller": "fake", "heartbeat": 0.05, "timeout": 30.0, "events_upto": upto,
        })

    async def next(self, kind: str, timeout: float = 5.0) -> protocol.Message:
        """The next message of ``kind`` (others are skipped), within ``timeout``."""
        async with asyncio.timeout(timeout):
            for _ in range(10_000):  # bounded: heartbeats come every 50 ms
                self.peer, frame = await self.sock.recv_multipart()
                message = protocol.decode(frame, protocol.AGENT_TO_CONTROLLER)
                if message.kind == kind:
                    return message
        raise AssertionError(f"no {kind}")

    async def rehello(self) -> None:
        """Refuse with hello_required until the link says hello again (it answers at most one
        refusal per heartbeat interval)."""
        for _ in range(50):  # bounded: 50 refusals, 0.1 s apart
            self.send("refuse", {"code": "hello_required", "message": "held down"})
            try:
                await self.next("hello", timeout=0.1)
                return
            except TimeoutError:
                continue
        raise AssertionError("no new hello")

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` state events, from however many messages."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            got += [e for e in (await self.next("events")).body["events"] if e["seq"]]
        return got

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.destroy(0)


async def test_a_new_welcome_resends_exactly_what_the_controller_lacks(tmp_path):
    """Events 1..6 sent, 1 acked, then the session is refused: after a welcome saying the
    controller has up to 2, the link sends 3..6 again (and nothing else), oldest first; with
    no ack at all, another new session gets the same 3..6 once more."""
    fake = FakeController(f"ipc://{tmp_path / 'controller.sock'}")
    clock = FakeClock()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock))
    manager.add(template("web", numprocesses=0))
    settings = LinkSettings(controller=fake.sock.getsockopt_string(zmq.LAST_ENDPOINT), node="n1",
                            labels={}, state_dir=tmp_path, heartbeat=0.05, timeout=30.0)
    link = ControllerLink(manager, settings, "agent-1", Lease(held=False))
    link.start()
    try:
        await fake.next("hello")
        fake.welcome(0)
        manager.scale("web", 3)
        clock.advance(0)
        first = await fake.events(6)
        assert [e["seq"] for e in first] == [1, 2, 3, 4, 5, 6]
        assert {e["topic"] for e in first} == {"proc.web.spawn", "proc.web.running"}
        fake.send("events_ack", {"upto": 1})

        await fake.rehello()
        fake.welcome(2)
        again = await fake.events(4)
        assert again == first[2:]

        await fake.rehello()
        fake.welcome(0)
        assert await fake.events(4) == first[2:]
        assert link.outbox.lost == 0
    finally:
        await link.stop()
        fake.close()
