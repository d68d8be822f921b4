"""A drain paced by readiness, on real processes across two agents: instances with a check
leave the drained node one at a time (update.max_unavailable = 1), each only once the last
replacement is ready on the other node, and ``drain --wait`` ends only when they all serve
there. Readiness is a file per node that the test creates when it chooses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gaffer.cli import waiting
from gaffer.cli.waitgoal import Goal
from gaffer.common.bus import Subscription
from gaffer.testing import next_event

COUNT = 3


def slow(flags: Path) -> dict:
    """Sleepers that are ready once ``flags/<their node>`` exists."""
    return {
        "name": "slow", "cmd": "sleep", "args": ["300"], "numprocesses": COUNT, "startsecs": 0,
        "graceful_timeout": 1, "env": {"FLAGS": str(flags)}, "update": {"max_unavailable": 1},
        "health": {"type": "exec", "command": "sh -c 'test -e \"$FLAGS/$GAFFER_NODE\"'",
                   "interval": 0.1, "timeout": 0.1, "start_period": 60},
    }


async def test_drain_moves_checked_instances_one_ready_replacement_at_a_time(cluster, tmp_path):
    """drain n1 --wait: the first instance moves to n2 and waits there, not ready, while the
    other two stay on n1 and the drain waits; once n2's instances can be ready, they move one
    by one, never more than one out of service, and the drain ends done with all ready on n2."""
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "n1").touch()
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[slow(flags)])
    status, message = await waiting.wait_for(cluster.client, "slow", Goal(ready=True), 30)
    assert status == waiting.REACHED, message
    await cluster.start_agent("n2")
    events: Subscription = cluster.controller.hub.bus.subscribe("proc.slow.")
    ready = {("n1", f"slow.{o}") for o in range(1, COUNT + 1)}
    fewest = COUNT
    try:
        drain = asyncio.ensure_future(cluster.call("drain", node="n1", wait=30, timeout=40))
        first = await next_event(events, "proc.slow.running", lambda e: e.data["node"] == "n2", timeout=15)
        assert not drain.done()
        assert sum(map(len, cluster.controller.cluster.by_node("n1").values())) == COUNT - 1
        ready.discard(("n1", first.data["id"]))
        (flags / "n2").touch()

        async def follow() -> None:
            nonlocal fewest
            async for event in events:
                key = (event.data["node"], event.data["id"])
                if event.topic.endswith(".ready"):
                    ready.add(key)
                else:
                    ready.discard(key)
                fewest = min(fewest, len(ready))
                if {node for node, _ in ready} == {"n2"} and len(ready) == COUNT:
                    return

        await asyncio.wait_for(follow(), 30)
        result = await asyncio.wait_for(drain, 30)
    finally:
        events.close()
    assert result == {"node": "n1", "done": True, "remaining": 0}
    assert fewest >= COUNT - 1, fewest
    rows = await cluster.call("ps", name="slow")
    assert {(r["node"], r["ready"]) for r in rows} == {("n2", True)}, rows
