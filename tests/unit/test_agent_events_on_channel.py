"""The controller's side of agent event delivery: each numbered event handled once, acked,
a loss published once, and events a node made while it was down still admitted.

A real Controller and simulated agents over in-memory channels, on a fake clock (the harness
of ``test_controller_on_channel``).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from gaffer.common.bus import Event, Subscription
from gaffer.testing import template
from gaffer.testing.simagent import ChannelAgent
from test_controller_on_channel import LIVENESS, NODE_GRACE, Lab


@pytest.fixture
async def lab(tmp_path):
    lab = Lab(tmp_path / "data", nodes=3)
    await lab.start()
    yield lab
    await lab.stop()


def drained(sub: Subscription) -> list[Event]:
    out = []
    while (event := sub.get_nowait()) is not None:
        out.append(event)
    return out


def exit_event(seq: int, ident: str) -> dict[str, Any]:
    return {"seq": seq, "topic": "proc.web.exit", "ts": 1.0,
            "data": {"id": ident, "template": "web", "ordinal": int(ident.rpartition(".")[2]),
                     "ts": 1.0, "pid": 4000 + seq, "status": 0, "signal": None}}


def heard(agent: ChannelAgent) -> list[tuple[str, dict[str, Any]]]:
    """From now on, every message the controller sends ``agent`` (kind, body), as it arrives."""
    channel = agent.channel
    assert channel is not None
    drain = channel.drain
    got: list[tuple[str, dict[str, Any]]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        batch = drain(*args, **kwargs)
        for frames in batch:
            _, kind, _, body = msgpack.unpackb(frames[0].bytes)
            got.append((kind, body))
        return batch

    channel.drain = recording  # type: ignore[method-assign]
    return got


async def test_each_numbered_event_is_published_once_and_acked(lab: Lab):
    """A resent event at or below the node's events_upto is skipped; each message is acked
    with the highest seq handled; a new session's welcome carries it."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await cluster.apply([template("web", numprocesses=3)])
    await lab.settle()
    agent = lab.agents[0]
    ident = next(iter(agent.rows))
    sub = lab.controller.hub.bus.subscribe("proc.web.")
    got = heard(agent)

    agent.send("events", {"events": [exit_event(1, ident)]})
    await lab.settle()
    agent.send("events", {"events": [exit_event(1, ident), exit_event(2, ident)]})
    await lab.settle()

    assert [e.data["pid"] for e in drained(sub)] == [4001, 4002]
    assert [body["upto"] for kind, body in got if kind == "events_ack"] == [1, 2]
    assert lab.controller.agents is not None and lab.controller.agents.duplicates == 1
    agent.reconnect()
    got = heard(agent)
    await lab.settle()
    assert [body["events_upto"] for kind, body in got if kind == "welcome"] == [2]


async def test_a_restarted_agent_numbers_from_one_again(lab: Lab):
    """A new incarnation of the agent starts its seqs at 1: the controller forgets the old bar."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await cluster.apply([template("web", numprocesses=3)])
    await lab.settle()
    agent = lab.agents[0]
    ident = next(iter(agent.rows))
    agent.send("events", {"events": [exit_event(1, ident), exit_event(2, ident)]})
    await lab.settle()
    lab.fleet.incarnation = "restarted"
    agent.reconnect()
    got = heard(agent)
    await lab.settle()
    assert [body["events_upto"] for kind, body in got if kind == "welcome"] == [0]
    sub = lab.controller.hub.bus.subscribe("proc.web.")
    agent.send("events", {"events": [exit_event(1, ident)]})
    await lab.settle()
    assert [e.data["pid"] for e in drained(sub)] == [4001]


async def test_a_reported_loss_is_published_once_with_its_count(lab: Lab):
    """``lost`` in an events message becomes one node.<name>.events_lost with the count."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await cluster.apply([template("web", numprocesses=3)])
    await lab.settle()
    agent = lab.agents[0]
    ident = next(iter(agent.rows))
    sub = lab.controller.hub.bus.subscribe("node.")
    agent.send("events", {"events": [exit_event(5, ident)], "lost": 4})
    agent.send("events", {"events": [exit_event(6, ident)]})
    await lab.settle()
    lost = [(e.topic, e.data) for e in drained(sub) if e.topic.endswith(".events_lost")]
    assert lost == [(f"node.{agent.name}.events_lost", {"node": agent.name, "count": 4})]


async def test_events_made_while_down_are_admitted_after_new_assignments(lab: Lab):
    """A node comes back after its instances moved away; before it acks anything new, the
    controller sends it two assignments; the exit it resends for an instance it held when it
    went down is still its own (not dropped as not_assigned)."""
    cluster = lab.controller.cluster
    assert cluster is not None
    await lab.run_for(LIVENESS.startup_grace)
    await cluster.apply([template("web", numprocesses=6)])
    await lab.settle()
    back = lab.agents[1]
    ident = next(iter(back.rows))
    back.silence()
    await lab.run_for(LIVENESS.down_after + NODE_GRACE + LIVENESS.interval)
    assert cluster.lost == frozenset({"n1"}) and cluster.placement.get(("web", int(ident.split(".")[1]))) != "n1"

    back.reconnect()
    channel = back.channel
    assert channel is not None
    send = channel.send

    def no_acks(frames: list[bytes]) -> bool:
        """The agent resends before it acks anything of the new session: hold its acks."""
        return True if msgpack.unpackb(frames[0])[1] == "ack" else send(frames)

    channel.send = no_acks  # type: ignore[method-assign]
    await lab.settle()
    first = cluster.sent["n1"].generation
    await cluster.apply([template("web", numprocesses=6), template("db", numprocesses=3)])
    await lab.settle()
    assert cluster.sent["n1"].generation > first, "a second assignment since the hello"

    sub = lab.controller.hub.bus.subscribe("proc.web.")
    back.send("events", {"events": [exit_event(1, ident)]})
    await lab.settle()
    assert [(e.data["id"], e.data["node"]) for e in drained(sub)] == [(ident, "n1")]
    assert lab.controller.agents is not None
    assert lab.controller.agents.drops.snapshot()["total"] == 0
