"""``RowCache``: ``ps`` from kept rows gives, after any sequence of changes, byte for byte the
answer made fresh by ``instance_rows`` + ``fill_cached``, rebuilds nothing while nothing
changed, and hands the reply's encoding rows it need not check again."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common import protocol, schema
from gaffer.common.model import InstanceRow
from gaffer.common.schema import PlainRows
from gaffer.controller.instance_rows import fill_cached, instance_rows
from gaffer.controller.liveness import NodeState
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.row_cache import RowCache
from gaffer.controller.scheduler import FAILED_EVERYWHERE
from gaffer.controller.statcache import StatCache
from gaffer.controller.store import StoredTemplate
from gaffer.testing import template
from budget import examples

TEMPLATES = ("web", "api")
NODES = ("a", "b", "c")
ORDINALS = (1, 2, 3)
STATES = ("running", "starting", "stopped", "backoff")


class FakeCluster:
    """What the rows are built from, changed the way ``Cluster`` changes it: the placement is
    replaced whole, the rest edited in place."""

    def __init__(self) -> None:
        self.templates: dict[str, StoredTemplate] = {}
        self.placement: dict[tuple[str, int], str] = {}
        self.failed: dict[tuple[str, int], frozenset[str]] = {}
        self.pending_reasons: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def pending(self) -> dict[str, dict[str, Any]]:
        return {name: {"count": self.counts.get(name, 0), "reason": why} for name, why in self.pending_reasons.items()}

    def wanted(self, name: str) -> int:
        return self.counts.get(name, 0)


class FakeAgents:
    def __init__(self, table: NodeTable) -> None:
        self.table = table

    def node(self, name: str) -> Node | None:
        return self.table.nodes.get(name)

    def all(self) -> list[Node]:
        return list(self.table.nodes.values())


def report(ident: str, pid: int | None, state: str, started: float | None) -> InstanceRow:
    name, ordinal = ident.rsplit(".", 1)
    return InstanceRow(id=ident, template=name, ordinal=int(ordinal) if ordinal.isdigit() else ordinal,
                       pid=pid, state=state, restarts=1, started_at=started, spec="h")


idents = st.sampled_from([f"{t}.{o}" for t in TEMPLATES for o in ORDINALS] + ["web.run-1"])
reports = st.builds(report, idents, st.one_of(st.none(), st.integers(100, 103)), st.sampled_from(STATES),
                    st.one_of(st.none(), st.sampled_from([0.0, 500.0, 900.5])))
nodes = st.sampled_from(NODES)
slots = st.tuples(st.sampled_from(TEMPLATES), st.sampled_from(ORDINALS))
pushed = st.builds(lambda ident, pid, cpu: {"id": ident, "pid": pid, "cpu": cpu, "mem": pid * 10, "children": 0},
                   idents, st.integers(100, 103), st.sampled_from([0.0, 1.5, 99.25]))

ops = st.one_of(
    st.tuples(st.just("place"), st.dictionaries(slots, nodes, max_size=6)),
    st.tuples(st.just("replace"), nodes, st.lists(reports, max_size=4)),
    st.tuples(st.just("update"), nodes, st.lists(reports, max_size=3), st.lists(idents, max_size=2)),
    st.tuples(st.just("state"), nodes, st.sampled_from(list(NodeState))),
    st.tuples(st.just("drop_node"), nodes),
    st.tuples(st.just("push"), nodes, st.lists(pushed, max_size=3), st.lists(idents, max_size=2), st.booleans()),
    st.tuples(st.just("discard"), nodes, st.lists(idents, max_size=2)),
    st.tuples(st.just("forget_stats"), nodes),
    st.tuples(st.just("pending"), st.sampled_from(TEMPLATES), st.sampled_from(["", "no node fits", FAILED_EVERYWHERE]),
              st.integers(0, 4)),
    st.tuples(st.just("fail"), slots),
    st.tuples(st.just("template"), st.sampled_from(TEMPLATES), st.one_of(st.none(), st.sampled_from([8000, 9000]))),
    st.tuples(st.just("clock"), st.sampled_from([0.0, 0.5, 7.25])),
)


class World:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.table = NodeTable()
        self.agents = FakeAgents(self.table)
        self.stats = StatCache()
        self.wall, self.loop = 1000.0, 50.0

    def node(self, name: str) -> Node:
        node = self.table.nodes.get(name)
        if node is None:
            node = self.table.nodes[name] = Node(name=name, state=NodeState.UP)
        return node

    def apply(self, op: tuple[Any, ...]) -> None:
        kind, *args = op
        if kind == "place":
            self.cluster.placement = dict(args[0])
        elif kind == "replace":
            self.table.replace_instances(self.node(args[0]), args[1])
        elif kind == "update":
            self.table.update_instances(self.node(args[0]), args[1], args[2])
        elif kind == "state":
            self.node(args[0]).state = args[1]
        elif kind == "drop_node":
            self.table.nodes.pop(args[0], None)
        elif kind == "push":
            self.stats.push(args[0], {"rows": args[1], "removed": args[2], "reset": args[3]}, self.loop)
        elif kind == "discard":
            self.stats.discard(args[0], args[1])
        elif kind == "forget_stats":
            self.stats.forget_node(args[0])
        elif kind == "pending":
            name, reason, count = args
            self.cluster.counts[name] = count
            if reason:
                self.cluster.pending_reasons[name] = reason
            else:
                self.cluster.pending_reasons.pop(name, None)
        elif kind == "fail":
            self.cluster.failed[args[0]] = frozenset({"a"})
        elif kind == "template":
            name, port = args
            fields = {"port": port} if port is not None else {}
            self.cluster.templates[name] = StoredTemplate(template(name, numprocesses=3, **fields), 1, False, 0.0, 0.0)
        elif kind == "clock":
            self.wall += args[0]
            self.loop += args[0]

    def fresh(self, name: str | None) -> list[dict[str, Any]]:
        rows = instance_rows(self.cluster, self.agents, name)
        fill_cached(rows, self.cluster.templates, self.stats, self.wall, self.loop)
        return rows


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(ops, max_size=25))
def test_the_kept_rows_answer_as_a_fresh_listing_after_any_changes(changes):
    """After every change of placement, reports, node states, samples, pending counts, failures,
    ports or clock, the cached listing (all, and of each template) packs to the same bytes as
    one made fresh."""
    world = World()
    cache = RowCache(world.cluster, world.agents, world.stats)
    for op in changes:
        world.apply(op)
        for name in (None, *TEMPLATES):
            got = cache.rows(name, world.wall, world.loop)
            assert msgpack.packb(got) == msgpack.packb(world.fresh(name)), (op, name)


def test_rows_are_rebuilt_only_when_what_they_are_made_of_changed():
    """Listing again with nothing changed rebuilds nothing; a node's report or a new placement
    does, a stats push does not (it only reads the samples again)."""
    world = World()
    cache = RowCache(world.cluster, world.agents, world.stats)
    world.apply(("place", {("web", 1): "a"}))
    world.apply(("replace", "a", [report("web.1", 100, "running", 0.0)]))
    cache.rows(None, world.wall, world.loop)
    cache.rows("web", world.wall, world.loop)
    assert cache.rebuilds == 1
    world.apply(("push", "a", [{"id": "web.1", "pid": 100, "cpu": 3.0, "mem": 5, "children": 0}], [], True))
    assert cache.rows(None, world.wall, world.loop)[0]["cpu"] == 3.0 and cache.rebuilds == 1
    world.apply(("update", "a", [report("web.1", 101, "running", 0.0)], []))
    assert cache.rows(None, world.wall, world.loop)[0]["pid"] == 101 and cache.rebuilds == 2
    world.apply(("place", {("web", 1): "b"}))
    rows = cache.rows(None, world.wall, world.loop)
    assert [(r["node"], r["stale"]) for r in rows] == [("a", True), ("b", False)] and cache.rebuilds == 3


def test_a_listing_is_the_callers_to_keep():
    """Rows handed out are new dicts: a caller editing them changes no later listing."""
    world = World()
    cache = RowCache(world.cluster, world.agents, world.stats)
    world.apply(("place", {("web", 1): "a"}))
    world.apply(("replace", "a", [report("web.1", 100, "running", 0.0)]))
    cache.rows(None, world.wall, world.loop)[0]["state"] = "edited"
    assert cache.rows(None, world.wall, world.loop)[0]["state"] == "running"


def test_the_reply_encoding_takes_the_rows_as_checked_and_packs_the_same_bytes():
    """Kept rows come as PlainRows, which the reply's check does not walk again (a map with a
    number key in one is let through, refused in a list), and the reply packs to the same bytes
    as one of the fresh rows."""
    world = World()
    cache = RowCache(world.cluster, world.agents, world.stats)
    world.apply(("place", {("web", 1): "a", ("web", 2): "b"}))
    world.apply(("replace", "a", [report("web.1", 100, "running", 0.0)]))
    world.apply(("pending", "api", "no node fits", 2))
    for name in (None, "web", "api"):
        rows = cache.rows(name, world.wall, world.loop)
        assert type(rows) is PlainRows
        got = protocol.encode("reply", 1, {"id": 1, "ok": True, "result": rows, "error": None})
        fresh = protocol.encode("reply", 1, {"id": 1, "ok": True, "result": world.fresh(name), "error": None})
        assert got == fresh
    schema.plain_value(PlainRows([{1: "x"}]))
    with pytest.raises(schema.Invalid):
        schema.plain_value([{1: "x"}])
