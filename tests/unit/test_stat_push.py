"""The stats push (issue 11): what changed (agent/statdiff.py, pure), the pusher on a fake
sampler and link (agent/statpush.py), and the controller's cache (controller/statcache.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from hypothesis import given, settings, strategies as st

from gaffer.agent.statdiff import StatRow, Thresholds, after, changes, moved
from gaffer.agent.statpush import StatPusher
from gaffer.agent.stats import ProcStats
from gaffer.common import protocol
from gaffer.common.protocol import MAX_STAT_ROWS
from gaffer.controller.statcache import Sample, StatCache
from gaffer.testing.clock import FakeClock

LIMITS = Thresholds(cpu=1.0, mem=0.02)


def stat(pid: int = 10, cpu: float = 5.0, mem: int = 100_000, children: int = 0) -> StatRow:
    return StatRow(pid, cpu, mem, children)


rows = st.builds(
    StatRow, st.integers(1, 50), st.floats(0, 400, allow_nan=False), st.integers(0, 10**9), st.integers(0, 5),
)
tables = st.dictionaries(st.sampled_from([f"web.{i}" for i in range(1, 9)]), rows, max_size=8)


class TestWhatChanged:
    def test_a_row_moves_only_beyond_the_thresholds(self):
        """cpu within a point and memory within 2% of what was sent are not sent again; a pid
        or children change always is."""
        old = stat()
        assert not moved(old, stat(cpu=5.9, mem=101_000), LIMITS)
        assert moved(old, stat(cpu=6.1), LIMITS)
        assert moved(old, stat(mem=103_000), LIMITS)
        assert moved(old, stat(pid=11), LIMITS)
        assert moved(old, stat(children=1), LIMITS)

    def test_gone_rows_are_removals_and_new_rows_are_sent(self):
        """An id sent before and not sampled now is removed; a new id is sent."""
        pushed = changes({"web.1": stat(), "web.2": stat()}, {"web.2": stat(), "web.3": stat()}, LIMITS)
        assert pushed.rows == {"web.3": stat()} and pushed.removed == ("web.1",)

    def test_a_slow_drift_is_sent_once_it_adds_up(self):
        """Each step is under the threshold, but the comparison is with what was sent, so the
        drift goes once it exceeds it."""
        sent = {"web.1": stat(cpu=5.0)}
        for cpu, expect in ((5.5, False), (5.9, False), (6.2, True)):
            pushed = changes(sent, {"web.1": stat(cpu=cpu)}, LIMITS)
            assert bool(pushed) is expect
            sent = after(sent, pushed)

    @given(tables, tables)
    def test_after_a_push_the_controller_is_within_thresholds_of_now(self, sent, current):
        """Whatever was sent and whatever is sampled now, after the push the controller holds
        exactly the current ids, each row within the thresholds of its current value."""
        held = after(sent, changes(sent, current, LIMITS))
        assert set(held) == set(current)
        assert not any(moved(held[i], current[i], LIMITS) for i in current)

    @given(tables)
    def test_pushing_the_same_sample_again_sends_nothing(self, current):
        """A push fed back as what was sent changes nothing."""
        held = after({}, changes({}, current, LIMITS))
        assert not changes(held, current, LIMITS)


class FakeSampler:
    """Stats by pid, as set by the test; records each call."""

    def __init__(self) -> None:
        self.by_pid: dict[int, ProcStats] = {}
        self.calls = 0

    async def sample(self, pids: Iterable[int], cmdline: bool = True) -> dict[int, ProcStats]:
        self.calls += 1
        return {pid: self.by_pid[pid] for pid in pids if pid in self.by_pid}


class FakeLink:
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connected.set()
        self.welcomes = 1
        self.sent: list[dict[str, Any]] = []
        self.accept = True

    def send_stats(self, body: dict[str, Any]) -> bool:
        protocol.validate("stats", body)
        self.sent.append(body)
        return self.accept


def pusher(running: list[tuple[str, int]]) -> tuple[StatPusher, FakeSampler, FakeLink]:
    sampler, link = FakeSampler(), FakeLink()
    return StatPusher(lambda: list(running), link, 5.0, sampler), sampler, link


class TestPusher:
    async def test_the_first_push_resets_and_later_ones_send_only_changes(self):
        """A session starts with every row and reset; then only moved rows and removals, and
        an empty push when nothing moved."""
        running = [("web.1", 11), ("web.2", 12)]
        push, sampler, link = pusher(running)
        sampler.by_pid = {11: ProcStats(11, 3.0, 1000, children=(ProcStats(99, 1.0, 500),)), 12: ProcStats(12, 0.0, 10)}
        await push.push()
        assert link.sent[-1] == {"reset": True, "removed": [], "rows": [
            {"id": "web.1", "pid": 11, "cpu": 4.0, "mem": 1500, "children": 1},
            {"id": "web.2", "pid": 12, "cpu": 0.0, "mem": 10, "children": 0},
        ]}
        await push.push()
        assert link.sent[-1] == {"reset": False, "removed": [], "rows": []}
        running.remove(("web.2", 12))
        sampler.by_pid[11] = ProcStats(11, 30.0, 1000)
        await push.push()
        assert link.sent[-1] == {"reset": False, "removed": ["web.2"], "rows": [
            {"id": "web.1", "pid": 11, "cpu": 30.0, "mem": 1000, "children": 0},
        ]}

    async def test_a_new_session_or_a_failed_send_starts_over_with_reset(self):
        """After a new welcome (the controller may hold nothing) or a push that did not go,
        the next push carries every row again, with reset."""
        push, sampler, link = pusher([("web.1", 11)])
        sampler.by_pid = {11: ProcStats(11, 3.0, 1000)}
        await push.push()
        link.welcomes += 1
        await push.push()
        assert link.sent[-1]["reset"] and len(link.sent[-1]["rows"]) == 1
        link.accept = False
        await push.push()
        link.accept = True
        await push.push()
        assert link.sent[-1]["reset"] and len(link.sent[-1]["rows"]) == 1

    async def test_a_big_push_is_split_and_only_its_first_part_resets(self):
        """More rows than one message holds go in several, the first with reset."""
        count = MAX_STAT_ROWS + 5
        running = [(f"web.{i}", 100 + i) for i in range(1, count + 1)]
        push, sampler, link = pusher(running)
        sampler.by_pid = {pid: ProcStats(pid, 0.0, 1) for _, pid in running}
        await push.push()
        assert [len(m["rows"]) for m in link.sent] == [MAX_STAT_ROWS, 5]
        assert [m["reset"] for m in link.sent] == [True, False]

    async def test_the_pusher_owns_its_task(self):
        """start makes the pushing task, stop cancels it and leaves nothing running."""
        push, _, _ = pusher([])
        push.start()
        task = push._task
        await push.stop()
        assert task is not None and task.done() and push._task is None


def body(rows: list[dict[str, Any]], removed: list[str] = (), reset: bool = False) -> dict[str, Any]:
    return {"rows": rows, "removed": list(removed), "reset": reset}


def item(ident: str, pid: int = 10, cpu: float = 1.0, mem: int = 100, children: int = 0) -> dict[str, Any]:
    return {"id": ident, "pid": pid, "cpu": cpu, "mem": mem, "children": children}


class TestStatCache:
    def test_a_row_ages_from_its_nodes_last_push(self):
        """An empty push confirms every row of its node: the sample's time is the last push,
        so a silent node's rows age and a pushing node's stay young."""
        clock, cache = FakeClock(), StatCache()
        cache.push("a", body([item("web.1", cpu=2.5, mem=64, children=1)], reset=True), clock.time())
        assert cache.get("web.1") == Sample(2.5, 64, 1, clock.time())
        clock.now += 5
        cache.push("a", body([]), clock.time())
        assert cache.get("web.1").sampled_at == clock.time()
        clock.now += 30
        assert clock.time() - cache.get("web.1").sampled_at == 30

    def test_reset_removals_and_stops_drop_rows_of_that_node_only(self):
        """reset drops the node's rows, removals and stopped instances drop theirs; another
        node's rows stay."""
        cache = StatCache()
        cache.push("a", body([item("web.1"), item("web.2")], reset=True), 1.0)
        cache.push("b", body([item("api.1")], reset=True), 1.0)
        cache.push("a", body([item("web.3")], reset=True), 2.0)
        assert sorted(i for i, _ in cache.items()) == ["api.1", "web.3"]
        cache.push("a", body([], removed=["web.3", "api.1"]), 3.0)
        assert sorted(i for i, _ in cache.items()) == ["api.1"]
        cache.discard("b", ["api.1"])
        assert len(cache) == 0

    def test_a_sample_is_given_only_for_its_own_process_and_node(self):
        """sample_for answers only for the pid and node it was sampled from."""
        cache = StatCache()
        cache.push("a", body([item("web.1", pid=7)], reset=True), 1.0)
        assert cache.sample_for("web.1", "a", 7) is not None
        assert cache.sample_for("web.1", "a", 8) is None
        assert cache.sample_for("web.1", "b", 7) is None

    def test_forgetting_a_node_drops_its_rows_and_push_time(self):
        """forget_node drops every row of the node; the others stay."""
        cache = StatCache()
        cache.push("a", body([item("web.1")], reset=True), 1.0)
        cache.push("b", body([item("web.2")], reset=True), 1.0)
        cache.forget_node("a")
        assert [i for i, _ in cache.items()] == ["web.2"] and cache.pushed_at("a") is None

    def test_status_counts_samples_nodes_pushes_and_the_oldest_age(self):
        """status: instances with a sample, the nodes holding them, pushes received, and the age
        of the oldest sample (a node without rows does not count; None when nothing is held)."""
        cache = StatCache()
        assert cache.status(5.0) == {"instances": 0, "nodes": 0, "pushes": 0, "oldest_age": None}
        cache.push("a", body([item("web.1"), item("web.2")], reset=True), 1.0)
        cache.push("b", body([item("api.1")], reset=True), 3.0)
        cache.push("c", body([], reset=True), 0.5)
        assert cache.status(10.0) == {"instances": 3, "nodes": 2, "pushes": 3, "oldest_age": 9.0}
        cache.push("b", body([item("web.2")]), 4.0)
        cache.discard("a", ["web.1"])
        assert cache.status(10.0) == {"instances": 2, "nodes": 1, "pushes": 4, "oldest_age": 6.0}
        cache.forget_node("b")
        assert cache.status(10.0)["nodes"] == 0 and cache.status(10.0)["oldest_age"] is None


