"""Node liveness: silence to states, and the guard rails that stop the controller acting."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.liveness import Liveness, NodeState, judge, silent_state
from budget import examples

RULES = Liveness(interval=1.0, suspect_misses=3, down_misses=5, startup_grace=10.0)
UP, SUSPECT, DOWN = NodeState.UP, NodeState.SUSPECT, NodeState.DOWN


class TestSilence:
    def test_states_follow_missed_heartbeats(self):
        """Up below 3 missed beats, suspect from 3, down from 5."""
        assert silent_state(100.0, 102.9, RULES) is UP
        assert silent_state(100.0, 103.0, RULES) is SUSPECT
        assert silent_state(100.0, 104.9, RULES) is SUSPECT
        assert silent_state(100.0, 105.0, RULES) is DOWN

    @settings(max_examples=examples(200), deadline=None)
    @given(st.floats(0, 1e6), st.floats(0, 100), st.floats(0, 100))
    def test_more_silence_is_never_a_better_state(self, heard, a, b):
        """A node silent for longer is never judged healthier."""
        rank = {UP: 0, SUSPECT: 1, DOWN: 2}
        shorter, longer = sorted((a, b))
        assert rank[silent_state(heard, heard + shorter, RULES)] <= rank[silent_state(heard, heard + longer, RULES)]


class TestGuardRails:
    def test_a_silent_node_goes_down_when_the_rest_are_heard(self):
        """One of three nodes silent for 5 s is down, and moving is allowed."""
        verdict = judge({"a": 100.0, "b": 104.0, "c": 104.5}, 105.0, 0.0, RULES)
        assert verdict.states == {"a": DOWN, "b": UP, "c": UP}
        assert verdict.may_move

    def test_startup_grace_keeps_nodes_suspect(self):
        """Right after a controller start, nobody is declared down and nothing moves."""
        verdict = judge({"a": 0.0, "b": 8.0}, 9.0, 0.0, RULES)
        assert verdict.states["a"] is SUSPECT and verdict.in_grace and not verdict.may_move

    def test_most_nodes_silent_at_once_means_cut_off(self):
        """Two of three nodes silent: the controller assumes it is the one cut off."""
        verdict = judge({"a": 100.0, "b": 100.0, "c": 104.5}, 106.0, 0.0, RULES)
        assert verdict.cut_off and not verdict.may_move
        assert verdict.states == {"a": SUSPECT, "b": SUSPECT, "c": UP}

    def test_nodes_down_long_ago_do_not_count_towards_a_cut_off(self):
        """A long-dead node is left out when judging whether most went silent at once."""
        verdict = judge({"dead": 0.0, "a": 100.0, "b": 104.5}, 106.0, 0.0, RULES, already_down=["dead"])
        assert not verdict.cut_off
        assert verdict.states == {"dead": DOWN, "a": DOWN, "b": UP}

    def test_end_of_a_cut_off_gives_a_fresh_timeout(self):
        """Silence during a cut-off proves nothing: after it, nodes get down_after again."""
        during = judge({"a": 100.0, "b": 112.0, "c": 112.0}, 112.5, 0.0, RULES, regained_at=112.0)
        assert during.states["a"] is SUSPECT and not during.may_move
        after = judge({"a": 100.0, "b": 117.0, "c": 117.0}, 117.5, 0.0, RULES, regained_at=112.0)
        assert after.states["a"] is DOWN and after.may_move

    @settings(max_examples=examples(200), deadline=None)
    @given(
        heard=st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0, 200), min_size=1),
        now=st.floats(200, 400),
        started=st.floats(0, 400),
        down_before=st.sets(st.sampled_from("abcdefgh")),
    )
    def test_no_node_is_newly_down_while_moving_is_not_allowed(self, heard, now, started, down_before):
        """Whenever the verdict forbids moving, only nodes already down are down."""
        already = [n for n in down_before if n in heard]
        verdict = judge(heard, now, started, RULES, already_down=already)
        if not verdict.may_move:
            newly = {n for n, s in verdict.states.items() if s is DOWN} - set(already)
            assert not newly
