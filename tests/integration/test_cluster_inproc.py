"""A controller and several agents in one process, over real ZMQ sockets on loopback.

The multi-host behaviour under faults (kill -9, SIGSTOP, partitions) is tested with real
daemons in network namespaces (tests/cluster); here the protocol, reconciliation and the API
are exercised quickly and deterministically.
"""

from __future__ import annotations

import asyncio

import pytest

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.common.errors import InvalidRequest, TemplateError, TemplateNotFound
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import next_event, pid_dead, poll_until
from inproc import spec



def _has_gaffer_env(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            return b"GAFFER_AGENT_ID=" in env.read()
    except OSError:
        return False


def per_node(running: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in running.values():
        counts[node] = counts.get(node, 0) + 1
    return counts


class TestLink:
    async def test_agents_register_and_heartbeat(self, cluster):
        """Agents say hello and appear up with their labels."""
        await cluster.start_controller()
        await cluster.start_agent("n1", {"zone": "a"})
        await cluster.start_agent("n2")
        nodes = {n["name"]: n for n in await cluster.call("nodes")}
        assert set(nodes) == {"n1", "n2"}
        assert nodes["n1"]["state"] == "up" and nodes["n1"]["labels"] == {"zone": "a"}
        status = await cluster.call("status")
        assert status["nodes"]["up"] == 2 and not status["secure"]

    async def test_second_agent_with_same_name_is_refused(self, cluster, tmp_path):
        """A different agent claiming a live node's name is refused with a clear reason."""
        await cluster.start_controller()
        await cluster.start_agent("dup")
        other = Agent(LinkSettings(
            controller=cluster.controller.endpoint, node="dup", labels={},
            state_dir=tmp_path / "other", heartbeat=0.1, timeout=0.5,
        ))
        await other.start()
        try:
            await poll_until(lambda: other.link.refusal is not None, timeout=5)
            code, message = other.link.refusal
            assert code == "name_taken" and "dup" in message
            assert not other.connected.is_set()
        finally:
            await other.stop(stop_processes=True)

    async def test_restarted_agent_adopts_its_processes_and_resyncs(self, cluster):
        """An agent restarted on the same state dir adopts what runs and restarts nothing."""
        await cluster.start_controller()
        agent = await cluster.start_agent("back")
        await cluster.call("apply", templates=[{**spec("kept", 2), "cmd": "sh", "args": ["-c", "while :; do echo tick; sleep 0.05; done"]}])
        await cluster.wait_running(2, "kept")
        before = {r["id"]: r["pid"] for r in await cluster.call("ps", name="kept")}
        await agent.stop()
        assert not any(pid_dead(p) for p in before.values())
        again = Agent(agent.settings)
        await again.start()
        cluster.agents["back"] = again
        await asyncio.wait_for(again.connected.wait(), 5)
        assert again.link.refusal is None and again.adopted == 2
        await cluster.wait_running(2, "kept")
        after = {r["id"]: r["pid"] for r in await cluster.call("ps", name="kept")}
        assert after == before
        await poll_until(
            lambda: any(line.text == "tick" for line in again.manager.output("kept.1")),
            timeout=5, what="output through the adopted pipes",
        )

    async def test_restarted_agent_adopts_a_process_that_hid_its_environment(self, cluster):
        """A process that replaced its environment is still found, through the spawn journal."""
        await cluster.start_controller()
        agent = await cluster.start_agent("hider")
        await cluster.call("apply", templates=[{**spec("hide", 1), "cmd": "sh", "args": ["-c", "exec env -i sleep 300"]}])
        await cluster.wait_running(1, "hide")
        [before] = [r["pid"] for r in await cluster.call("ps", name="hide")]
        await poll_until(lambda: not _has_gaffer_env(before), timeout=5)
        await agent.stop()
        again = Agent(agent.settings)
        await again.start()
        cluster.agents["hider"] = again
        await asyncio.wait_for(again.connected.wait(), 5)
        assert again.adopted == 1
        await cluster.wait_running(1, "hide")
        assert [r["pid"] for r in await cluster.call("ps", name="hide")] == [before]

    async def test_unknown_operation_and_bad_arguments_are_clear_errors(self, cluster):
        """The API names what is wrong."""
        await cluster.start_controller()
        with pytest.raises(InvalidRequest, match="unknown operation 'frobnicate'"):
            await cluster.call("frobnicate")
        with pytest.raises(InvalidRequest, match="templates"):
            await cluster.call("apply", templates="nope")
        with pytest.raises(TemplateNotFound):
            await cluster.call("get", name="missing")


class TestReconcile:
    async def test_apply_spreads_evenly_and_runs(self, cluster):
        """9 instances over 3 nodes run 3/3/3 and ps (fresh: asked of the agents now) shows
        every field."""
        await cluster.start_controller()
        for name in ("n1", "n2", "n3"):
            await cluster.start_agent(name)
        result = await cluster.call("apply", templates=[spec("web", 9)])
        assert result == [{"name": "web", "change": "created", "version": 1}]
        running = await cluster.wait_running(9, "web")
        assert per_node(running) == {"n1": 3, "n2": 3, "n3": 3}
        rows = await cluster.call("ps", name="web", fresh=True)
        for key in ("id", "template", "ordinal", "node", "pid", "state", "restarts", "cpu", "mem", "uptime", "age"):
            assert all(key in row for row in rows)
        assert all(row["mem"] for row in rows)

    async def test_apply_twice_changes_nothing(self, cluster):
        """Replaying apply is unchanged and no process restarts."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[spec("idem", 2)])
        await cluster.wait_running(2, "idem")
        pids = {r["id"]: r["pid"] for r in await cluster.call("ps", name="idem")}
        again = await cluster.call("apply", templates=[spec("idem", 2)])
        assert again[0]["change"] == "unchanged"
        assert {r["id"]: r["pid"] for r in await cluster.call("ps", name="idem")} == pids

    async def test_invalid_templates_are_refused_with_every_problem(self, cluster):
        """apply validates everything before storing anything."""
        await cluster.start_controller()
        with pytest.raises(TemplateError) as info:
            await cluster.call("apply", templates=[spec("ok", 1), {"name": "bad", "cmd": 3, "numprocesses": -1}])
        assert {(p.where, p.field) for p in info.value.problems} == {("bad", "cmd"), ("bad", "numprocesses")}
        assert await cluster.call("templates") == []

    async def test_scale_up_and_down(self, cluster):
        """scale N, +N and -N; scale-down removes the highest ordinals."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.start_agent("n2")
        await cluster.call("apply", templates=[spec("sc", 2)])
        await cluster.wait_running(2, "sc")
        assert (await cluster.call("scale", name="sc", count="+3"))["numprocesses"] == 5
        await cluster.wait_running(5, "sc")
        assert (await cluster.call("scale", name="sc", count="2"))["numprocesses"] == 2
        running = await cluster.wait_running(2, "sc")
        assert set(running) == {"sc.1", "sc.2"}
        with pytest.raises(InvalidRequest):
            await cluster.call("scale", name="sc", count="-5")

    async def test_lost_node_moves_its_instances(self, cluster):
        """A node that dies loses its ordinals to the others within grace."""
        await cluster.start_controller()
        for name in ("n1", "n2", "n3"):
            await cluster.start_agent(name)
        await cluster.call("apply", templates=[spec("mv", 9)])
        await cluster.wait_running(9, "mv")
        await cluster.lose_agent("n3")
        await cluster.wait_node("n3", "down")
        running = await cluster.wait_running(9, "mv")
        assert set(running.values()) == {"n1", "n2"}
        assert sorted(running) == sorted(f"mv.{i}" for i in range(1, 10))

    async def test_label_selector_and_max_per_node(self, cluster):
        """Placement honours labels and max_per_node; the rest is pending with a reason."""
        await cluster.start_controller()
        await cluster.start_agent("a1", {"zone": "a"})
        await cluster.start_agent("a2", {"zone": "a"})
        await cluster.start_agent("b1", {"zone": "b"})
        template = spec("sel", 5, placement={"labels": {"zone": "a"}, "max_per_node": 2})
        await cluster.call("apply", templates=[template])
        running = await cluster.wait_running(4, "sel")
        assert per_node(running) == {"a1": 2, "a2": 2}
        view = await cluster.call("get", name="sel")
        assert view["pending"]["count"] == 1 and "max_per_node" in view["pending"]["reason"]

    async def test_stop_start_and_delete(self, cluster):
        """stop pauses (instances stop, template kept); start resumes; delete removes."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[spec("ctl", 2)])
        await cluster.wait_running(2, "ctl")
        await cluster.call("stop", name="ctl")
        await cluster.wait_running(0, "ctl")
        assert (await cluster.call("get", name="ctl"))["paused"] is True
        await cluster.call("start", name="ctl")
        await cluster.wait_running(2, "ctl")
        pids = [r["pid"] for r in await cluster.call("ps", name="ctl")]
        await cluster.call("delete", name="ctl")
        await poll_until(lambda: all(pid_dead(p) for p in pids), timeout=10)
        assert await cluster.call("templates") == []

    async def test_kill_logs_write_and_stats(self, cluster):
        """Process operations reach the agent that runs the instance."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[{
            "name": "cat", "cmd": "sh", "args": ["-c", "echo ready; cat"], "redirect_input": True, "startsecs": 0,
        }])
        await cluster.wait_running(1, "cat")
        await cluster.call("write", id="cat.1", data="hello stdin\n")

        async def has_echo() -> bool:
            lines = await cluster.call("logs", target="cat.1")
            return [line["line"] for line in lines] == ["ready", "hello stdin"]

        deadline = asyncio.get_running_loop().time() + 5
        while not await has_echo():
            assert asyncio.get_running_loop().time() < deadline
            await cluster.controller.changed(0.1)
        stats = await cluster.call("stats", name="cat")
        assert stats["cat"]["instances"][0]["id"] == "cat.1"
        old = (await cluster.call("ps", name="cat"))[0]["pid"]
        killed = await cluster.call("kill", target="cat.1", signal="KILL")
        assert killed["pids"] == {"n1": [old]}

        async def replaced() -> bool:
            rows = await cluster.call("ps", name="cat")
            return rows[0]["pid"] not in (None, old) and rows[0]["restarts"] == 1

        deadline = asyncio.get_running_loop().time() + 5
        while not await replaced():
            assert asyncio.get_running_loop().time() < deadline
            await cluster.controller.changed(0.1)

    async def test_one_off_run_reports_status_and_output(self, cluster):
        """run starts one process on a node; wait gives its status; logs its output."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[{"name": "job", "cmd": "sh", "args": ["-c", "echo out; exit 3"], "numprocesses": 0}])
        started = await cluster.call("run", name="job")
        assert started["node"] == "n1"
        ended = await cluster.call("wait", id=started["id"], node="n1", seconds=10)
        assert ended["done"] and ended["exit"] == {"status": 3, "signal": None}
        lines = await cluster.call("logs", target=started["id"], node="n1")
        assert [line["line"] for line in lines] == ["out"]

    async def test_controller_restart_changes_nothing_that_runs(self, cluster):
        """A new controller on the same data dir hears the agents and restarts nothing."""
        controller = await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.start_agent("n2")
        await cluster.call("apply", templates=[spec("keep", 4)])
        await cluster.wait_running(4, "keep")
        before = {r["id"]: r["pid"] for r in await cluster.call("ps", name="keep")}
        endpoint = controller.endpoint
        await cluster.client.close()
        await controller.stop()
        cluster.controller = Controller(ControllerSettings(
            bind=endpoint, data_dir=cluster.tmp / "controller",
            liveness=Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=2.0), node_grace=0.2,
        ))
        await cluster.controller.start()
        cluster.client = AsyncClient(cluster.controller.endpoint, timeout=5.0)
        await cluster.wait_running(4, "keep")
        after = {r["id"]: r["pid"] for r in await cluster.call("ps", name="keep")}
        assert after == before


    async def test_stopping_the_controller_ends_a_drain_that_waits(self, cluster):
        """A drain waiting to move instances nowhere (one node) does not hold up the controller's
        stop, and is answered (not done) rather than dropped."""
        controller = await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[spec("stay", 2)])
        await cluster.wait_running(2, "stay")
        drain = asyncio.create_task(cluster.call("drain", node="n1", wait=3600))
        await poll_until(lambda: controller.requests.running == 1, what="the drain waiting")
        async with asyncio.timeout(30):
            await controller.stop()
        cluster.controller = None
        answer = await drain
        assert {k: answer[k] for k in ("node", "done", "remaining")} == {"node": "n1", "done": False, "remaining": 2}
        assert [s["reason"] for s in answer["stuck"]] == ["no_other_node"]
        await cluster.client.close()
        cluster.client = None


def max_down(events) -> int:
    """Most instances down at once, replaying events in the order they happened on the agents
    (their ``ts``), not the order they reached the controller."""
    down: set[str] = set()
    worst = 0
    for event in sorted(events, key=lambda e: e.data["ts"]):
        kind = event.topic.rsplit(".", 1)[1]
        if kind in ("stop", "exit"):
            down.add(event.data["id"])
        elif kind == "running":
            down.discard(event.data["id"])
        worst = max(worst, len(down))
    return worst


class TestRolling:
    async def test_cluster_wide_rolling_restart_keeps_max_unavailable(self, cluster):
        """restart replaces every pid across nodes with never more than max_unavailable down."""
        await cluster.start_controller()
        for name in ("n1", "n2", "n3"):
            await cluster.start_agent(name)
        template = {**spec("roll", 6), "startsecs": 0.2, "update": {"max_unavailable": 2}}
        await cluster.call("apply", templates=[template])
        await cluster.wait_running(6, "roll")
        before = {r["id"]: r["pid"] for r in await cluster.call("ps", name="roll")}
        events = cluster.controller.hub.bus.subscribe("proc.roll.")
        await cluster.call("restart", name="roll")
        seen = []
        replaced: set[str] = set()

        async def collect() -> None:
            async for event in events:
                seen.append(event)
                if event.topic.endswith(".running") and event.data["pid"] != before.get(event.data["id"]):
                    replaced.add(event.data["id"])
                    if len(replaced) == 6:
                        return

        await asyncio.wait_for(collect(), 30)
        assert max_down(seen) <= 2
        after = {r["id"]: r["pid"] for r in await cluster.call("ps", name="roll")}
        assert all(after[i] != before[i] for i in before)


class TestEvents:
    async def test_a_nodes_flapping_reaches_subscribers(self, cluster):
        """proc.<t>.flap, which names the instance that flaps, is admitted from the node that
        runs it (it was once dropped as an id mismatch)."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        events = cluster.controller.hub.bus.subscribe("proc.crash.flap")
        template = {
            **spec("crash", 1), "cmd": "sh", "args": ["-c", "exit 3"],
            "flapping": {"attempts": 2, "window": 30, "retry_in": 30, "max_retry": 1},
        }
        await cluster.call("apply", templates=[template])
        flap = await next_event(events, "proc.crash.flap", timeout=10)
        assert (flap.data["node"], flap.data["template"], flap.data["id"]) == ("n1", "crash", "crash.1")
        assert "id_mismatch" not in cluster.controller.status()["agent_events_dropped"]["reasons"]
