"""A store write that fails during an operation leaves the controller's memory as it was.

The Cluster runs over a real SQLite store behind ``FailingStore``, which refuses the writes a
test names with StoreUnavailable (what an etcd store raises without quorum or leadership).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from gaffer.common.errors import LimitExceeded, StorageError, StoreUnavailable, from_wire
from gaffer.common.model import InstanceState
from gaffer.controller.cluster import Cluster
from gaffer.controller.counts import CountLimits
from gaffer.controller.hub import EventHub
from gaffer.controller.liveness import NodeState
from gaffer.controller.observed import load
from gaffer.controller.registry import NodeTable
from gaffer.controller.sqlitestore import SqliteStateStore
from gaffer.testing import loop_turn, poll_until, template
from gaffer.testing.clock import FakeClock
from gaffer.testing.stores import FailingStore


class Rig:
    """A Cluster over a FailingStore on SQLite: ``web`` paused with a failure on n1, ``db``
    running, nodes n1 and n2 known."""

    def __init__(self, store: FailingStore, cluster: Cluster, hub: EventHub) -> None:
        self.store, self.cluster, self.hub = store, cluster, hub

    def memory(self) -> dict[str, Any]:
        cluster = self.cluster
        return {
            "templates": {n: (s.template.to_dict(), s.version, s.paused) for n, s in cluster.templates.items()},
            "restarts": dict(cluster.restarts),
            "failed": dict(cluster.failed),
            "nodes": {n.name: (n.cordoned, n.draining) for n in cluster.nodes.nodes.values()},
            "total": cluster.tally.total,
            "events": self.hub.published,
        }

    async def stored(self) -> dict[str, Any]:
        loaded = await load(self.store.inner)
        return {
            "templates": {n: (s.template.to_dict(), s.version, s.paused) for n, s in loaded.templates.items()},
            "restarts": loaded.restarts,
            "failed": loaded.failed,
            "nodes": {n.name: (n.cordoned, n.draining) for n in loaded.nodes},
        }


@pytest.fixture
async def rig(tmp_path: Path):
    inner = SqliteStateStore(tmp_path)
    await inner.put_templates([template("web", numprocesses=2), template("db", numprocesses=1)])
    await inner.pause("web", True)
    await inner.put_node("n1", {}, "agent-1")
    await inner.put_node("n2", {}, "agent-2")
    await inner.mark_failed("web", 1, "n1")
    store = FailingStore(inner)
    hub = EventHub(None)
    cluster = Cluster(store, await load(store), NodeTable(), hub, lambda node, body: True, 2.0, FakeClock().time)
    try:
        yield Rig(store, cluster, hub)
    finally:
        await cluster.close()
        await inner.close()


def _down(cluster: Cluster) -> Awaitable[int]:
    cluster.nodes.nodes["n2"].state = NodeState.DOWN
    return cluster.forget_node("n2")


OPERATIONS: list[tuple[str, str, Callable[[Cluster], Awaitable[Any]]]] = [
    ("apply", "put_templates", lambda c: c.apply([template("db", numprocesses=3), template("new")])),
    ("apply_sliced", "commit_puts", lambda c: c.apply_sliced([template("db", numprocesses=3)])),
    ("scale", "set_count", lambda c: c.scale("db", 4)),
    ("pause", "pause", lambda c: c.set_paused("db", True)),
    ("resume", "pause", lambda c: c.set_paused("web", False)),
    ("restart", "restart_template", lambda c: c.restart("web")),
    ("delete", "delete_templates", lambda c: c.delete_many(["db"])),
    ("cordon", "set_node_flags", lambda c: c.cordon("n1", True)),
    ("drain", "set_node_flags", lambda c: c.drain("n1")),
    ("forget", "forget_node", _down),
]


@pytest.mark.parametrize(("op", "write", "run"), OPERATIONS, ids=[op for op, _, _ in OPERATIONS])
async def test_a_refused_write_leaves_memory_and_store_as_they_were(rig: Rig, op, write, run):
    """Each operation whose write the store refuses raises StoreUnavailable, publishes
    nothing and changes neither memory nor the store; once the store takes writes, it
    applies and memory equals the store."""
    before, stored = rig.memory(), await rig.stored()
    rig.store.failing = {write}
    with pytest.raises(StoreUnavailable):
        await run(rig.cluster)
    assert rig.store.refused == [write]
    assert rig.memory() == before
    assert await rig.stored() == stored
    rig.store.failing = set()
    await run(rig.cluster)
    await rig.cluster.settled()
    after = rig.memory()
    assert after != before
    assert {k: after[k] for k in ("templates", "restarts", "failed")} == {
        k: v for k, v in (await rig.stored()).items() if k != "nodes"
    }


async def test_restarting_a_paused_template_resumes_it_in_the_same_transaction(rig: Rig):
    """restart of a paused template: the new generation, the failures forgotten and the
    resume are one write, so a refused one leaves it paused with its failures and generation."""
    rig.store.failing = {"restart_template"}
    with pytest.raises(StoreUnavailable):
        await rig.cluster.restart("web")
    assert rig.cluster.templates["web"].paused and rig.cluster.failed == {("web", 1): frozenset({"n1"})}
    rig.store.failing = set()
    assert await rig.cluster.restart("web") == 1
    stored = await rig.stored()
    assert not rig.cluster.templates["web"].paused and not stored["templates"]["web"][2]
    assert rig.cluster.failed == stored["failed"] == {}


async def test_a_failure_the_store_refuses_is_not_remembered_until_reported_again(rig: Rig):
    """A failed ordinal is remembered only once stored: refused, neither memory nor the
    store has it; the next report of it, with the store back, puts it in both."""
    node = rig.cluster.nodes.nodes["n1"]
    node.state = NodeState.UP
    rig.cluster.node_changed(node)
    await rig.cluster.settled()
    assert rig.cluster.placement[("db", 1)] == "n1"
    row = {"template": "db", "ordinal": 1, "state": InstanceState.FAILED}
    rig.store.failing = {"mark_failed"}
    rig.cluster.instances_reported(node, [row])  # type: ignore[list-item]
    await rig.cluster.settled()
    assert rig.store.refused == ["mark_failed"]
    assert ("db", 1) not in rig.cluster.failed and ("db", 1) not in (await rig.stored())["failed"]
    rig.store.failing = set()
    rig.cluster.instances_reported(node, [row])  # type: ignore[list-item]
    await rig.cluster.settled()
    assert rig.cluster.failed[("db", 1)] == (await rig.stored())["failed"][("db", 1)] == frozenset({"n1"})


async def test_operations_waiting_on_the_store_are_checked_one_after_the_other(tmp_path: Path):
    """While one operation waits for its write, the next waits for it: two scales that each
    fit the total limit but not together cannot both pass the check (the second is refused)."""
    inner = SqliteStateStore(tmp_path)
    await inner.put_templates([template("web", numprocesses=2), template("db", numprocesses=1)])
    store = FailingStore(inner)
    cluster = Cluster(
        store, await load(store), NodeTable(), EventHub(None), lambda node, body: True, 2.0,
        FakeClock().time, limits=CountLimits(total=10),
    )
    try:
        release = store.hold("set_count")
        first = asyncio.ensure_future(cluster.scale("db", 5))
        await poll_until(lambda: store.waiting == ["set_count"], what="the first write waiting")
        second = asyncio.ensure_future(cluster.scale("web", 6))
        await loop_turn()
        assert store.waiting == ["set_count"] and not second.done()
        release.set()
        assert await first == 5
        with pytest.raises(LimitExceeded):
            await second
        assert cluster.tally.total == 7 and (await inner.templates())[1].template.numprocesses == 2
    finally:
        await cluster.close()
        await inner.close()


def test_store_unavailable_is_a_storage_error_with_a_stable_code():
    """StoreUnavailable crosses the wire by its code and is caught as a StorageError."""
    error = StoreUnavailable("the store is unavailable: no etcd quorum")
    again = from_wire(error.to_dict())
    assert isinstance(again, StoreUnavailable) and isinstance(again, StorageError)
    assert (again.code, again.reason, again.message) == ("store_unavailable", "unavailable", error.message)
