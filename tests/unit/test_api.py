"""The request API on fakes of its three narrow interfaces: no controller, no socket, no store.

``Api`` reads and changes the desired state through ``DesiredState``, reaches agents through
``Agents`` and asks the controller only its id, time and status (``ControllerInfo``); these
tests give it small fakes of each and check what clients get: listings, pages, errors as
structured values that survive the wire, arguments refused by name, and a handler bug
answered as a bug, never as the client's fault.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gaffer.cli import tables
from gaffer.common import protocol
from gaffer.common.errors import (
    GafferError,
    InstanceNotFound,
    InvalidArgument,
    InvalidRequest,
    NodeNotFound,
    TemplateNotFound,
    from_wire,
)
from gaffer.common.model import InstanceRow, InstanceState
from gaffer.common.template import Template
from gaffer.controller import api as api_module
from gaffer.controller.api import Agents, Api, ControllerInfo, DesiredState
from gaffer.controller.changes import Changes
from gaffer.controller.counts import parse_scale
from gaffer.controller.logs import LogOps
from gaffer.controller.liveness import NodeState
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.paging import encode_token
from gaffer.controller.row_bytes import PsAnswer
from gaffer.controller.registry import Node
from gaffer.controller.requests import Requests
from gaffer.controller.tokens import LOCAL
from gaffer.controller.server import Session
from gaffer.controller.staging import Stages
from gaffer.controller.store import StoredTemplate
from gaffer.testing import template, loop_turn


class FakeDesired:
    """DesiredState in a few dicts; records the changes asked of it."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.templates: dict[str, StoredTemplate] = {}
        self.placement: dict[tuple[str, int], str] = {}
        self.failed: dict[tuple[str, int], frozenset[str]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self._nodes = nodes

    def put(self, *templates: Template) -> None:
        for t in templates:
            self.templates[t.name] = StoredTemplate(t, 1, False, 0.0, 0.0)

    async def apply_sliced(self, templates: list[Template]) -> list[dict[str, Any]]:
        results = []
        for t in templates:
            change = "updated" if t.name in self.templates else "created"
            self.put(t)
            results.append({"name": t.name, "change": change, "version": 1})
        return results

    def template_views(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "numprocesses": self.templates[n].template.numprocesses} for n in names]

    def template_view(self, name: str) -> dict[str, Any]:
        self._stored(name)
        return self.template_views([name])[0]

    def _stored(self, name: str) -> StoredTemplate:
        if name not in self.templates:
            raise TemplateNotFound(name)
        return self.templates[name]

    async def delete(self, name: str) -> None:
        self._stored(name)
        del self.templates[name]

    async def scale(self, name: str, how: str | int) -> int:
        stored = self._stored(name)
        count = parse_scale(how, stored.template.numprocesses)
        self.put(stored.template.with_count(count))
        return count

    async def set_paused(self, name: str, paused: bool) -> None:
        self._stored(name)
        self.calls.append(("paused", name, paused))

    async def restart(self, name: str) -> int:
        self._stored(name)
        self.calls.append(("restart", name))
        return 1

    def _node(self, name: str) -> Node:
        if name not in self._nodes:
            raise NodeNotFound(name)
        return self._nodes[name]

    async def cordon(self, name: str, cordoned: bool) -> None:
        self._node(name).cordoned = cordoned

    async def drain(self, name: str, draining: bool = True) -> None:
        self._node(name).draining = draining

    async def forget_node(self, name: str) -> int:
        self._node(name)
        return self.placement_on(name)

    def placement_on(self, node: str) -> int:
        return sum(1 for n in self.placement.values() if n == node)

    def by_node(self, node: str) -> dict[str, list[int]]:
        held: dict[str, list[int]] = {}
        for (template, ordinal), where in sorted(self.placement.items()):
            if where == node:
                held.setdefault(template, []).append(ordinal)
        return held

    def pending(self) -> dict[str, dict[str, Any]]:
        return {}

    def wanted(self, name: str) -> int:
        return self.templates[name].template.numprocesses


