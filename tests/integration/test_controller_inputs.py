"""Issue 7, section 3: every number bounded, every name checked, on a real controller.

A controller (and, where it matters, an agent) in this process over real ZMQ sockets and a real
SQLite store; requests go through the real client. Each bad input must give one clear error,
change nothing, and leave the controller answering.
"""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from gaffer.common.errors import (
    GafferError,
    InvalidRequest,
    LimitExceeded,
    NodeAlive,
    NodeNotFound,
)
from gaffer.common.template import Template
from gaffer.controller.store import Store
from inproc import Cluster, spec


async def desired(c: Cluster) -> dict[str, tuple[int, int, bool]]:
    """name -> (numprocesses, version, paused): what a refused request must not change."""
    return {t["name"]: (t["numprocesses"], t["version"], t["paused"]) for t in await c.call("templates")}


class TestCountLimits:
    async def test_scale_and_apply_past_a_limit_change_nothing(self, cluster):
        """Per-template and total limits refuse scale and apply whole, before anything is stored."""
        await cluster.start_controller(max_per_template=5, max_instances=8)
        await cluster.call("apply", templates=[spec("a", 3)])
        before = await desired(cluster)
        with pytest.raises(LimitExceeded, match=r"a: 6 instances is over the limit of 5 per template"):
            await cluster.call("scale", name="a", count="6")
        with pytest.raises(InvalidRequest, match="at most 1,000,000 instances"):
            await cluster.call("scale", name="a", count="9223372036854775807")
        with pytest.raises(LimitExceeded, match="would want 9 instances in all, over the limit of 8"):
            await cluster.call("apply", templates=[spec("b", 4), spec("c", 2)])
        with pytest.raises(GafferError, match=r"numprocesses: is too large: at most 1,000,000"):
            await cluster.call("apply", templates=[spec("d", 2**63 - 1)])
        assert await desired(cluster) == before
        assert (await cluster.call("scale", name="a", count="5"))["numprocesses"] == 5
        assert await cluster.call("ping")

    async def test_a_stored_count_over_the_limit_is_placed_up_to_it(self, cluster, tmp_path, caplog):
        """A count stored before the limit (2**63-1) starts, places max_per_template, says so once."""
        with Store(tmp_path / "controller") as store:
            store.put_template(Template(name="s", cmd="sleep", args=("300",), startsecs=0.0))
            store.set_count("s", 2**63 - 1)
        caplog.set_level(logging.ERROR, logger="gaffer.controller.cluster")
        await cluster.start_controller(max_per_template=3)
        await cluster.start_agent("n1")
        await cluster.wait_running(3, "s")
        view = await cluster.call("get", name="s")
        assert view["numprocesses"] == 2**63 - 1
        assert view["limited"] == {
            "wanted": 2**63 - 1, "placing": 3,
            "reason": "over the limit of 3 per template (--max-per-template)",
        }
        assert len(await cluster.call("ps", name="s")) == 3
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == [
            "template s wants 9,223,372,036,854,775,807 instances, over the limit of 3 per template "
            "(--max-per-template): placing only 3; scale it down (gafferctl scale s=N) or raise the limit"
        ]
        await cluster.call("scale", name="s", count="2")
        assert (await cluster.call("get", name="s"))["limited"] is None
        await cluster.wait_running(2, "s")


