"""The controller's ROUTER endpoint: sessions, identities, sequence numbers, bad messages.

Agents and clients connect DEALER sockets to one ROUTER. Each peer (routing id) gets a
``Session`` whose role and name come from the authenticated key (ZAP ``User-Id``) when CURVE is
on; without keys (``--insecure``), from what the peer first sends. Every message is decoded
strictly for its role; anything malformed, unauthenticated, out of role, or a replay is dropped
and counted, never acted on, and never raises out of the receive loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from gaffer.common import protocol
from gaffer.common.badmsg import BadMessages
from gaffer.common.errors import ProtocolError
from gaffer.common.protocol import Message
from gaffer.common.transport import Frame, MessageChannel, peer_address, user_id
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.auth import AGENT, CLIENT, role_of

log = logging.getLogger("gaffer.controller.server")

MAX_SESSIONS = 20_000
SLICE = 0.004
REPLY_LINGER_MS = 1000
"""A stopping controller's last replies (``Requests.stop``) get this long to be delivered."""
"""Seconds of message handling before the loop gets a turn (timers, the reconcile, clients)."""
FROM_ANYONE = protocol.AGENT_TO_CONTROLLER | protocol.CLIENT_TO_CONTROLLER


@dataclass
class Session:
    peer: bytes
    role: str | None
    name: str | None
    address: str | None
    last_seq: int = 0
    out_seq: int = 0
    gaps: int = 0

    @property
    def label(self) -> str:
        who = f"{self.role}:{self.name}" if self.role and self.name else self.peer.hex()
        return f"{who}@{self.address or '?'}"


class Handler(Protocol):
    def on_agent(self, session: Session, message: Message) -> None: ...

    def on_client(self, session: Session, message: Message) -> None: ...


class PeerServer:
    def __init__(self, channel: MessageChannel, handler: Handler, secure: bool) -> None:
        """``channel``: the ROUTER's (``transport.Channel``), or an in-memory one in tests."""
        self._channel = channel
        self._handler = handler
        self._secure = secure
        self._sessions: collections.OrderedDict[bytes, Session] = collections.OrderedDict()
        self._task: asyncio.Task | None = None
        self.bad = BadMessages()
        self.replays = 0
        self.evicted = 0
        """Sessions forgotten to stay within MAX_SESSIONS (their peers must say hello again)."""
        self.received_kinds: dict[str, int] = {}
        self.sent_kinds: dict[str, int] = {}
        """Messages handed on and sent, by kind (bounded by the protocol's kinds; /metrics)."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Stop receiving; the replies already queued get REPLY_LINGER to reach their peers."""
        await cancel_and_wait(self._task)
        self._channel.close(linger=REPLY_LINGER_MS)

    def send(self, session: Session, kind: str, body: dict) -> bool:
        session.out_seq += 1
        frame = protocol.encode(kind, session.out_seq, body)
        if not self._channel.send([session.peer, frame]):
            return False
        self.sent_kinds[kind] = self.sent_kinds.get(kind, 0) + 1
        return True

    def forget(self, peer: bytes) -> None:
        self._sessions.pop(peer, None)

    def session(self, peer: bytes) -> Session | None:
        return self._sessions.get(peer)

    @property
    def stats(self) -> dict:
        return {
            "received": self._channel.received,
            "sent": self._channel.sent,
            "send_dropped": self._channel.send_dropped,
            "replays": self.replays,
            "sessions": len(self._sessions),
            "sessions_evicted": self.evicted,
            "bad_messages": self.bad.snapshot(),
        }

    async def _serve(self) -> None:
        """Drain and handle messages, yielding to the loop every SLICE seconds of work so a
        burst (a thousand agents reporting at once) never stalls timers and clients."""
        clock = time.monotonic  # the loop's time() stands still while a callback runs
        while True:
            batch = await self._channel.recv_batch()
            started = clock()
            for frames in batch:
                try:
                    self._receive(frames)
                except Exception:
                    log.exception("message handling failed; message dropped")
                    self.bad.record("?", "handler_error", "see the traceback above")
                if clock() - started > SLICE:
                    await asyncio.sleep(0)
                    started = clock()

    def _receive(self, frames: Sequence[Frame]) -> None:
        if len(frames) != 2:
            peer = frames[0].bytes.hex() if frames else "?"
            self.bad.record(peer, protocol.BAD_ENVELOPE, f"expected 2 frames, got {len(frames)}")
            return
        peer, payload = frames[0].bytes, frames[1]
        session = self._session(peer, payload)
        if session is None:
            return
        allowed = self._allowed(session)
        try:
            message = protocol.decode(payload.buffer, allowed)
        except ProtocolError as exc:
            self.bad.record(session.label, exc.reason, exc.message)
            return
        role = session.role or (CLIENT if message.kind == "request" else AGENT)
        if message.kind != "hello" and message.seq <= session.last_seq:
            self.replays += 1
            self.bad.record(session.label, "replay", f"seq {message.seq} after {session.last_seq}")
            return
        if message.seq > session.last_seq + 1 and session.last_seq and message.kind != "hello":
            session.gaps += 1
        session.last_seq = message.seq
        if session.role is None:
            session.role = role
        kinds = self.received_kinds
        kinds[message.kind] = kinds.get(message.kind, 0) + 1
        if role == AGENT:
            self._handler.on_agent(session, message)
        else:
            self._handler.on_client(session, message)

    def _session(self, peer: bytes, payload: Frame) -> Session | None:
        session = self._sessions.get(peer)
        identity = user_id(payload)
        if session is not None:
            if self._secure and identity != f"{session.role}:{session.name}":
                self.bad.record(session.label, "identity_mismatch", f"User-Id {identity!r}")
                return None
            self._sessions.move_to_end(peer)
            return session
        role = name = None
        if self._secure:
            parsed = role_of(identity)
            if parsed is None:
                self.bad.record(peer.hex(), "unauthenticated", f"User-Id {identity!r}")
                return None
            role, name = parsed
        session = Session(peer=peer, role=role, name=name, address=peer_address(payload))
        self._sessions[peer] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
            self.evicted += 1
        return session

    def _allowed(self, session: Session) -> frozenset[str]:
        if session.role == AGENT:
            return protocol.AGENT_TO_CONTROLLER
        if session.role == CLIENT:
            return protocol.CLIENT_TO_CONTROLLER
        return FROM_ANYONE