class FakeAgents:
    """Agents as a dict of nodes; commands answered by ``answers[op]`` (a value, or an
    exception to raise), each call recorded."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.answers: dict[str, Any] = {}
        self.commands: list[tuple[str, str, dict[str, Any]]] = []

    def node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def all(self) -> list[Node]:
        return list(self.nodes.values())

    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        self.commands.append((node.name, op, args))
        answer = self.answers.get(op)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeInfo:
    id = "ctl-1"

    def __init__(self) -> None:
        self.time = 100.0
        self.held: set[str] = set()

    def now(self) -> float:
        return self.time

    def status(self) -> dict[str, Any]:
        return {"controller": self.id}

    def subscribed(self, prefix: str) -> bool:
        return prefix in self.held



def up(name: str, *rows: InstanceRow) -> Node:
    node = Node(name=name, state=NodeState.UP, peer=name.encode(), last_heard=99.0)
    node.instances = {row["id"]: row for row in rows}
    return node


def row(ident: str, pid: int | None = 10) -> InstanceRow:
    name, ordinal = ident.rsplit(".", 1)
    return InstanceRow(
        id=ident, template=name, ordinal=int(ordinal), pid=pid, state=InstanceState.RUNNING.value,
        restarts=0, started_at=1.0, spec="h",
    )


@pytest.fixture
def parts():
    nodes = {"a": up("a", row("web.1")), "b": up("b", row("web.2"))}
    desired = FakeDesired(nodes)
    desired.put(template("web", numprocesses=2), template("api", numprocesses=1))
    desired.placement.update({("web", 1): "a", ("web", 2): "b"})
    agents = FakeAgents(nodes)
    info = FakeInfo()
    api = Api(desired, agents, OneOffs(), Stages(), Changes(), info)
    return api, desired, agents, info


def test_the_fakes_cover_the_interfaces_api_depends_on():
    """Api needs nothing beyond DesiredState, Agents and ControllerInfo: the fakes that
    satisfy them are enough to build it."""
    for protocol_cls, fake in ((DesiredState, FakeDesired), (Agents, FakeAgents), (ControllerInfo, FakeInfo)):
        wanted = {n for n in vars(protocol_cls) if not n.startswith("_")}
        wanted |= set(getattr(protocol_cls, "__annotations__", {}))
        have = set(dir(fake)) | set(vars(fake({}) if fake is not FakeInfo else fake()))
        assert wanted <= have, f"{fake.__name__} lacks {wanted - have}"


async def test_listings_whole_and_in_pages(parts):
    """templates and nodes list everything sorted, or a page with a continue token."""
    api, _, _, _ = parts
    assert [t["name"] for t in await api.templates({})] == ["api", "web"]
    page = await api.templates({"limit": 1})
    assert [t["name"] for t in page["items"]] == ["api"] and page["continue"]
    rest = await api.templates({"limit": 1, "continue": page["continue"]})
    assert [t["name"] for t in rest["items"]] == ["web"] and rest["continue"] is None
    nodes = await api.nodes({})
    assert [n["name"] for n in nodes] == ["a", "b"]
    assert nodes[0]["state"] == "up" and nodes[0]["last_heartbeat"] == 1.0


async def test_ps_fresh_lists_each_placed_instance_with_the_stats_the_agents_answer_now(parts):
    """ps with fresh: one row per placed instance, with the node's report and the stats its
    agent answers now (age 0)."""
    api, _, agents, _ = parts
    agents.answers["stats"] = {"web": {"instances": [{"id": "web.1", "cpu": 1.5, "mem": 7}]}}
    rows = await api.ps({"name": "web", "fresh": True})
    assert [(r["id"], r["node"], r["state"], r["pid"]) for r in rows] == [
        ("web.1", "a", "running", 10), ("web.2", "b", "running", 10),
    ]
    assert rows[0]["cpu"] == 1.5 and rows[0]["age"] == 0.0 and rows[1]["cpu"] is None
    assert [c[1] for c in agents.commands] == ["stats", "stats"]


def _pushed(ident: str, pid: int = 10, cpu: float = 2.5, mem: int = 4096) -> dict[str, Any]:
    return {"id": ident, "pid": pid, "cpu": cpu, "mem": mem, "children": 0}


async def test_ps_answers_from_the_pushed_stats_with_their_age_and_asks_no_agent(parts):
    """ps without fresh: cpu and memory come from the stats cache, age is the time since the
    node's last push, and no agent is asked anything."""
    api, _, agents, info = parts
    api.stat_cache.push("a", {"rows": [_pushed("web.1")], "removed": [], "reset": True}, 97.5)
    api.stat_cache.push("b", {"rows": [], "removed": [], "reset": True}, 99.0)
    rows = await api.ps({"name": "web"})
    assert [(r["id"], r["cpu"], r["mem"], r["age"]) for r in rows] == [
        ("web.1", 2.5, 4096, 2.5), ("web.2", None, None, None),
    ]
    assert agents.commands == []
    info.time = 130.0
    assert (await api.ps({}))[0]["age"] == 32.5


