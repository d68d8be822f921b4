"""Cluster-wide rolling updates: the allowance bookkeeping as values, fed node states by hand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.orders import Order, Version
from gaffer.controller.rollout import Rollout, advance, progress, start_rollout
from gaffer.testing import template
from budget import examples

OLD = Version.of(template("web", args=["old"]), 0)
NEW = Version.of(template("web", args=["new"]), 0)
NEWER = Version.of(template("web", args=["new"]), 1)


def sent(*nodes: str, version: Version = OLD, allowance: int = 1) -> dict[str, Order]:
    return {node: Order(version, allowance) for node in nodes}


def test_nodes_wait_their_turn_and_keep_the_old_order():
    """With budget 2 and two instances per node, one node rolls at a time."""
    rollout = advance(start_rollout(None, NEW, 2, sent("a", "b", "c")), {"a": 2, "b": 2, "c": 2}, {})
    assert rollout.rolling == {"a": 2}
    assert rollout.order_for("a", 2) == Order(NEW, 2)
    assert rollout.order_for("b", 2) == Order(OLD, 1) == rollout.order_for("c", 2)
    rollout = advance(rollout, {"a": 2, "b": 2, "c": 2}, {"a": True})
    assert rollout.rolling == {"b": 2} and rollout.order_for("a", 2) == Order(NEW, 2)


def test_advance_returns_a_new_value_and_leaves_the_old_one_alone():
    """A rollout is a value: advancing gives another one, the input is unchanged."""
    first = start_rollout(None, NEW, 1, sent("a", "b"))
    second = advance(first, {"a": 1, "b": 1}, {})
    assert first.rolling == {} and set(first.waiting) == {"a", "b"}
    assert second.rolling == {"a": 1} and set(second.waiting) == {"b"}
    assert advance(second, {"a": 1, "b": 1}, {}) is second


def test_budget_is_shared_across_small_nodes():
    """A budget of 3 over nodes with one instance each rolls three nodes at once."""
    rollout = advance(start_rollout(None, NEW, 3, sent(*"abcd")), {n: 1 for n in "abcd"}, {})
    assert rollout.rolling == {"a": 1, "b": 1, "c": 1} and set(rollout.waiting) == {"d"}


def test_a_node_that_lost_its_instances_leaves_the_rollout():
    """A node running none of the template any more frees its allowance."""
    rollout = advance(start_rollout(None, NEW, 1, sent("a", "b")), {"a": 1, "b": 1}, {})
    rollout = advance(rollout, {"a": 0, "b": 1}, {})
    assert rollout.rolling == {"b": 1} and not rollout.waiting
    assert advance(rollout, {"a": 0, "b": 1}, {"b": True}).finished


def test_a_second_change_keeps_rolling_nodes_rolling():
    """An update during a rollout keeps the nodes already restarting (they hold budget)."""
    first = advance(start_rollout(None, NEW, 1, sent("a", "b")), {"a": 1, "b": 1}, {})
    second = start_rollout(first, NEWER, 1, {"a": Order(NEW, 1), "b": Order(OLD, 1)})
    assert second.rolling == {"a": 1} and set(second.waiting) == {"b"}
    assert second.order_for("a", 1) == Order(NEWER, 1)


def test_a_smaller_budget_caps_the_allowances_carried_over():
    """Nodes carried over from a rollout with a larger budget never sum over the new one."""
    first = advance(start_rollout(None, NEW, 4, sent("a", "b")), {"a": 3, "b": 3}, {})
    assert first.rolling == {"a": 3, "b": 1}
    second = start_rollout(first, NEWER, 2, {"a": Order(NEW, 3), "b": Order(NEW, 1)})
    assert second.rolling == {"a": 2} and second.waiting == {"b": Order(NEW, 1)}


@settings(max_examples=examples(150), deadline=None)
@given(
    budget=st.integers(1, 5),
    counts=st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 4), min_size=1),
    finishing=st.lists(st.sets(st.sampled_from("abcdefg")), max_size=8),
    restart_at=st.integers(0, 8),
    second_budget=st.integers(1, 5),
)
def test_allowances_never_exceed_the_budget_and_every_node_gets_its_turn(
    budget, counts, finishing, restart_at, second_budget,
):
    """Whatever finishes when, and whatever second change starts over the first, rolling
    allowances sum to at most the budget, and the rollout ends once every node finished."""
    rollout = start_rollout(None, NEW, budget, sent(*counts))
    for step, done in enumerate(finishing):
        if step == restart_at:
            orders = {n: rollout.order_for(n, budget) for n in counts}
            rollout = start_rollout(rollout, NEWER, second_budget, orders)
        rollout = advance(rollout, counts, {n: n in done for n in counts})
        assert sum(rollout.rolling.values()) <= rollout.budget
        assert all(share >= 1 for share in rollout.rolling.values())
    for _ in range(len(counts) + 1):
        rollout = advance(rollout, counts, {n: True for n in counts})
    assert rollout.finished


def test_rollout_with_no_nodes_is_finished_at_once():
    """A template that runs nowhere has nothing to roll."""
    assert Rollout(target=NEW, budget=1).finished


def test_a_restart_is_a_new_version_of_the_same_spec():
    """Restarting changes the version (and the hash agents report), never the spec."""
    assert NEWER.spec == NEW.spec
    assert NEWER.key != NEW.key and NEWER.launch_hash != NEW.launch_hash
    assert "numprocesses" not in NEW.spec


def test_a_node_outside_the_rollout_runs_the_target_with_the_templates_allowance():
    """A node new to the template (or done) is not held back: target version, own allowance."""
    rollout = advance(start_rollout(None, NEW, 1, sent("a", "b")), {"a": 1, "b": 1, "c": 1}, {})
    assert rollout.order_for("c", 3) == Order(NEW, 3)
    assert rollout.order_for("a", 3) == Order(NEW, 1)
    assert rollout.order_for("b", 3) == Order(OLD, 1)


def test_start_rollout_never_has_a_budget_below_one():
    """max_unavailable 0 still lets one node roll at a time (else it would never finish)."""
    rollout = advance(start_rollout(None, NEW, 0, sent("a")), {"a": 2}, {})
    assert rollout.budget == 1 and rollout.rolling == {"a": 1}


def test_no_progress_for_the_deadline_makes_it_stuck_and_stuck_gives_no_turns():
    """Stuck after ``deadline`` seconds with no more new instances ready; a stuck rollout sends
    no waiting node its turn even when its rolling node leaves; progress unsticks it."""
    rollout = advance(start_rollout(None, NEW, 1, sent("a", "b"), now=10.0, deadline=30.0), {"a": 1, "b": 1}, {})
    assert not progress(rollout, 0, 39.9).stuck
    stuck = progress(rollout, 0, 40.0)
    assert stuck.stuck and not stuck.due(1000.0)
    assert advance(stuck, {"a": 0, "b": 1}, {}).rolling == {}
    moving = progress(stuck, 1, 41.0)
    assert not moving.stuck and moving.progress_at == 41.0 and moving.best == 1


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 50.0), st.integers(0, 6)), max_size=20), st.floats(1.0, 100.0))
def test_stuck_exactly_when_the_deadline_passed_since_the_last_progress(
    events: list[tuple[float, int]], deadline: float
) -> None:
    """Fed (elapsed, ready) readings, a rollout is stuck exactly when no reading has exceeded
    the best count for ``deadline`` seconds."""
    rollout = start_rollout(None, NEW, 1, sent("a"), now=0.0, deadline=deadline)
    now, best, last = 0.0, 0, 0.0
    for elapsed, ready in events:
        now += elapsed
        if ready > best:
            best, last = ready, now
        rollout = progress(rollout, ready, now)
        assert rollout.best == best and rollout.progress_at == last
        assert rollout.stuck == (now - last >= deadline)