class TestNodes:
    @pytest.mark.parametrize("op", ["cordon", "uncordon", "drain", "forget"])
    async def test_unknown_or_huge_node_names_create_nothing(self, cluster, op):
        """cordon/uncordon/drain/forget of an unknown or 60,000-character node leave no phantom."""
        controller = await cluster.start_controller()
        with pytest.raises(NodeNotFound, match="no node named 'ghost'"):
            await cluster.call(op, node="ghost")
        with pytest.raises(InvalidRequest, match="a string of 60000 characters is not a node name"):
            await cluster.call(op, node="n" * 60_000)
        assert await cluster.call("nodes") == []
        assert controller.store is not None and controller.store.sqlite.nodes() == []

    async def test_forget_a_down_node_moves_its_instances_and_keeps_its_generation(self, cluster, tmp_path):
        """forget refuses an up node; a down one goes (generation kept) and its slots move."""
        with Store(tmp_path / "controller") as store:
            store.put_template(Template(name="w", cmd="sleep", args=("300",), startsecs=0.0))
            store.put_node("gone", {}, "agent-of-gone")
            store.save_placement({("w", 1): "gone"})
            gone_generation = store.next_generation("gone")
        await cluster.start_controller(node_grace=3600.0)
        await cluster.start_agent("live")
        with pytest.raises(NodeAlive, match="node 'live' is up: only a node that is down can be forgotten"):
            await cluster.call("forget", node="live")
        assert await cluster.running("w") == {}
        result = await cluster.call("forget", node="gone")
        assert result == {"node": "gone", "forgotten": True, "moving": 1}
        assert await cluster.wait_running(1, "w") == {"w.1": "live"}
        assert [n["name"] for n in await cluster.call("nodes")] == ["live"]
        store = cluster.controller.store.sqlite
        assert [n.name for n in store.nodes()] == ["live"]
        assert store.generations()["gone"] == gone_generation


class TestWireArguments:
    @pytest.mark.parametrize(("op", "args", "argument"), [
        ("wait", {"id": "w.run-1", "node": "n1", "seconds": math.nan}, "seconds"),
        ("wait", {"id": "w.run-1", "node": "n1", "seconds": math.inf}, "seconds"),
        ("wait", {"id": "w.run-1", "node": "n1", "seconds": 1e300}, "seconds"),
        ("drain", {"node": "n1", "wait": math.nan}, "wait"),
        ("drain", {"node": "n1", "wait": -math.inf}, "wait"),
        ("logs", {"target": "w", "lines": 10**15}, "lines"),
        ("logs", {"target": "w", "stream": "both"}, "stream"),
        ("logs", {"target": "w." + "9" * 100}, "target"),
        ("kill", {"target": "w", "signal": "9" * 5000}, "signal"),
        ("kill", {"target": "w", "group": "yes"}, "group"),
        ("write", {"id": "w", "data": "x"}, "id"),
        ("run", {"name": "w", "args": ["a\0"]}, "args[0]"),
        ("scale", {"name": "w", "count": 1.5}, "count"),
        ("get", {"name": "w.1"}, "name"),
        ("ps", {"name": 7}, "name"),
    ])
    async def test_bad_arguments_are_named_and_the_controller_carries_on(self, cluster, op, args, argument):
        """NaN, infinities, huge numbers and malformed names get an error naming the argument."""
        await cluster.start_controller()
        await cluster.start_agent("n1")
        await cluster.call("apply", templates=[spec("w", 1)])
        before = await desired(cluster)
        with pytest.raises(GafferError) as info:
            await asyncio.wait_for(cluster.call(op, **args), 3.0)
        assert info.value.code == "invalid_argument"
        assert info.value.message.startswith(f"argument {argument!r}: ")
        assert await desired(cluster) == before
        assert await cluster.call("ping")

    @pytest.mark.parametrize(("op", "args", "argument"), [
        ("kill", {"target": "w", "signal": "9" * 5000}, "signal"),
        ("output", {"id": "w.1", "lines": 10**15}, "lines"),
        ("output", {"id": "x" * 1000}, "id"),
        ("write", {"id": "w.1", "data": 5}, "data"),
        ("stats", {"template": "a.b"}, "template"),
    ])
    async def test_the_agent_checks_what_the_controller_sends(self, cluster, op, args, argument):
        """The agent's commands check their arguments the same way, naming them."""
        controller = await cluster.start_controller()
        await cluster.start_agent("n1")
        with pytest.raises(GafferError) as info:
            await controller.command(controller.nodes.nodes["n1"], op, args)
        assert info.value.code == "invalid_argument"
        assert info.value.message.startswith(f"argument {argument!r}: ")
        assert await controller.command(controller.nodes.nodes["n1"], "stats", {}) == {}
