"""An agent speaks only for itself: a real, authorized agent key cannot publish events or
output about other nodes, templates, or instances it was not given."""

from __future__ import annotations

import asyncio
import time

from gaffer.agent.agent import Agent
from gaffer.client import ReceivedEvent
from gaffer.testing import poll_until
from keylab import RawAgent, agent_settings, client


def _event(topic: str, **data) -> dict:
    return {"seq": 0, "topic": topic, "ts": time.time(), "data": data}


class Collector:
    """Every event a subscription delivers, gathered by a task the test owns."""

    def __init__(self, events) -> None:
        self.seen: list[ReceivedEvent] = []
        self._events = events
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self._events:
            self.seen.append(event)

    def has(self, topic: str) -> bool:
        return any(e.topic == topic for e in self.seen)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._events.aclose()


async def _marker(admin, collector: Collector, name: str) -> None:
    """Publish ``template.<name>.created`` and wait until the subscriber has it (its
    subscription may still be reaching the controller: retry with fresh markers)."""
    spec = {"cmd": "sleep", "args": ["300"], "numprocesses": 0}
    for attempt in range(50):
        marker = f"{name}{attempt}"
        await admin.call("apply", templates=[{"name": marker, **spec}])
        try:
            await poll_until(lambda: collector.has(f"template.{marker}.created"), timeout=0.2)
            return
        except AssertionError:
            continue
    raise AssertionError("the subscriber never received a marker event")


async def test_agent_cannot_speak_for_other_nodes_templates_or_instances(tmp_path, keydir, controller):
    """node2's key publishes node1 down, a template deleted and fake output of node1's web.1:
    subscribers never see them, the controller counts each drop by reason, and node2's events
    about its own instance still go through."""
    node1 = Agent(agent_settings(tmp_path, controller, "node1", "node1", keydir))
    await node1.start()
    admin = client(tmp_path, controller, "admin", keydir)
    evil = RawAgent(tmp_path, controller, "node2", keydir)
    collector = Collector(admin.events([""]))
    try:
        await asyncio.wait_for(node1.connected.wait(), 5)
        await evil.hello()
        spec = {"cmd": "sleep", "args": ["300"], "startsecs": 0}
        await admin.call("apply", templates=[
            {"name": "web", **spec, "placement": {"nodes": ["node1"]}},
            {"name": "mine", **spec, "placement": {"nodes": ["node2"]}},
        ])
        await poll_until(lambda: controller.cluster.placement.get(("mine", 1)) == "node2", timeout=5)
        await _marker(admin, collector, "before")
        collector.seen.clear()

        evil.send("events", {"events": [
            _event("node.node1.down", node="node1"),
            _event("template.web.deleted", name="web"),
            _event("output.web.1.out", id="web.1", template="web", stream="out", text="FAKE"),
            _event("proc.web.exit", id="web.1", template="web", status=0, signal=None),
            _event("proc.mine.failed", id="mine.1", template="mine", ordinal=1, pid=None, ts=1.0,
                   reason="forged", scope="cluster", node="node1"),
            _event("output.mine.1.out", id="mine.1", template="mine", stream="out", line=1, text="mine"),
        ]})
        await poll_until(lambda: controller.status()["agent_events_dropped"]["total"] >= 4, timeout=5, what="the drops")
        await _marker(admin, collector, "after")

        seen = collector.seen
        topics = [e.topic for e in seen]
        assert "node.node1.down" not in topics
        assert "template.web.deleted" not in topics
        assert "output.web.1.out" not in topics and "proc.web.exit" not in topics
        own = [e for e in seen if e.topic.startswith(("proc.mine.", "output.mine."))]
        assert [(e.topic, e.data["node"]) for e in own] == [
            ("proc.mine.failed", "node2"), ("output.mine.1.out", "node2"),
        ]
        assert "scope" not in own[0].data
        reasons = controller.status()["agent_events_dropped"]["reasons"]
        assert reasons == {"foreign_topic": 2, "not_assigned": 2}
        status = await admin.call("status")
        assert status["agent_events_dropped"]["peers"]["agent:node2"] == reasons
        assert controller.nodes.nodes["node1"].state.value == "up"
        assert "web" in controller.cluster.templates
    finally:
        await collector.close()
        evil.close()
        await admin.close()
        await node1.stop(stop_processes=True)
