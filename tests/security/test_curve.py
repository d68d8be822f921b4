"""CURVE keys end to end: who may connect, as whom, and the refusal to listen unprotected."""

from __future__ import annotations

import asyncio

import pytest

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.common import keys
from gaffer.common.errors import ConfigError, ControllerUnreachable
from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import poll_until
from keylab import agent_settings, client

async def test_authorized_agent_and_client_work(tmp_path, keydir, controller):
    """An agent with an authorized key registers; an authorized client sees it."""
    agent = Agent(agent_settings(tmp_path, controller, "node1", "node1", keydir))
    await agent.start()
    admin = client(tmp_path, controller, "admin", keydir)
    try:
        await asyncio.wait_for(agent.connected.wait(), 5)
        nodes = await admin.call("nodes")
        assert [n["name"] for n in nodes] == ["node1"]
        status = await admin.call("status")
        assert status["secure"] and status["fingerprint"].startswith("sha256:")
    finally:
        await admin.close()
        await agent.stop(stop_processes=True)


async def test_unknown_agent_key_is_refused_and_counted(tmp_path, keydir, controller):
    """An agent whose key is not authorized never registers; the refusal is counted."""
    agent = Agent(agent_settings(tmp_path, controller, "intruder", "intruder", keydir))
    await agent.start()
    try:
        await poll_until(lambda: controller._zap.stats.rejected >= 1, timeout=5)
        assert not agent.connected.is_set()
        assert controller.nodes.nodes == {}
        assert keys.fingerprint(keys.load_public(tmp_path / "agent-keys" / "intruder.key")) in controller._zap.stats.rejected_keys
    finally:
        await agent.stop(stop_processes=True)


async def test_agent_key_is_bound_to_its_node_name(tmp_path, keydir, controller):
    """node1's key cannot register as another node."""
    agent = Agent(agent_settings(tmp_path, controller, "node1", "impostor", keydir))
    await agent.start()
    try:
        await poll_until(lambda: agent.link.refusal is not None, timeout=5)
        assert agent.link.refusal[0] == "node_mismatch"
        assert "impostor" not in controller.nodes.nodes
    finally:
        await agent.stop(stop_processes=True)


async def test_unknown_client_key_gets_no_answer(tmp_path, keydir, controller):
    """A client key that is not authorized is refused at the handshake: its calls time out."""
    stranger = client(tmp_path, controller, "stranger", keydir)
    try:
        with pytest.raises(ControllerUnreachable):
            await stranger.call("nodes")
    finally:
        await stranger.close()


async def test_client_key_cannot_act_as_an_agent(tmp_path, keydir, controller):
    """An authorized client key saying hello is dropped: clients may only send requests."""
    settings = LinkSettings(
        controller=controller.endpoint, node="admin", labels={}, state_dir=tmp_path / "rogue",
        keys=keys.load_keypair(tmp_path / "client-keys" / "admin.key_secret"),
        controller_key=keys.load_public(keydir / "controller.key"), heartbeat=0.1, timeout=0.5,
    )
    rogue = Agent(settings)
    await rogue.start()
    try:
        await poll_until(lambda: controller._server.bad.snapshot()["reasons"].get("unexpected_kind", 0) >= 1, timeout=5)
        assert controller.nodes.nodes == {}
        assert not rogue.connected.is_set()
    finally:
        await rogue.stop(stop_processes=True)


async def test_tcp_without_keys_refuses_to_start_even_on_loopback(tmp_path):
    """TCP needs keys on every address, loopback included, or an explicit --insecure, which
    the controller then reports as a warning in its status."""
    for bind in ("tcp://0.0.0.0:*", "tcp://127.0.0.1:*", "tcp://[::1]:*", "tcp://localhost:*"):
        settings = ControllerSettings(bind=bind, data_dir=tmp_path / "d")
        with pytest.raises(ConfigError, match="gafferctl keygen"):
            await Controller(settings).start()
    insecure = Controller(ControllerSettings(
        bind="tcp://127.0.0.1:*", data_dir=tmp_path / "d2", insecure=True,
    ))
    await insecure.start()
    try:
        status = insecure.status()
        assert status["transport"] == "insecure"
        assert "INSECURE" in status["warning"] and insecure.endpoint in status["warning"]
    finally:
        await insecure.stop()


async def test_keyed_controller_binds_ipv6_loopback(tmp_path, keydir):
    """A bracketed IPv6 endpoint binds (ZMQ's IPv6 option is set) instead of failing."""
    ctl = Controller(ControllerSettings(bind="tcp://[::1]:*", data_dir=tmp_path / "d", keys=keydir))
    await ctl.start()
    try:
        assert ctl.endpoint.startswith("tcp://[::1]:")
    finally:
        await ctl.stop()
