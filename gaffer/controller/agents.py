"""What agents tell the controller: hello, heartbeats, reports, events, acks and results.

``AgentMessages`` handles each message an agent's session delivers (after ``PeerServer`` has
checked who sent it, its schema and its sequence number) and keeps the node table in step:
a ``hello`` opens or resyncs a node, a heartbeat keeps it alive (and revives a suspect one),
a report replaces or updates what it runs, events are admitted and republished, acks and
failures go to the cluster. Node state changes (``set_state``, also called by the liveness
tick) are published and kick a reconcile.

An agent numbers its state events and resends, after each new ``welcome``, those not yet
acknowledged (``agent/outbox.py``). Here each numbered event is handled once: one at or below
the node's ``events_upto`` is a duplicate and skipped; every ``events`` message is answered
with ``events_ack``. Events an agent produced while its node was held down arrive after its
new hello, perhaps after a new assignment: admission still trusts the assignment the node held
when it went down (``_held``) until the node acks one sent since, which it can only do after
resending (an ack of a newer generation than the one held).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from gaffer.common import protocol, topics
from gaffer.common.badmsg import BadMessages
from gaffer.common.model import parse_instance_id, template_of
from gaffer.common.protocol import Message
from gaffer.controller.admission import BAD_PAYLOAD, admit_event, payload_problem, stamped
from gaffer.controller.changes import Changes
from gaffer.controller.cluster import Cluster
from gaffer.controller.hub import EventHub
from gaffer.controller.links import Links
from gaffer.controller.liveness import Liveness, NodeState
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.reconcile import Sent
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.server import Session
from gaffer.controller.statcache import StatCache
from gaffer.controller.statwatch import StatWatch

log = logging.getLogger("gaffer.controller")

FLAP_SUFFIX = ".flap"


class AgentMessages:
    def __init__(
        self,
        nodes: NodeTable,
        links: Links,
        cluster: Cluster,
        hub: EventHub,
        oneoffs: OneOffs,
        changes: Changes,
        liveness: Liveness,
        controller_id: str,
        clock: Callable[[], float],
        stat_cache: StatCache | None = None,
    ) -> None:
        """``stat_cache``: where the agents' ``stats`` pushes go (a new one by default)."""
        self._nodes = nodes
        self._links = links
        self._cluster = cluster
        self._hub = hub
        self._oneoffs = oneoffs
        self._changes = changes
        self._liveness = liveness
        self._id = controller_id
        self._clock = clock
        self._stats = stat_cache if stat_cache is not None else StatCache()
        self.stat_watch = StatWatch(clock, self._send_stats_watch_all)
        self._stats.on_look(self.stat_watch.looked)
        self.drops = BadMessages(logger=logging.getLogger("gaffer.controller.admission"))
        """Agent events refused by admission, per node and reason."""
        self.wrong_node = 0
        """Hellos refused because the peer's key is bound to another node (``auth.WRONG_NODE``)."""
        self.duplicates = 0
        """Resent agent events skipped: the controller had them already."""
        self.flaps: dict[str, int] = {}
        """Flapping suspensions announced (``proc.<t>.flap`` admitted), per template (/metrics)."""
        self._held: dict[str, Sent] = {}
        """Per node gone down, the assignment it held then (see the module docstring)."""

    def receive(self, session: Session, message: Message) -> None:
        kind, body = message.kind, message.body
        if kind == "hello":
            self._hello(session, body)
            return
        node = self._nodes.by_peer(session.peer)
        if node is None or node.state is NodeState.DOWN or (
            session.name is not None and node.name != session.name
        ):
            self._links.refuse(session, "hello_required", "say hello first: this controller does not know you")
            return
        now = self._clock()
        node.last_heard = now
        if kind == "heartbeat":
            revived = node.state is not NodeState.UP
            stale = self._nodes.heartbeat(node, body, now)
            if revived:
                self.set_state(node, NodeState.UP)
            if stale:
                self._links.ask_report(session)
        elif kind == "stats":
            self._stats.push(node.name, body, now)
        elif kind == "report":
            if body["full"]:
                self._nodes.replace_instances(node, body["instances"])
            else:
                self._nodes.update_instances(node, body["instances"], body["removed"])
            self._stats.discard(node.name, [
                *body["removed"], *(row["id"] for row in body["instances"] if row["pid"] is None)
            ])
            self._cluster.instances_reported(node, body["instances"])
            self._changes.notify()
        elif kind == "events":
            self._events(session, node, body)
        elif kind == "ack":
            held = self._held.get(node.name)
            if held is not None and body["generation"] > held.generation:
                del self._held[node.name]
            self._cluster.acked(node, body["generation"], body["errors"])
            self._changes.notify()
        elif kind == "result":
            self._links.result(node, body)

    def set_state(self, node: Node, state: NodeState) -> None:
        """A node's liveness changed: publish it, and let the cluster re-judge."""
        old, node.state = node.state, state
        log.info("node %s: %s -> %s", node.name, old, state)
        if state is NodeState.DOWN:
            self._nodes.disconnect(node)
            sent = self._cluster.sent.get(node.name)
            if sent is not None:
                self._held[node.name] = sent
        self._hub.publish(f"node.{node.name}.{state.value}", {"node": node.name, "previous": old.value})
        self._cluster.node_changed(node)
        self._changes.notify()

    def watch_prefixes(self) -> list[str]:
        """Output topics with subscribers (only explicit ``output.`` subscriptions count: a
        subscriber to everything does not pull every line of output)."""
        return sorted({
            p if p.startswith("output.") else "output."
            for p in (*self._hub.subscribed_prefixes(), *self._hub.local_prefixes()) if p.startswith("output")
        })

    def send_watch_all(self) -> None:
        prefixes = self.watch_prefixes()
        for node in self._nodes.nodes.values():
            self._links.send_watch(node, prefixes)

    def _send_stats_watch_all(self, seconds: float) -> None:
        for node in self._nodes.nodes.values():
            self._links.send_stats_watch(node, seconds)

    def _hello(self, session: Session, body: dict[str, Any]) -> None:
        if session.name is not None and body["node"] != session.name:
            self.wrong_node += 1
            log.log(
                logging.WARNING if self.wrong_node == 1 else logging.DEBUG,
                "refused hello for node %s from %s: its key is bound to node %s",
                body["node"], session.label, session.name,
            )
            self._links.refuse(
                session, "node_mismatch",
                f"this key is bound to node {session.name!r}, not {body['node']!r}",
            )
            return
        if body["protocol"] != protocol.PROTOCOL_VERSION:
            self._links.refuse(
                session, "unsupported_protocol",
                f"protocol {body['protocol']} is not served here (this controller speaks "
                f"{protocol.PROTOCOL_VERSION})",
            )
            return
        known = self._nodes.get(body["node"])
        if known is not None and known.agent_id != body["agent_id"]:
            self._held.pop(known.name, None)  # another agent made nothing under that assignment
        outcome = self._nodes.hello(body, session.peer, session.address, self._clock())
        if not outcome.accepted:
            log.warning("refused hello for node %s from %s: %s", body["node"], session.label, outcome.message)
            self._links.refuse(session, outcome.code, outcome.message)
            return
        node = self._nodes.get(body["node"])
        assert node is not None
        session.name = node.name
        log.info(
            "node %s %s from %s (%d instances)", node.name,
            "resynced" if outcome.resync else "registered", session.address, len(node.instances),
        )
        self._links.send(session, "welcome", {
            "node": node.name, "controller": self._id,
            "heartbeat": self._liveness.interval, "timeout": self._liveness.down_after,
            "events_upto": node.events_upto,
        })
        self._cluster.remember_node(node)
        self._hub.publish(f"node.{node.name}.up", {"node": node.name, "resync": outcome.resync})
        self._links.send_watch(node, self.watch_prefixes())
        if self.stat_watch.remaining():
            self._links.send_stats_watch(node, self.stat_watch.remaining())
        self._cluster.node_changed(node)
        self._cluster.instances_reported(node, body["instances"])
        self._changes.notify()

    def _events(self, session: Session, node: Node, body: dict[str, Any]) -> None:
        """Admit and republish each event not handled before, then acknowledge."""
        lost = body.get("lost", 0)
        if lost:
            log.warning("node %s: its agent lost %d events it could not deliver", node.name, lost)
            self._hub.publish(topics.node(node.name, "events_lost"), {"node": node.name, "count": lost})
        owns = OwnedBy(self._cluster, self._oneoffs, node.name, self._held.get(node.name))
        ended = False
        for event in body["events"]:
            seq = event["seq"]
            if seq:
                if seq <= node.events_upto:
                    self.duplicates += 1
                    continue
                node.events_upto = seq
            topic = event["topic"]
            refused = admit_event(topic, event["data"], owns)
            if refused is not None:
                self.drops.record(f"agent:{node.name}", refused, f"event {topic}")
                continue
            data = stamped(event["data"], node.name)
            problem = payload_problem(topic, data)
            if problem is not None:
                self.drops.record(f"agent:{node.name}", BAD_PAYLOAD, f"event {problem}")
                continue
            self._hub.publish(topic, data, event["ts"])
            if topic.endswith(FLAP_SUFFIX):
                template = topic[len("proc."):-len(FLAP_SUFFIX)]
                self.flaps[template] = self.flaps.get(template, 0) + 1
            if data.get("oneoff") and topic.endswith(".exit") and isinstance(data.get("id"), str):
                self._oneoffs.ended(node.name, data["id"], data)
                ended = True
        if ended:
            self._changes.notify()
        self._links.send(session, "events_ack", {"upto": node.events_upto})


class OwnedBy:
    """The instance ids node ``name`` may speak for (see ``admission``), looked up lazily:
    most event batches name a handful of instances, a node may hold thousands."""

    def __init__(self, cluster: Cluster, oneoffs: OneOffs, name: str, held: Sent | None = None) -> None:
        """``held``: an assignment the node held when it went down, also trusted."""
        self._cluster = cluster
        self._oneoffs = oneoffs
        self._name = name
        self._held = held

    def __contains__(self, ident: object) -> bool:
        parsed = parse_instance_id(ident)
        if parsed is None:
            return False
        slot = parsed.slot
        if slot is not None:
            if self._cluster.placement.get(slot) == self._name:
                return True
            sent = self._cluster.sent.get(self._name)
            if sent is not None and sent.assigns(*slot):
                return True
            return self._held is not None and self._held.assigns(*slot)
        if self._oneoffs.runs_on(self._name, str(parsed)):
            return True
        return self._oneoffs.starting_on(self._name, template_of(str(parsed)))
