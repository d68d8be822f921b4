"""Cluster-wide rolling updates: the allowance bookkeeping, fed node states by hand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.rollout import Rollout, start_rollout, with_allowance

OLD = {"cmd": "old", "update": {"max_unavailable": 1}}
NEW = {"cmd": "new", "update": {"max_unavailable": 2}}


def test_nodes_wait_their_turn_and_keep_the_old_spec():
    """With budget 2 and two instances per node, one node rolls at a time."""
    rollout = start_rollout(None, NEW, "h2", 2, {"a": OLD, "b": OLD, "c": OLD})
    rollout.advance({"a": 2, "b": 2, "c": 2}, {})
    assert rollout.rolling == {"a": 2}
    assert rollout.spec_for("a") == with_allowance(NEW, 2)
    assert rollout.spec_for("b") == OLD and rollout.spec_for("c") == OLD
    rollout.advance({"a": 2, "b": 2, "c": 2}, {"a": True})
    assert rollout.rolling == {"b": 2} and rollout.spec_for("a") == NEW


def test_budget_is_shared_across_small_nodes():
    """A budget of 3 over nodes with one instance each rolls three nodes at once."""
    rollout = start_rollout(None, NEW, "h2", 3, {n: OLD for n in "abcd"})
    rollout.advance({n: 1 for n in "abcd"}, {})
    assert rollout.rolling == {"a": 1, "b": 1, "c": 1} and set(rollout.waiting) == {"d"}


def test_a_node_that_lost_its_instances_leaves_the_rollout():
    """A node running none of the template any more frees its allowance."""
    rollout = start_rollout(None, NEW, "h2", 1, {"a": OLD, "b": OLD})
    rollout.advance({"a": 1, "b": 1}, {})
    rollout.advance({"a": 0, "b": 1}, {})
    assert rollout.rolling == {"b": 1} and not rollout.waiting
    rollout.advance({"a": 0, "b": 1}, {"b": True})
    assert rollout.finished


def test_a_second_change_keeps_rolling_nodes_rolling():
    """An update during a rollout keeps the nodes already restarting (they hold budget)."""
    first = start_rollout(None, NEW, "h2", 1, {"a": OLD, "b": OLD})
    first.advance({"a": 1, "b": 1}, {})
    newer = {"cmd": "newer", "update": {"max_unavailable": 1}}
    second = start_rollout(first, newer, "h3", 1, {"a": with_allowance(NEW, 1), "b": OLD})
    assert second.rolling == {"a": 1} and set(second.waiting) == {"b"}
    assert second.spec_for("a") == with_allowance(newer, 1)


@settings(max_examples=150, deadline=None)
@given(
    budget=st.integers(1, 5),
    counts=st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 4), min_size=1),
    finishing=st.lists(st.sets(st.sampled_from("abcdefg")), max_size=8),
)
def test_allowances_never_exceed_the_budget_and_every_node_gets_its_turn(budget, counts, finishing):
    """Whatever finishes when, rolling allowances sum to at most the budget, and the
    rollout ends once every node has finished."""
    rollout = start_rollout(None, NEW, "h", budget, {n: OLD for n in counts})
    for done in finishing:
        rollout.advance(counts, {n: n in done for n in counts})
        assert sum(rollout.rolling.values()) <= budget
        assert all(share >= 1 for share in rollout.rolling.values())
    for _ in range(len(counts) + 1):
        rollout.advance(counts, {n: True for n in counts})
    assert rollout.finished


def test_rollout_with_no_nodes_is_finished_at_once():
    """A template that runs nowhere has nothing to roll."""
    assert Rollout(target=NEW, target_hash="h", budget=1).finished
