"""The agent <-> controller link across real hosts (issue 3): registration, liveness under
kill, freeze and partition, controller restart, and CURVE keys.

The daemons are the real ``gaffer-controller`` and ``gaffer-agent`` in network namespaces;
what runs is read from /proc and the start journal (see clusterlab). The plain cluster is
shared by the module and reset between tests; the CURVE test builds its own.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

import pytest

from clusterlab import POLL, ClusterLab, holds_for, make_keys, pids
from gaffer.common.errors import ControllerUnreachable
from gaffer.common.keys import fingerprint, load_public
from netlab import NetLab, wait_for

AGENTS = {"n1": {"zone": "a", "disk": "ssd"}, "n2": {"zone": "a"}, "n3": {"zone": "b"}}
SLACK = 1.0
"""Room for a loaded CI machine on top of a time bound the product promises."""


def test_agents_register_with_their_labels(cluster: ClusterLab) -> None:
    """Every agent appears up, from its own host's address, with the labels it was given."""
    nodes = cluster.nodes()
    assert set(nodes) == set(AGENTS)
    for name, labels in AGENTS.items():
        assert nodes[name]["state"] == "up"
        assert nodes[name]["labels"] == labels
        assert cluster.agents[name].host.address in (nodes[name]["address"] or "")
    status = cluster.call("status")
    assert status["nodes"] == {"up": 3, "suspect": 0, "down": 0}
    assert status["secure"] is False


FAULTS: dict[str, tuple[Callable[[ClusterLab, str], float], Callable[[ClusterLab, str], None]]] = {
    "kill": (ClusterLab.kill_agent, ClusterLab.start_agent),
    "freeze": (ClusterLab.freeze, ClusterLab.thaw),
    "partition": (ClusterLab.partition, ClusterLab.heal),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_silent_agent_goes_down_within_the_timeout_and_resyncs_when_back(cluster: ClusterLab, fault: str) -> None:
    """A killed, frozen or cut-off agent is down within the timeout; back, it resyncs what runs."""
    cluster.apply(
        cluster.spec("mine", 2, placement={"nodes": ["n1"]}),
        cluster.spec("theirs", 2, placement={"nodes": ["n2", "n3"]}),
    )
    before = pids(cluster.wait_settled("mine", 2))
    theirs = pids(cluster.wait_settled("theirs", 2))
    mark, journal = cluster.event_mark(), cluster.journal_mark()
    cause, cure = FAULTS[fault]
    at = cause(cluster, "n1")

    def went_down() -> dict | None:
        return next((e for e in cluster.events(mark) if e["topic"] == "node.n1.down"), None)

    down = wait_for(went_down, 10, POLL, what="n1 to be declared down")
    timing = cluster.timing
    took = down["ts"] - at
    assert took <= timing.down_after + SLACK, (
        f"n1 declared down {took:.2f}s after it went silent; timeout {timing.down_after}s"
    )
    assert [e["topic"] for e in cluster.events(mark) if e["topic"].startswith("node.n1.")] == [
        "node.n1.suspect", "node.n1.down",
    ]
    claimed = [row for row in cluster.ps("mine") if row["state"] == "running"]
    assert not claimed, f"the controller says a down node's instances run: {claimed}"
    assert pids({i: p[0] for i, p in cluster.by_id("mine").items()}) == before, "n1's processes stopped"
    cure(cluster, "n1")
    cluster.wait_nodes({"n1": "up"})
    assert pids(cluster.wait_settled("mine", 2)) == before
    assert pids(cluster.wait_settled("theirs", 2)) == theirs
    assert cluster.nodes()["n1"]["instances"] == 2
    assert cluster.starts(journal) == [], "a process was restarted"


def test_restarted_controller_is_rejoined_and_nothing_restarts(cluster: ClusterLab) -> None:
    """Every agent rejoins a controller restarted after SIGKILL; no process stops or starts."""
    cluster.apply(cluster.spec("web", 6))
    before = pids(cluster.wait_settled("web", 6))
    journal = cluster.journal_mark()
    old = cluster.call("ping")["controller"]
    killed = cluster.restart_controller()

    def rejoined() -> bool:
        try:
            nodes = cluster.nodes()
        except ControllerUnreachable:
            return False
        return all(
            nodes[name]["state"] == "up" and nodes[name]["connected_at"] > killed for name in AGENTS
        )

    wait_for(rejoined, 20, POLL, what="every agent to say hello to the new controller")
    assert cluster.call("ping")["controller"] != old
    assert pids(cluster.wait_settled("web", 6)) == before
    assert cluster.starts(journal) == []


def test_second_agent_claiming_a_live_name_is_refused(cluster: ClusterLab) -> None:
    """A second agent calling itself n1 is refused with a clear message; n1 keeps its session."""
    impostor = cluster.stray_agent("dup", "n1")
    impostor.start()
    try:
        wait_for(lambda: "name_taken" in impostor.log.read_text(), 15, POLL, what="the impostor to be refused")
        assert "held by another live agent" in impostor.log.read_text()
        nodes = cluster.nodes()
        assert nodes["n1"]["state"] == "up"
        assert cluster.agents["n1"].host.address in nodes["n1"]["address"]
    finally:
        impostor.kill(signal.SIGQUIT)


def test_curve_admits_authorized_peers_and_refuses_wrong_or_missing_keys(
    netlab: NetLab, tmp_path: Path
) -> None:
    """With CURVE, only the authorized agent registers; unknown keys are refused and counted."""
    keys = make_keys(tmp_path / "keys", agents=["good"], extra_agents=["bad"], extra_clients=["stranger"])
    cluster = ClusterLab(netlab, tmp_path / "lab", {}, keys=keys)
    cluster.add_agent("good", {"zone": "a"}, key="good")
    cluster.add_agent("bad", key="bad")
    cluster.add_agent("thief", key="good")
    cluster.add_agent("nokey")
    stranger = None
    try:
        cluster.start(wait=False)
        nodes = cluster.wait_nodes({"good": "up"})
        assert nodes["good"]["labels"] == {"zone": "a"}
        bad = fingerprint(load_public(keys.agent_secrets / "bad.key"))
        wait_for(lambda: cluster.call("status")["auth"]["rejected_keys"].get(bad), 15, POLL, what="bad's key to be refused")
        thief_log = cluster.agents["thief"].daemon.log
        wait_for(lambda: "node_mismatch" in thief_log.read_text(), 15, POLL, what="thief to be refused")
        stranger = cluster.client_as("stranger")
        with pytest.raises(ControllerUnreachable):
            stranger.call("ping", timeout=1.0)
        status = cluster.call("status")
        assert status["secure"] is True
        assert fingerprint(load_public(keys.client_secrets / "stranger.key")) in status["auth"]["rejected_keys"]

        def only_good() -> None:
            assert set(cluster.nodes()) == {"good"}

        holds_for(cluster.timing.down_after, only_good)
    finally:
        if stranger is not None:
            stranger.close()
        cluster.close()
