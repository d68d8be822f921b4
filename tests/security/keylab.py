"""CURVE key directories and peers built from them, for the security tests."""

from __future__ import annotations

from pathlib import Path

from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient, Credentials
from gaffer.common import keys
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness

FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)
AUTHORIZED_AGENTS = ("node1", "node2")
AUTHORIZED_CLIENTS = ("admin",)


def make_keydir(tmp_path: Path) -> Path:
    """A controller key directory: agents node1 and node2 and client admin authorized;
    keys for an unknown agent (intruder) and client (stranger) made but not authorized."""
    root = tmp_path / "keys"
    keys.generate(root, "controller")
    for name in (*AUTHORIZED_AGENTS, "intruder"):
        keys.generate(tmp_path / "agent-keys", name)
    for name in (*AUTHORIZED_CLIENTS, "stranger"):
        keys.generate(tmp_path / "client-keys", name)
    (root / "agents").mkdir()
    (root / "clients").mkdir()
    for name in AUTHORIZED_AGENTS:
        (root / "agents" / f"{name}.key").write_bytes((tmp_path / "agent-keys" / f"{name}.key").read_bytes())
    for name in AUTHORIZED_CLIENTS:
        (root / "clients" / f"{name}.key").write_bytes((tmp_path / "client-keys" / f"{name}.key").read_bytes())
    return root


def agent_settings(tmp_path: Path, controller: Controller, key: str, node: str, keydir: Path) -> LinkSettings:
    return LinkSettings(
        controller=controller.endpoint, node=node, labels={}, state_dir=tmp_path / f"state-{key}-{node}",
        keys=keys.load_keypair(tmp_path / "agent-keys" / f"{key}.key_secret"),
        controller_key=keys.load_public(keydir / "controller.key"),
        heartbeat=0.1, timeout=0.5,
    )


def client(tmp_path: Path, controller: Controller, name: str, keydir: Path, folder: str = "client-keys") -> AsyncClient:
    creds = Credentials(
        keys.load_keypair(tmp_path / folder / f"{name}.key_secret"), keys.load_public(keydir / "controller.key")
    )
    return AsyncClient(controller.endpoint, creds, timeout=1.0)


class RawAgent:
    """A hand-driven agent socket with a real agent key: says hello, then sends whatever the
    test wants, as a compromised agent would."""

    def __init__(self, tmp_path: Path, controller: Controller, key: str, keydir: Path) -> None:
        import zmq
        import zmq.asyncio

        from gaffer.common.transport import make_curve_client

        self._ctx = zmq.asyncio.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        make_curve_client(
            self.sock, keys.load_keypair(tmp_path / "agent-keys" / f"{key}.key_secret"),
            keys.load_public(keydir / "controller.key"),
        )
        self.sock.connect(controller.endpoint)
        self.node = key
        self.seq = 0

    def send(self, kind: str, body: dict) -> None:
        from gaffer.common import protocol

        self.seq += 1
        self.sock.send(protocol.encode(kind, self.seq, body))

    async def hello(self) -> None:
        """Register as this key's node and wait for the welcome."""
        import asyncio

        from gaffer.common import protocol

        self.send("hello", {
            "node": self.node, "labels": {}, "cpus": 1, "memory": 0, "version": "x",
            "protocol": protocol.PROTOCOL_VERSION, "agent_id": "raw-" + self.node,
            "incarnation": "1", "generation": 0, "instances": [],
        })
        while True:
            frame = await asyncio.wait_for(self.sock.recv(), 5)
            if protocol.decode(frame, protocol.CONTROLLER_TO_AGENT).kind == "welcome":
                return

    def close(self) -> None:
        self._ctx.destroy(linger=0)