NODES = st.sampled_from("abc")
IDS = st.sampled_from(["w.1", "w.2", "w.3", "x.1"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("push"), NODES, st.lists(IDS, max_size=3), st.lists(IDS, max_size=2), st.booleans()),
    st.tuples(st.just("discard"), NODES, st.lists(IDS, max_size=3)),
    st.tuples(st.just("forget"), NODES),
), max_size=20)


@settings(max_examples=40)
@given(STEPS)
def test_status_counts_equal_a_count_over_the_rows(steps):
    """Whatever pushes, discards and forgets happen, status's per-node counts agree with the
    rows themselves (the counts are kept as rows come and go, never recounted)."""
    cache = StatCache()
    for now, step in enumerate(steps):
        if step[0] == "push":
            _, node, rows, removed, reset = step
            cache.push(node, body([item(i) for i in rows], removed, reset), float(now))
        elif step[0] == "discard":
            cache.discard(step[1], step[2])
        else:
            cache.forget_node(step[1])
    holders = {cache._rows[ident].node for ident, _ in cache.items()}
    oldest = min((cache.pushed_at(node) for node in holders), default=None)
    status = cache.status(100.0)
    assert status["instances"] == len(cache) and status["nodes"] == len(holders)
    assert status["oldest_age"] == (None if oldest is None else 100.0 - oldest)
    assert cache._held == {n: sum(1 for r in cache._rows.values() if r.node == n) for n in holders}