async def test_the_ps_op_answers_ps_rows_written_from_kept_rows(parts, monkeypatch):
    """The ``ps`` op (what both servers call) answers a ``PsAnswer`` whose value is what
    ``Api.ps`` gives, whole, by template and page by page; with ``fresh`` or a token of
    another shape than ``ps`` gives, it answers ``Api.ps``'s plain rows."""
    api, _, agents, _ = parts
    monkeypatch.setattr(api_module, "time", SimpleNamespace(time=lambda: 1000.0))  # one uptime for both
    api.stat_cache.push("a", {"rows": [_pushed("web.1")], "removed": [], "reset": True}, 97.5)
    agents.answers["stats"] = {}
    op = api.ops()["ps"]
    for args in ({}, {"name": "web"}, {"name": "api"}, {"limit": 1}):
        got = await op(args)
        assert isinstance(got, PsAnswer) and got.value() == await api.ps(args), args
    token = (await api.ps({"limit": 1}))["continue"]
    assert (await op({"limit": 1, "continue": token})).value() == await api.ps({"limit": 1, "continue": token})
    odd = encode_token(["web"])
    assert await op({"limit": 1, "continue": odd}) == await api.ps({"limit": 1, "continue": odd})
    assert type(await op({"fresh": True})) is list


async def test_ps_shows_no_sample_of_another_process_or_node(parts):
    """A cached sample of another pid (the instance restarted) or of another node (it moved)
    is not shown as the listed process's."""
    api, _, _, _ = parts
    api.stat_cache.push("a", {"rows": [_pushed("web.1", pid=9)], "removed": [], "reset": True}, 99.0)
    api.stat_cache.push("a", {"rows": [_pushed("web.2")], "removed": [], "reset": False}, 99.0)
    rows = await api.ps({"name": "web"})
    assert [r["cpu"] for r in rows] == [None, None]


async def test_forgetting_a_node_drops_its_cached_stats(parts):
    """forget drops the node's rows from the stats cache."""
    api, _, _, _ = parts
    api.stat_cache.push("a", {"rows": [_pushed("web.1")], "removed": [], "reset": True}, 99.0)
    await api.forget({"node": "a"})
    assert api.stat_cache.get("web.1") is None


async def test_changes_go_through_the_desired_state(parts):
    """scale, stop, restart, cordon reach the desired state and answer what they did."""
    api, desired, _, _ = parts
    assert await api.scale({"name": "web", "count": "+3"}) == {"name": "web", "numprocesses": 5, "previous": 2}
    assert await api.stop({"name": "web"}) == {"name": "web", "paused": True}
    assert await api.restart({"name": "api"}) == {"name": "api", "restarting": True}
    assert await api.cordon({"node": "a"}) == {"node": "a", "cordoned": True}
    assert desired.calls == [("paused", "web", True), ("restart", "api")]
    assert desired._nodes["a"].cordoned


