"""ZAP: who may connect, and as whom.

libzmq asks this handler about every CURVE handshake on the controller's sockets. A key found
in the agents directory authenticates as ``agent:<node>`` (the file name is the node it is bound
to), one in the clients directory as ``client:<name>``. That string becomes the ZMQ ``User-Id``
of every message the peer sends, which is the only identity the controller trusts. Unknown keys
are refused, logged once per key fingerprint, and counted.

Refusals are counted by reason (``AuthStats.reasons``, shown by ``gafferctl status``):

    unknown_key     a CURVE handshake with a key in neither directory (this handler says no)
    no_key          a ZAP request without a CURVE key
    bad_handshake   the handshake failed before ZAP was asked: a peer without CURVE, or one
                    that took another controller's public key (libzmq reports these only
                    through a socket monitor: ``watch``)
    wrong_node      an agent key saying hello as another node (counted by the controller's
                    hello handling, ``AgentMessages``, and merged into the status)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import zmq
import zmq.asyncio
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from gaffer.common.keys import AuthorizedKeys, fingerprint
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.controller.auth")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
AGENT = "agent"
CLIENT = "client"


def role_of(user_id: str | None) -> tuple[str, str] | None:
    """``agent:node1`` -> (``agent``, ``node1``); None for anything else."""
    if not user_id:
        return None
    role, sep, name = user_id.partition(":")
    if not sep or role not in (AGENT, CLIENT) or not name:
        return None
    return role, name


UNKNOWN_KEY = "unknown_key"
NO_KEY = "no_key"
BAD_HANDSHAKE = "bad_handshake"
WRONG_NODE = "wrong_node"
HANDSHAKE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
"""What a monitor reports of handshakes that failed before ZAP (its own refusals are
EVENT_HANDSHAKE_FAILED_AUTH, counted by the handler instead)."""


@dataclass
class AuthStats:
    accepted: int = 0
    rejected: int = 0
    """Every refusal, whatever the reason (the sum of ``reasons``)."""
    rejected_keys: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def refused(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class ZapHandler:
    """Answers ZAP requests for the domains it is given, from authorized-key directories.

    ``domains`` maps a ZAP domain to the roles it admits: the controller's main socket admits
    agents and clients, the event socket only clients.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        agents: AuthorizedKeys,
        clients: AuthorizedKeys,
        domains: dict[str, tuple[str, ...]],
    ) -> None:
        self._ctx = ctx
        self._keys = {AGENT: agents, CLIENT: clients}
        self._domains = domains
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None
        self._watches: list[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket, asyncio.Task]] = []
        self.stats = AuthStats()

    def start(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def watch(self, sock: zmq.asyncio.Socket, what: str) -> None:
        """Count the handshakes on ``sock`` that fail before ZAP is asked (``bad_handshake``),
        from a monitor this handler owns (``stop`` ends it)."""
        monitor = sock.get_monitor_socket(HANDSHAKE_FAILURES)
        task = asyncio.get_running_loop().create_task(self._count_handshakes(monitor, what))
        self._watches.append((sock, monitor, task))

    async def _count_handshakes(self, monitor: zmq.asyncio.Socket, what: str) -> None:
        seen = 0
        while True:
            frames = await monitor.recv_multipart()
            try:
                event = parse_monitor_message(frames)
            except Exception:
                continue
            if not event["event"] & HANDSHAKE_FAILURES:
                continue
            self.stats.refused(BAD_HANDSHAKE)
            seen += 1
            level = logging.WARNING if seen == 1 else logging.DEBUG
            log.log(level, "refused a peer on the %s socket: the CURVE handshake failed (error 0x%x: no "
                    "CURVE, or another controller's public key)", what, event["value"])

    async def stop(self) -> None:
        for sock, monitor, task in self._watches:
            await cancel_and_wait(task)
            if not sock.closed:
                sock.disable_monitor()
            monitor.close(linger=0)
        self._watches.clear()
        await cancel_and_wait(self._task)
        if self._sock is not None:
            self._sock.close(linger=0)

    async def _serve(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                reply = self._answer(frames)
            except Exception:
                log.exception("malformed ZAP request dropped")
                continue
            await self._sock.send_multipart(reply)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        routing, empty, version, request_id, domain, address, _identity, mechanism, *creds = frames
        head = [routing, empty, version, request_id]
        roles = self._domains.get(domain.decode(errors="replace"))
        if version != b"1.0" or roles is None:
            return head + [b"400", b"unknown ZAP domain", b"", b""]
        if mechanism != b"CURVE" or not creds or len(creds[0]) != 32:
            self._reject(None, address, "a CURVE key is required", NO_KEY)
            return head + [b"400", b"a CURVE key is required", b"", b""]
        public = z85.encode(creds[0])
        for role in roles:
            name = self._keys[role].name_of(public)
            if name is not None:
                self.stats.accepted += 1
                return head + [b"200", b"OK", f"{role}:{name}".encode(), b""]
        self._reject(public, address, "key not authorized", UNKNOWN_KEY)
        return head + [b"400", b"key not authorized", b"", b""]

    def _reject(self, public: bytes | None, address: bytes, reason: str, code: str) -> None:
        self.stats.refused(code)
        key = fingerprint(public) if public is not None else "no-key"
        seen = self.stats.rejected_keys.get(key, 0)
        if len(self.stats.rejected_keys) < 1024 or seen:
            self.stats.rejected_keys[key] = seen + 1
        level = logging.WARNING if not seen else logging.DEBUG
        log.log(level, "refused peer %s from %s: %s", key, address.decode(errors="replace"), reason)
