"""Junk thrown at every endpoint: daemons drop it, count it, and keep answering.

Random bytes, broken msgpack, and well-formed messages of the wrong kind or shape go to the
controller's endpoint (as an unknown peer, as an agent, as a client) and to an agent (from a
fake controller it connected to). Afterwards the real peers still work and the drop counters
moved. Bounded: a fixed number of hypothesis examples per run.
"""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.common import protocol
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import poll_until

FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
kinds = st.sampled_from(sorted(protocol.KINDS) + ["nope", ""])


@st.composite
def junk_frames(draw) -> list[bytes]:
    """One message as a peer might send it: garbage, broken msgpack, or a wrong envelope."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return [draw(st.binary(max_size=64))]
    if choice == 1:
        good = msgpack.packb([protocol.PROTOCOL_VERSION, "heartbeat", 1, {"load": [0, 0, 0]}])
        return [good[: draw(st.integers(0, len(good) - 1))]]
    if choice == 2:
        return [msgpack.packb(draw(plain), use_bin_type=True)]
    if choice == 3:
        version = draw(st.sampled_from([1, 1, 1, 2, 0]))
        return [msgpack.packb([version, draw(kinds), draw(st.integers(0, 10)), draw(plain)], use_bin_type=True)]
    return [draw(st.binary(max_size=16)), draw(st.binary(max_size=16))]


@pytest.fixture
async def controller(tmp_path):
    ctl = Controller(ControllerSettings(
        bind=f"ipc://{tmp_path}/run/control.sock", data_dir=tmp_path / "data", liveness=FAST,
    ))
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


def fuzz_settings():
    return settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


async def test_controller_survives_junk_and_still_answers(controller, tmp_path):
    """Junk from a raw peer is dropped and counted; a real agent and client still work."""
    agent = Agent(LinkSettings(
        controller=controller.endpoint, node="real", labels={}, state_dir=tmp_path / "agent",
        heartbeat=0.1, timeout=1.0,
    ))
    await agent.start()
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(controller.endpoint)
    sent = 0

    @fuzz_settings()
    @given(junk_frames())
    def throw(frames: list[bytes]) -> None:
        nonlocal sent
        raw.send_multipart(frames)
        sent += 1

    try:
        await asyncio.wait_for(agent.connected.wait(), 5)
        throw()
        client = AsyncClient(controller.endpoint, timeout=5)
        try:
            await poll_until(lambda: controller._server.bad.total >= sent // 2, timeout=10)
            nodes = await client.call("nodes")
            assert [n["name"] for n in nodes] == ["real"] and nodes[0]["state"] == "up"
            assert (await client.call("status"))["link"]["bad_messages"]["total"] >= sent // 2
        finally:
            await client.close()
    finally:
        raw.close(0)
        ctx.destroy(0)
        await agent.stop(stop_processes=True)


async def test_wrong_but_wellformed_messages_are_dropped(controller):
    """Valid envelopes of the wrong role, and replays, change nothing."""
    ctx = zmq.asyncio.Context()
    agentish, clientish = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for peer in (agentish, clientish):
        peer.setsockopt(zmq.LINGER, 0)
        peer.connect(controller.endpoint)
    try:
        agentish.send(protocol.encode("assign", 1, {"generation": 1, "templates": {}, "ordinals": {}, "controls": {}}))
        agentish.send(protocol.encode("heartbeat", 2, {"load": [0, 0, 0], "digest": "", "instances": 0, "generation": 0}))
        reply = protocol.decode(await asyncio.wait_for(agentish.recv(), 5), protocol.CONTROLLER_TO_AGENT)
        assert reply.kind == "refuse" and reply.body["code"] == "hello_required"
        agentish.send(protocol.encode("request", 3, {"id": 1, "op": "nodes", "args": {}}))
        request = protocol.encode("request", 1, {"id": 7, "op": "nodes", "args": {}})
        clientish.send(request)
        clientish.send(request)
        answer = protocol.decode(await asyncio.wait_for(clientish.recv(), 5), protocol.CONTROLLER_TO_CLIENT)
        assert answer.body["id"] == 7 and answer.body["ok"]
        await poll_until(lambda: controller._server.replays >= 1, timeout=5)
        reasons = controller._server.bad.snapshot()["reasons"]
        assert reasons.get("unexpected_kind", 0) >= 2
        assert controller.nodes.nodes == {}
    finally:
        agentish.close(0)
        clientish.close(0)
        ctx.destroy(0)


async def test_agent_survives_junk_from_its_controller(tmp_path):
    """An agent fed junk by a (fake) controller drops it, counts it, and keeps its session."""
    ctx = zmq.asyncio.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    agent = Agent(LinkSettings(
        controller=f"tcp://127.0.0.1:{port}", node="victim", labels={}, state_dir=tmp_path / "agent",
        heartbeat=0.1, timeout=30.0,
    ))
    await agent.start()
    try:
        peer, hello = await asyncio.wait_for(fake.recv_multipart(), 5)
        assert protocol.decode(hello, protocol.AGENT_TO_CONTROLLER).kind == "hello"
        fake.send_multipart([peer, protocol.encode("welcome", 1, {
            "node": "victim", "controller": "fake", "heartbeat": 0.1, "timeout": 30.0, "events_upto": 0,
        })])
        await asyncio.wait_for(agent.connected.wait(), 5)
        sent = 0

        @fuzz_settings()
        @given(junk_frames())
        def throw(frames: list[bytes]) -> None:
            nonlocal sent
            fake.send_multipart([peer, *frames])
            sent += 1

        throw()
        fake.send_multipart([peer, protocol.encode("ping", 10_000, {"nonce": 42})])
        while True:
            _, frame = await asyncio.wait_for(fake.recv_multipart(), 5)
            message = protocol.decode(frame, protocol.AGENT_TO_CONTROLLER)
            if message.kind == "pong":
                assert message.body["nonce"] == 42
                break
        assert agent.link.bad.total >= sent // 2
        assert agent.connected.is_set()
    finally:
        await agent.stop(stop_processes=True)
        fake.close(0)
        ctx.destroy(0)
