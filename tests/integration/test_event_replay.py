"""Replay, snapshot and prev chains against a real controller over real sockets (issue 10).

The controller runs in this process on unix sockets; events are published through its hub,
clients ask over the ROUTER and a raw SUB socket reads the XPUB, as any subscriber would.
"""

from __future__ import annotations

import pytest
import zmq
import zmq.asyncio

from gaffer.common import protocol
from gaffer.common.errors import InvalidArgument
from gaffer.testing import poll_until
from inproc import Cluster


async def publish(cluster: Cluster, topics: list[str]) -> list[int]:
    assert cluster.controller is not None
    return [cluster.controller.hub.publish(topic, {"n": index}) for index, topic in enumerate(topics)]


async def test_replay_by_prefix_pages_with_limit_and_upto(cluster: Cluster):
    """Replay gives only matching events after since, ascending; limit cuts at upto, and
    asking again from upto gives the rest once."""
    await cluster.start_controller()
    horizon = (await cluster.call("status"))["event_log"]["horizon"]
    topics = ["proc.web.spawn", "node.a.up", "proc.web.exit", "output.web.1.out", "proc.db.spawn", "node.a.down"]
    positions = await publish(cluster, topics * 3)
    wanted = [p for p, t in zip(positions, topics * 3) if t.startswith(("proc.web.", "node."))]
    first = await cluster.call("replay", since=horizon, prefixes=["proc.web.", "node."], limit=5)
    assert [e["seq"] for e in first["events"]] == wanted[:5]
    assert first["upto"] == wanted[4] and not first["too_old"]
    rest = await cluster.call("replay", since=first["upto"], prefixes=["proc.web.", "node."], limit=100)
    assert [e["seq"] for e in rest["events"]] == wanted[5:]
    assert rest["upto"] == rest["last"] == positions[-1]
    assert all(e["topic"].startswith(("proc.web.", "node.")) for e in first["events"] + rest["events"])


async def test_replay_refuses_bad_arguments_with_the_field(cluster: Cluster):
    """A replay without prefixes is refused, naming the argument."""
    await cluster.start_controller()
    with pytest.raises(InvalidArgument, match="prefixes"):
        await cluster.call("replay", since=0)


async def test_published_events_carry_prev_per_subscribed_prefix(cluster: Cluster):
    """A subscriber of two prefixes gets, on each event, the previous matching position of
    each prefix it matches, so filtered-out events never look missed."""
    controller = await cluster.start_controller()
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.connect(controller.pub_endpoint)
        sub.subscribe(b"proc.")
        sub.subscribe(b"proc.web.")
        await poll_until(lambda: controller.hub.holds("proc.") and controller.hub.holds("proc.web."), what="subscribed")
        positions = await publish(cluster, ["proc.web.spawn", "node.a.up", "proc.db.spawn", "proc.web.exit"])
        got = []
        for _ in range(3):
            _, frame = await sub.recv_multipart()
            got.append(protocol.decode(frame, protocol.PUBLISHED).body)
        web1, db, web2 = positions[0], positions[2], positions[3]
        assert [body["seq"] for body in got] == [web1, db, web2]
        assert got[0]["prev"] == {"proc.": 0, "proc.web.": 0}
        assert got[1]["prev"] == {"proc.": web1}
        assert got[2]["prev"] == {"proc.": db, "proc.web.": web1}
    finally:
        sub.close(linger=0)
        ctx.term()


async def test_snapshot_lists_nodes_templates_and_instances_at_one_position(cluster: Cluster):
    """Snapshot pages hold the rows nodes, templates and ps list, all at the first page's position."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[
        {"name": "web", "cmd": "sleep", "args": ["300"], "numprocesses": 2, "startsecs": 0},
    ])
    await cluster.wait_running(2)
    pages = [await cluster.call("snapshot", limit=2)]
    while pages[-1]["continue"] is not None and len(pages) < 10:
        pages.append(await cluster.call("snapshot", limit=2, **{"continue": pages[-1]["continue"]}))
    items = [item for page in pages for item in page["items"]]
    assert {page["position"] for page in pages} == {pages[0]["position"]}
    assert [(i["kind"], i["data"].get("name") or i["data"]["id"]) for i in items] == [
        ("node", "n1"), ("template", "web"), ("instance", "web.1"), ("instance", "web.2"),
    ]
    ps = {row["id"]: row for row in await cluster.call("ps")}
    for item in items[2:]:
        assert set(item["data"]) == set(ps[item["data"]["id"]])
        assert item["data"]["pid"] == ps[item["data"]["id"]]["pid"]
