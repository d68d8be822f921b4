"""Refused CURVE peers are counted by reason in `status` (issue 9, item 8), over real sockets."""

from __future__ import annotations

import pytest
import zmq

from gaffer.agent.agent import Agent
from gaffer.cli.tables import status_text
from gaffer.client import AsyncClient, Credentials
from gaffer.common import keys
from gaffer.common.errors import ControllerUnreachable
from gaffer.testing import poll_until
from keylab import agent_settings, client


async def _refused_call(peer: AsyncClient) -> None:
    try:
        with pytest.raises(ControllerUnreachable):
            await peer.call("nodes")
    finally:
        await peer.close()


async def test_unknown_key_bad_handshake_and_wrong_node_are_counted_by_reason(tmp_path, keydir, controller):
    """An unknown client key, a client holding another controller's key and an agent key
    saying hello as another node each show up in `status` under their own reason."""
    await _refused_call(client(tmp_path, controller, "stranger", keydir))
    other_server = zmq.curve_keypair()[0]
    wrong = Credentials(keys.load_keypair(tmp_path / "client-keys" / "admin.key_secret"), other_server)
    await _refused_call(AsyncClient(controller.endpoint, wrong, timeout=1.0))
    impostor = Agent(agent_settings(tmp_path, controller, "node1", "impostor", keydir))
    await impostor.start()
    try:
        await poll_until(lambda: impostor.link.refusal is not None, timeout=5)
    finally:
        await impostor.stop(stop_processes=True)
    admin = client(tmp_path, controller, "admin", keydir)
    try:
        status = await admin.call("status")
    finally:
        await admin.close()
    reasons = status["auth"]["reasons"]
    assert reasons["unknown_key"] >= 1 and reasons["bad_handshake"] >= 1 and reasons["wrong_node"] == 1
    assert status["auth"]["rejected"] == sum(reasons.values())
    line = next(x for x in status_text(status).splitlines() if x.startswith("auth"))
    assert "bad_handshake" in line and "unknown_key" in line and "wrong_node" in line and " 0 refused" not in line


async def test_peer_without_curve_is_counted_as_bad_handshake(tmp_path, keydir, controller):
    """A plain (no CURVE) peer on the keyed endpoint is refused and counted, not ignored."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(controller.endpoint)
        sock.send(b"hello?")
        await poll_until(lambda: controller.status()["auth"]["reasons"].get("bad_handshake", 0) >= 1, timeout=5)
    finally:
        sock.close(linger=0)
        ctx.term()
    assert controller.status()["auth"]["rejected"] >= 1
