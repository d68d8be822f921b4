"""A drain's pace and its end: ``drainpace`` alone (scenarios and properties), then played
through the reconcile (``reconcile_harness.World``) as reports come in."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from gaffer.common.model import instance_id
from gaffer.controller.drainpace import Pace, drain_left, drain_stays, moving_from
from gaffer.controller.scheduler import NodeInfo

from reconcile_harness import World, web

CHECK = {"type": "tcp", "host": "127.0.0.1", "port": 1}


def rows_of(ready: dict[str, list[str]], not_ready: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """{node: {id: row}} with a ``ready`` flag per listed id."""
    rows: dict[str, dict[str, Any]] = {}
    for flag, table in ((True, ready), (False, not_ready or {})):
        for node, ids in table.items():
            for ident in ids:
                rows.setdefault(node, {})[ident] = {"id": ident, "pid": 1, "ready": flag}
    return rows


NODES = {
    "a": NodeInfo("a", "up", cordoned=True, draining=True),
    "b": NodeInfo("b", "up"),
    "c": NodeInfo("c", "down"),
}


class TestDrainStays:
    def test_only_max_unavailable_serving_slots_leave_at_once(self) -> None:
        """Three ready instances on a draining node, max_unavailable 1: one leaves, two stay."""
        current = {("web", o): "a" for o in (1, 2, 3)}
        stays = drain_stays({"web": Pace(3, 1)}, NODES, {"a": {"web": [1, 2, 3]}}, current,
                            rows_of({"a": ["web.1", "web.2", "web.3"]}))
        assert stays == {("web", 2), ("web", 3)}

    def test_a_replacement_not_ready_yet_uses_the_allowance(self) -> None:
        """With web.1 moved to b and not ready there, nothing more leaves; once it is, the
        next one does."""
        current = {("web", 1): "b", ("web", 2): "a", ("web", 3): "a"}
        by_node = {"a": {"web": [2, 3]}, "b": {"web": [1]}}
        waiting = rows_of({"a": ["web.2", "web.3"]}, {"b": ["web.1"]})
        assert drain_stays({"web": Pace(3, 1)}, NODES, by_node, current, waiting) == {("web", 2), ("web", 3)}
        served = rows_of({"a": ["web.2", "web.3"], "b": ["web.1"]})
        assert drain_stays({"web": Pace(3, 1)}, NODES, by_node, current, served) == {("web", 3)}

    def test_instances_that_do_not_serve_leave_at_once(self) -> None:
        """Not-ready instances on the draining node cost nothing to move: none stays."""
        current = {("web", o): "a" for o in (1, 2)}
        rows = rows_of({}, {"a": ["web.1", "web.2"]})
        assert drain_stays({"web": Pace(2, 1)}, NODES, {"a": {"web": [1, 2]}}, current, rows) == frozenset()

    def test_templates_without_a_pace_are_not_held(self) -> None:
        """Only templates the caller paces (those with a check) are held back."""
        current = {("web", o): "a" for o in (1, 2)}
        rows = rows_of({"a": ["web.1", "web.2"]})
        assert drain_stays({}, NODES, {"a": {"web": [1, 2]}}, current, rows) == frozenset()


class TestDrainLeft:
    def test_an_instance_counts_as_moved_once_ready_where_it_went(self) -> None:
        """Placed elsewhere and gone from the node is not enough: it must be ready there."""
        placement = {("web", 1): "b"}
        moving = moving_from("a", {"a": {"web": [1]}}, ())
        assert moving == {"web.1"}
        args = ("a", moving, {"web": 1}, placement, frozenset())
        assert drain_left(*args, NODES, rows_of({}, {"b": ["web.1"]})) == {"web.1"}
        assert drain_left(*args, NODES, rows_of({"b": ["web.1"]})) == frozenset()

    def test_still_running_or_placed_on_the_node_is_left(self) -> None:
        """A process still running on the node, or a slot still placed there, is left."""
        rows = rows_of({"b": ["web.1", "web.2"]})
        assert drain_left("a", {"web.1"}, {"web": 2}, {("web", 1): "b"}, {"web.1"}, NODES, rows) == {"web.1"}
        assert drain_left("a", {"web.2"}, {"web": 2}, {("web", 2): "a"}, set(), NODES, rows) == {"web.2"}

    def test_a_job_that_completed_where_it_went_has_arrived(self) -> None:
        """A one-shot job (exit 0) is never ready: completed on its new node counts as moved;
        a failed exit does not."""
        done = {"b": {"job.1": {"state": "exited", "exit_code": 0, "pid": None, "ready": False}}}
        failed = {"b": {"job.1": {"state": "exited", "exit_code": 1, "pid": None, "ready": False}}}
        args = ("a", {"job.1"}, {"job": 1}, {("job", 1): "b"}, set(), NODES)
        assert drain_left(*args, done) == frozenset()
        assert drain_left(*args, failed) == {"job.1"}

    def test_what_is_no_longer_wanted_is_done(self) -> None:
        """A slot scaled away (or a one-off run that ended) needs no replacement."""
        assert drain_left("a", {"web.3", "web.run-1"}, {"web": 2}, {}, set(), NODES, {}) == frozenset()

    def test_a_ready_row_on_a_down_node_does_not_count(self) -> None:
        """A node that is down says nothing current: its rows do not make an instance ready."""
        rows = rows_of({"c": ["web.1"]})
        assert drain_left("a", {"web.1"}, {"web": 1}, {("web", 1): "c"}, set(), NODES, rows) == {"web.1"}


@st.composite
def drains(draw):
    """One template of ``count`` slots over nodes a (draining), b and c, each ready or not."""
    count = draw(st.integers(1, 8))
    budget = draw(st.integers(1, 4))
    where = {o: draw(st.sampled_from(["a", "b", "c"])) for o in range(1, count + 1)}
    ready = {o for o in where if draw(st.booleans())}
    return count, budget, where, ready


class TestProperties:
    @settings(max_examples=100, deadline=None)
    @given(drains())
    def test_a_drain_never_takes_more_out_of_service_than_allowed(self, drain) -> None:
        """Moving every serving slot that does not stay leaves at most max_unavailable not
        ready (or no more than were already not ready); and it moves as many as that allows."""
        count, budget, where, ready = drain
        current = {("web", o): n for o, n in where.items()}
        by_node: dict[str, dict[str, list[int]]] = {}
        for o, n in sorted(where.items()):
            by_node.setdefault(n, {}).setdefault("web", []).append(o)
        rows = rows_of({}, {})
        for o, n in where.items():
            rows.setdefault(n, {})[instance_id("web", o)] = {"pid": 1, "ready": o in ready}
        stays = drain_stays({"web": Pace(count, budget)}, NODES, by_node, current, rows)
        serving = {o for o in ready if NODES[where[o]].state == "up"}
        on_drain = {o for o in serving if where[o] == "a"}
        assert {o for _, o in stays} <= on_drain
        leaving = on_drain - {o for _, o in stays}
        unavailable_before = count - len(serving)
        unavailable_after = unavailable_before + len(leaving)
        assert unavailable_after <= max(budget, unavailable_before)
        assert len(leaving) == min(len(on_drain), max(0, budget - unavailable_before))


class TestThroughTheReconcile:
    def test_a_drain_of_checked_instances_moves_one_at_a_time_as_each_turns_ready(self) -> None:
        """Three ready instances with a check on a drained node move one at a time: the next
        leaves only once the last replacement reports ready, and never more than one is out
        of service (issue 12)."""
        world = World.of("a", templates=[web(3, health=CHECK, update={"max_unavailable": 1})])
        world.step()
        world.ack()
        world.report_running()
        world.add_node("b")
        world.set_flags("a", cordoned=True, draining=True)
        moved = []
        for _ in range(3):
            result = world.step()
            on_b = world.on_node("b").get("web", [])
            moved.append(len(on_b))
            world.ack()
            world.report_running("b", ready=False)
            assert world.step().plan.placement == result.plan.placement  # waits: none ready
            world.report_running("b")
        assert moved == [1, 2, 3] and world.on_node("a") == {}

    def test_a_drain_of_instances_without_a_check_moves_them_all_at_once(self) -> None:
        """No check, no pace: the drain moves everything in one pass, as before."""
        world = World.of("a", templates=[web(3)])
        world.step()
        world.ack()
        world.report_running()
        world.add_node("b")
        world.set_flags("a", cordoned=True, draining=True)
        world.step()
        assert world.on_node("b") == {"web": [1, 2, 3]}