@pytest.mark.parametrize("op, args", [
    ("get", {"name": "nope"}), ("delete", {"name": "nope"}), ("scale", {"name": "nope", "count": 1}),
    ("ps", {"name": "nope"}), ("stats", {"name": "nope"}), ("run", {"name": "nope"}),
])
async def test_an_unknown_template_is_a_template_not_found_that_survives_the_wire(parts, op, args):
    """Every op naming a missing template raises TemplateNotFound; rebuilt from the wire it is
    the same class with the same .name."""
    api = parts[0]
    with pytest.raises(TemplateNotFound) as caught:
        await api.ops()[op](args)
    rebuilt = from_wire(caught.value.to_dict())
    assert type(rebuilt) is TemplateNotFound and rebuilt.name == "nope"
    assert rebuilt.message == caught.value.message


async def test_unknown_nodes_and_instances_are_structured_too(parts):
    """cordon names a NodeNotFound (with .name); write to a missing instance an
    InstanceNotFound (with .instance_id); both rebuilt whole."""
    api = parts[0]
    with pytest.raises(NodeNotFound) as node:
        await api.cordon({"node": "zz"})
    assert from_wire(node.value.to_dict()).name == "zz"
    with pytest.raises(InstanceNotFound) as instance:
        await api.write({"id": "web.9", "data": "x"})
    assert from_wire(instance.value.to_dict()).instance_id == "web.9"


@pytest.mark.parametrize("op, args, argument", [
    ("get", {}, "name"),
    ("get", {"name": 5}, "name"),
    ("scale", {"name": "web", "count": [1]}, "count"),
    ("scale", {"name": "web"}, "count"),
    ("cordon", {"node": ""}, "node"),
    ("drain", {"node": "a", "wait": float("nan")}, "wait"),
    ("logs", {"target": "web", "lines": -1}, "lines"),
    ("logs", {"target": "web", "since": -1}, "since"),
    ("logs", {"target": "web", "since": float("inf")}, "since"),
    ("logs", {"target": "web", "since": 31 * 86_400}, "since"),
    ("kill", {"target": "web", "signal": {}}, "signal"),
    ("templates", {"limit": "ten"}, "limit"),
    ("nodes", {"limit": 5, "continue": "!!"}, "continue"),
    ("ps", {"continue": "x"}, "continue"),
    ("write", {"id": "web.1", "data": 3}, "data"),
])
async def test_bad_arguments_are_invalid_argument_naming_the_field(parts, op, args, argument):
    """A wrong type, a missing argument, NaN, a negative count: InvalidArgument whose
    .argument (kept across the wire) names the field; nothing was done."""
    api, desired, agents, _ = parts
    before = dict(desired.templates)
    with pytest.raises(InvalidArgument) as caught:
        await api.ops()[op](args)
    assert caught.value.argument == argument
    assert from_wire(caught.value.to_dict()).argument == argument
    assert desired.templates == before and not agents.commands


async def test_a_node_that_fails_a_command_passes_its_error_on(parts):
    """An agent's GafferError reaches the client as it was (here: no such instance)."""
    api, _, agents, _ = parts
    agents.answers["write"] = InstanceNotFound("web.1")
    with pytest.raises(InstanceNotFound):
        await api.write({"id": "web.1", "data": "x"})
    assert agents.commands == [("a", "write", {"id": "web.1", "data": "x"})]


