"""The controller's table of nodes: who they are, where they connect from, what they run.

A node is created by its first ``hello`` and never forgotten by a disconnect: it goes suspect,
then down, and a later ``hello`` resyncs it. One name is one agent: a ``hello`` claiming a name
that another live agent holds (a different ``agent_id``) is refused; the same agent coming
back (a reconnect, or a restart: same ``agent_id``) takes its place, whatever its socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from gaffer.common.model import InstanceRow
from gaffer.common.protocol import instances_digest
from gaffer.controller.liveness import NodeState


@dataclass
class Node:
    name: str
    agent_id: str = ""
    incarnation: str = ""
    peer: bytes | None = None
    address: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    cpus: int = 0
    memory: int = 0
    version: str = ""
    state: NodeState = NodeState.DOWN
    last_heard: float = 0.0
    connected_at: float | None = None
    instances: dict[str, InstanceRow] = field(default_factory=dict)
    reports: int = 0
    """Bumped whenever ``instances`` changes (``NodeTable._refresh``): the ``ps`` rows kept in
    ``row_cache.py`` are rebuilt when a node's count moved, not on every listing."""
    digest_cache: str | None = None
    """``instances_digest`` of ``instances``, made when a heartbeat needs it (None: changed
    since): several reports between two heartbeats cost one digest, not one each."""
    load: tuple[float, ...] = (0.0, 0.0, 0.0)
    generation_acked: int = 0
    cordoned: bool = False
    draining: bool = False
    heartbeats: int = 0
    running: int = 0
    ready: int = 0
    """Of its instances, those it reports ready (serving)."""
    host: dict[str, str] = field(default_factory=dict)
    """How the agent keeps its processes (``tracking``, ``keeper``), if it says."""
    dropped: dict[str, int] = field(default_factory=dict)
    """What the agent had to drop (bounded queues), by kind, as its heartbeats last said."""
    events_upto: int = 0
    """The highest seq of the agent's state events handled (its ``events``), for this agent
    process (``agent_id`` and ``incarnation``): acknowledged, and the bar below which a resent
    event is a duplicate. In memory only: a new controller starts at 0 and agents resend all
    they hold unacknowledged."""

    def view(self, now: float) -> dict[str, Any]:
        running = self.running
        return {
            "name": self.name,
            "state": self.state.value,
            "address": self.address,
            "labels": dict(self.labels),
            "cordoned": self.cordoned,
            "draining": self.draining,
            "instances": running,
            "cpus": self.cpus,
            "memory": self.memory,
            "load": list(self.load),
            "version": self.version,
            "last_heartbeat": round(now - self.last_heard, 3) if self.last_heard else None,
            "connected_at": self.connected_at,
            "generation": self.generation_acked,
            "tracking": self.host.get("tracking"),
            "keeper": self.host.get("keeper"),
            "dropped": dict(self.dropped),
        }


@dataclass(frozen=True)
class HelloOutcome:
    accepted: bool
    code: str = ""
    message: str = ""
    resync: bool = False


