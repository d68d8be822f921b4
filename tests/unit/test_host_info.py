"""How each host keeps its processes, from an agent's hello/heartbeat to nodes and status."""

from __future__ import annotations

from gaffer.cli.tables import nodes_table, status_text
from gaffer.common.protocol import PROTOCOL_VERSION
from gaffer.controller.registry import NodeTable

HELLO = {
    "node": "n1", "labels": {}, "cpus": 2, "memory": 1, "version": "0", "protocol": PROTOCOL_VERSION,
    "agent_id": "a", "incarnation": "i", "generation": 0, "instances": [],
}
BEAT = {"load": [0.0, 0.0, 0.0], "digest": "", "instances": 0, "generation": 0}


def test_hello_and_changed_heartbeats_set_what_nodes_show() -> None:
    """The host field of hello is kept; a heartbeat with one replaces it, one without keeps it."""
    table = NodeTable()
    table.hello({**HELLO, "host": {"tracking": "cgroup", "keeper": "running"}}, b"p", None, 1.0)
    node = table.get("n1")
    assert node is not None
    assert node.view(2.0)["tracking"] == "cgroup" and node.view(2.0)["keeper"] == "running"
    table.heartbeat(node, {**BEAT, "host": {"tracking": "cgroup", "keeper": "restarting"}}, 2.0)
    table.heartbeat(node, BEAT, 3.0)
    assert node.view(3.0)["keeper"] == "restarting"
    assert table.host_counts() == {"tracking": {"cgroup": 1}, "keeper": {"restarting": 1}}


def test_an_agent_that_does_not_say_is_unknown() -> None:
    """An older agent without the field counts as unknown, never crashes anything."""
    table = NodeTable()
    table.hello(HELLO, b"p", None, 1.0)
    assert table.get("n1").view(1.0)["tracking"] is None
    assert table.host_counts() == {"tracking": {"unknown": 1}, "keeper": {"unknown": 1}}


def test_tables_show_tracking_and_keeper() -> None:
    """gafferctl nodes has tracking and keeper columns; status sums them up."""
    rows = [{"name": "n1", "state": "up", "tracking": "subreaper", "keeper": "restarting"}]
    text = nodes_table(rows)
    assert "TRACKING" in text.splitlines()[0] and "subreaper" in text and "restarting" in text
    status = {
        "controller": "c", "version": "0", "uptime": 1.0, "endpoint": "e", "events": "p",
        "secure": True, "fingerprint": "f", "nodes": {"up": 2},
        "hosts": {"tracking": {"cgroup": 1, "subreaper": 1}, "keeper": {"running": 2}},
    }
    assert "processes   tracked by cgroup on 1, subreaper on 1; fd keeper running on 2" in status_text(status)