async def test_drain_waits_for_the_node_to_empty_and_ends_when_it_does(parts):
    """drain returns done once nothing is placed on or running there and the moved instance
    is ready where it went (woken by Changes)."""
    api, desired, agents, _ = parts
    task = asyncio.ensure_future(api.drains.drain({"node": "a", "wait": 5}))
    await loop_turn()
    assert not task.done() and agents.nodes["a"].draining
    desired.placement[("web", 1)] = "b"
    agents.nodes["a"].instances.clear()
    agents.nodes["b"].instances["web.1"] = {**row("web.1"), "ready": True}
    api.changes.notify()
    assert await asyncio.wait_for(task, 5) == {"node": "a", "done": True, "remaining": 0}


async def test_drain_counts_an_instance_moved_only_once_it_is_ready_on_its_new_node(parts):
    """An instance gone from the drained node but not yet ready where it went is not moved:
    drain waits for its readiness, and says so if the wait runs out (issue 12)."""
    api, desired, agents, info = parts
    task = asyncio.ensure_future(api.drains.drain({"node": "a", "wait": 5}))
    await loop_turn()
    desired.placement[("web", 1)] = "b"
    agents.nodes["a"].instances.clear()
    agents.nodes["b"].instances["web.1"] = {**row("web.1"), "ready": False}
    api.changes.notify()
    await loop_turn()
    assert not task.done()
    agents.nodes["b"].instances["web.1"] = {**row("web.1"), "state": "ready", "ready": True}
    api.changes.notify()
    assert (await asyncio.wait_for(task, 5))["done"] is True


async def test_a_drain_waiting_for_readiness_says_so(parts):
    """A drain that runs out of time while replacements are not ready names that reason,
    with the max_unavailable rule for a template with a check."""
    api, desired, agents, _ = parts
    desired.put(template("web", numprocesses=2, health={"type": "tcp", "host": "127.0.0.1", "port": 1}))
    desired.placement[("web", 1)] = "b"
    agents.nodes["b"].instances["web.1"] = {**row("web.1"), "ready": False}
    result = await api.drains.drain({"node": "a", "wait": 0})
    assert {k: result[k] for k in ("done", "remaining")} == {"done": False, "remaining": 1}
    assert result["stuck"] == [{
        "template": "web", "reason": "waiting_ready",
        "message": "2 of 2 not ready yet; update.max_unavailable=1 lets no more leave until they are",
    }]


async def test_a_drain_that_cannot_finish_counts_each_instance_once(parts):
    """An instance both placed on and running on the node is one that remains, not two
    (issue 9: drain counted placed + running)."""
    api, _, _, _ = parts
    result = await api.drains.drain({"node": "a", "wait": 0})
    assert {k: result[k] for k in ("node", "done", "remaining")} == {"node": "a", "done": False, "remaining": 1}


async def test_a_drain_that_cannot_finish_says_why_per_template(parts):
    """What stays on a drained node is named with its reason: max_per_node reached on the
    others, a label selector no other node matches (issue 9, item 6)."""
    api, desired, agents, _ = parts
    desired.put(
        template("web", numprocesses=2, placement={"max_per_node": 1}),
        template("db", numprocesses=1, placement={"labels": {"disk": "ssd"}}),
    )
    desired.placement[("db", 1)] = "a"
    result = await api.drains.drain({"node": "a", "wait": 0})
    assert result["done"] is False and result["remaining"] == 2
    assert result["stuck"] == [
        {"template": "db", "reason": "no_match", "message": "no other node matches its labels disk=ssd"},
        {"template": "web", "reason": "max_per_node", "message": "max_per_node 1 reached on b"},
    ]
    assert tables.drain_text(result, 0) == (
        "a: 2 instances still there after 0s\n"
        "  db: no other node matches its labels disk=ssd\n"
        "  web: max_per_node 1 reached on b"
    )


# ---------------------------------------------------------------- dispatch (requests.py)


def session() -> Session:
    return Session(peer=b"p", role="client", name="c", address=None)