class NodeTable:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._by_peer: dict[bytes, str] = {}
        self.restarts: dict[str, int] = {}
        """Restarts seen per template since this controller started (/metrics): what a row's
        ``restarts`` grew by since the node's previous row of that instance; a row new on its
        node brings all of its own. Never goes down (a reset row adds nothing)."""

    def get(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def by_peer(self, peer: bytes) -> Node | None:
        name = self._by_peer.get(peer)
        return self.nodes.get(name) if name is not None else None

    def hello(self, body: dict[str, Any], peer: bytes, address: str | None, now: float) -> HelloOutcome:
        """Open or resync the session of ``body["node"]`` on ``peer``, or refuse it."""
        name = body["node"]
        node = self.nodes.get(name)
        resync = node is not None
        if node is not None and node.peer not in (None, peer):
            same_agent = node.agent_id == body["agent_id"]
            if not same_agent and node.state is not NodeState.DOWN:
                return HelloOutcome(
                    False,
                    "name_taken",
                    f"node name {name!r} is held by another live agent (from {node.address or '?'}); "
                    "stop that agent or give this one another --name",
                )
        if node is None:
            node = self.nodes[name] = Node(name=name)
        if node.peer is not None and node.peer != peer:
            self._by_peer.pop(node.peer, None)
        node.peer = peer
        self._by_peer[peer] = name
        if (node.agent_id, node.incarnation) != (body["agent_id"], body["incarnation"]):
            node.events_upto = 0
        node.agent_id = body["agent_id"]
        node.incarnation = body["incarnation"]
        node.address = address
        node.labels = dict(body["labels"])
        node.cpus = body["cpus"]
        node.memory = body["memory"]
        node.version = body["version"]
        node.state = NodeState.UP
        node.last_heard = now
        node.connected_at = time.time()
        node.generation_acked = body["generation"]
        node.host = dict(body.get("host") or {})
        self.replace_instances(node, body["instances"])
        return HelloOutcome(True, resync=resync)

    def heartbeat(self, node: Node, body: dict[str, Any], now: float) -> bool:
        """Record a heartbeat; True when the node's digest disagrees with our view of it."""
        node.last_heard = now
        node.heartbeats += 1
        node.load = tuple(body["load"])
        if "host" in body:
            node.host = dict(body["host"])
        if "dropped" in body:
            node.dropped = dict(body["dropped"])
        return body["digest"] != self.digest(node)

    @staticmethod
    def digest(node: Node) -> str:
        """``instances_digest`` of what the node last reported (made once per change)."""
        if node.digest_cache is None:
            node.digest_cache = instances_digest(node.instances.values())
        return node.digest_cache

    def replace_instances(self, node: Node, instances: list[InstanceRow]) -> None:
        """The node runs exactly ``instances`` (rows the wire schema checked)."""
        self._count_restarts(node, instances)
        node.instances = {row["id"]: row for row in instances}
        self._refresh(node)

    def update_instances(
        self, node: Node, instances: list[InstanceRow], removed: Sequence[str] = ()
    ) -> None:
        """Changed rows, and the ids the node no longer has."""
        self._count_restarts(node, instances)
        for row in instances:
            node.instances[row["id"]] = row
        for ident in removed:
            node.instances.pop(ident, None)
        self._refresh(node)

    def _count_restarts(self, node: Node, rows: list[InstanceRow]) -> None:
        """Add what each row's restarts grew by since the node's previous row of it."""
        known = node.instances
        counts = self.restarts
        for row in rows:
            before = known.get(row["id"])
            grew = row["restarts"] - (before["restarts"] if before is not None else 0)
            if grew > 0:
                counts[row["template"]] = counts.get(row["template"], 0) + grew

    def _refresh(self, node: Node) -> None:
        node.digest_cache = None
        node.reports += 1
        node.running = sum(1 for row in node.instances.values() if row["pid"])
        node.ready = sum(1 for row in node.instances.values() if row.get("ready", False))

    def disconnect(self, node: Node) -> None:
        """Forget the node's socket (it must say hello again); keep what we know of it."""
        if node.peer is not None:
            self._by_peer.pop(node.peer, None)
        node.peer = None

    def counts(self) -> dict[str, int]:
        out = {state.value: 0 for state in NodeState}
        for node in self.nodes.values():
            out[node.state.value] += 1
        return out

    def dropped(self) -> dict[str, Any]:
        """What agents reported dropping (their bounded queues), in all and per node."""
        total: dict[str, int] = {}
        per_node: dict[str, dict[str, int]] = {}
        for node in self.nodes.values():
            if not any(node.dropped.values()):
                continue
            per_node[node.name] = dict(node.dropped)
            for kind, count in node.dropped.items():
                total[kind] = total.get(kind, 0) + count
        return {"total": total, "nodes": per_node}

    def host_counts(self) -> dict[str, dict[str, int]]:
        """Up nodes per process-tracking mode and per keeper state (for ``status``)."""
        out: dict[str, dict[str, int]] = {"tracking": {}, "keeper": {}}
        for node in self.nodes.values():
            if node.state is NodeState.DOWN:
                continue
            for key in ("tracking", "keeper"):
                value = node.host.get(key, "unknown")
                out[key][value] = out[key].get(value, 0) + 1
        return out
