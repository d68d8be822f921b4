"""Talking to agents: the session each node has on the ROUTER, and what the controller sends.

``Links`` knows, per node, whether it has a session it can be sent to, and sends: ``assign``
(for the cluster), ``beat`` once per interval, ``watch`` (the output prefixes someone
subscribes to), ``refuse``, and ``command``, whose ``result`` it matches with the waiting
caller by id. It decides nothing about what to send.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable, Iterable

from gaffer.common.errors import ControllerUnreachable, InvalidRequest, from_wire
from gaffer.controller.liveness import NodeState
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.server import PeerServer, Session
from gaffer.controller.steps import Steps

COMMAND_TIMEOUT = 5.0
BEAT_STEP = 100
"""Nodes sent a ``beat`` between two chances to pause."""


class Links:
    def __init__(self, server: PeerServer, nodes: NodeTable) -> None:
        self._server = server
        self._nodes = nodes
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[str, asyncio.Future]] = {}

    def node(self, name: str) -> Node | None:
        return self._nodes.nodes.get(name)

    def all(self) -> Iterable[Node]:
        """Every node the controller knows, connected or not."""
        return self._nodes.nodes.values()

    def session_of(self, node: Node) -> Session | None:
        if node.peer is None:
            return None
        return self._server.session(node.peer)

    def send(self, session: Session, kind: str, body: dict[str, Any]) -> bool:
        return self._server.send(session, kind, body)

    def refuse(self, session: Session, code: str, message: str) -> None:
        self.send(session, "refuse", {"code": code, "message": message})

    def send_assign(self, node: Node, body: dict[str, Any]) -> bool:
        session = self.session_of(node)
        if session is None:
            return False
        return self.send(session, "assign", body)

    def beat_steps(self, generation_of: Callable[[Node], int]) -> Steps[None]:
        """``beat`` with the node's current generation to every node that is not down, in
        steps of BEAT_STEP nodes (a thousand beats at once would hold the loop)."""
        for index, node in enumerate(list(self._nodes.nodes.values())):
            session = self.session_of(node)
            if session is not None and node.state is not NodeState.DOWN:
                self.send(session, "beat", {"generation": generation_of(node)})
            if index % BEAT_STEP == BEAT_STEP - 1:
                yield

    def send_watch(self, node: Node, prefixes: Iterable[str]) -> None:
        """Tell an agent which output topics have subscribers."""
        session = self.session_of(node)
        if session is None or node.state is NodeState.DOWN:
            return
        self.send(session, "command", {"id": 0, "op": "watch", "args": {"prefixes": sorted(prefixes)}})

    def send_stats_watch(self, node: Node, seconds: float) -> None:
        """Tell an agent to sample often for ``seconds``: someone looks (``statwatch.py``)."""
        session = self.session_of(node)
        if session is None or node.state is NodeState.DOWN:
            return
        self.send(session, "command", {"id": 0, "op": "stats_watch", "args": {"seconds": seconds}})

    def ask_report(self, session: Session) -> None:
        self.send(session, "command", {"id": 0, "op": "report", "args": {}})

    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = COMMAND_TIMEOUT) -> Any:
        """Ask ``node``'s agent to do ``op`` now; its result, or the error it reported."""
        session = self.session_of(node)
        if session is None or node.state is NodeState.DOWN:
            raise InvalidRequest(f"node {node.name} is not connected")
        command_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = (node.name, future)
        try:
            self.send(session, "command", {"id": command_id, "op": op, "args": args})
            async with asyncio.timeout(timeout):
                body = await future
        except TimeoutError:
            raise ControllerUnreachable(f"node {node.name} did not answer {op} within {timeout:g}s") from None
        finally:
            self._waiting.pop(command_id, None)
        if not body["ok"]:
            raise from_wire(body["error"])
        return body["result"]

    def result(self, node: Node, body: dict[str, Any]) -> None:
        """A command's result from ``node`` (a late one, or one from another node, is dropped)."""
        waiting = self._waiting.get(body["id"])
        if waiting is not None and waiting[0] == node.name and not waiting[1].done():
            waiting[1].set_result(body)

    def close(self) -> None:
        """The controller stops: whoever waits for a result stops waiting."""
        for _, future in self._waiting.values():
            if not future.done():
                future.cancel()