async def answer(ops: dict[str, Any], op: str, args: dict[str, Any]) -> dict[str, Any]:
    replies: list[dict[str, Any]] = []
    requests = Requests(ops, lambda _session, body: replies.append(body) or True, lambda _s: LOCAL)
    requests.receive(session(), protocol.Message(protocol.PROTOCOL_VERSION, "request", 1, {"id": 7, "op": op, "args": args}))
    for _ in range(100):
        if replies:
            break
        await loop_turn()
    assert replies, "no reply"
    return replies[0]


async def test_a_handler_bug_is_an_internal_error_not_bad_arguments(parts):
    """A TypeError raised inside a handler is answered as a controller bug (code error,
    counted in failed), never as the client's invalid request."""
    async def buggy(args: dict[str, Any]) -> Any:
        return len(None)  # type: ignore[arg-type]

    reply = await answer({"buggy": buggy}, "buggy", {})
    error = from_wire(reply["error"])
    assert reply["ok"] is False and type(error) is GafferError
    assert not isinstance(error, InvalidRequest)
    assert "internal error in 'buggy'" in error.message and "TypeError" in error.message


async def test_dispatch_answers_gaffer_errors_as_they_are_and_unknown_ops_as_invalid(parts):
    """An op's GafferError is the reply's error; an unknown op is an invalid request."""
    api = parts[0]
    reply = await answer(api.ops(), "get", {"name": "nope"})
    assert from_wire(reply["error"]).name == "nope"
    reply = await answer(api.ops(), "frobnicate", {})
    assert from_wire(reply["error"]).code == "invalid_request"
    reply = await answer(api.ops(), "get", {"name": "web"})
    assert reply["ok"] and reply["result"] == {"name": "web", "numprocesses": 2}


async def test_run_waits_for_the_clients_sync_marker_and_leases_the_run(parts):
    """run with sync starts nothing until the client's subscription marker reached the hub; waits renew the lease."""
    api, _, agents, info = parts
    agents.answers["run"] = {"id": "web.run-1", "pid": 7}
    with pytest.raises(InvalidRequest, match="did not reach the controller"):
        info.time = 100.0
        task = asyncio.ensure_future(api.runs.run({"name": "web", "sync": "~run.abc", "lease": 10}))
        await loop_turn()  # one turn: the request reaches its wait for the marker
        info.time = 106.0
        api.changes.notify()
        await task
    assert not any(op == "run" for _, op, _ in agents.commands)
    info.held.add("~run.abc")
    started = await api.runs.run({"name": "web", "sync": "~run.abc", "lease": 10, "env": {"A": "1"}})
    node = started["node"]
    assert [(op, args.get("lease"), args.get("env")) for _, op, args in agents.commands] == [("run", 10, {"A": "1"})]
    await api.runs.wait({"id": "web.run-1", "node": node, "seconds": 0})
    assert agents.commands[-1][1:] == ("lease_run", {"id": "web.run-1", "seconds": 10.0})
    await api.runs.release({"id": "web.run-1", "node": node, "signal": "INT"})
    assert agents.commands[-1][1:] == ("lease_run", {"id": "web.run-1", "seconds": 0, "signal": "INT"})


async def test_logs_merges_every_instance_in_time_order_and_keeps_the_last_since(parts):
    """logs of a template asks each instance's node, tags lines with id and node, keeps those of
    the last ``since`` seconds (by the lines' stamps), oldest first."""
    api, desired, agents, _ = parts
    logs = LogOps(desired.templates, agents, api._nodes_running, api._node_for, wall=lambda: 1000.0)
    agents.answers["output"] = [
        {"ts": 900.0, "stream": "out", "line": "old", "number": 1},
        {"ts": 995.0, "stream": "out", "line": "new", "number": 2},
    ]
    got = await logs.logs({"target": "web", "since": 60})
    assert [(r["id"], r["node"], r["line"], r["number"]) for r in got] == [
        ("web.1", "a", "new", 2), ("web.2", "b", "new", 2),
    ]
    assert len(await logs.logs({"target": "web"})) == 4
