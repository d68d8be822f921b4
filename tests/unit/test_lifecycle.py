"""The instance state machine, exit classification and respawn backoff."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.lifecycle import (
    ALIVE,
    BACKOFF_CAP,
    TRANSITIONS,
    ExitKind,
    IllegalTransition,
    State,
    backoff_delay,
    Repeats,
    check_transition,
    classify_exit,
    classify_spawn_failure,
    repeat_error,
)

EXPECTED = (0, 3)
# (restart policy, exit code, killing signal, stopping) -> what the exit means
CLASSIFY_TABLE = [
    # the Manager asked for it: never a failure, whatever the policy or status
    ("always", 0, None, True, ExitKind.REQUESTED),
    ("always", None, 15, True, ExitKind.REQUESTED),
    ("on-failure", 1, None, True, ExitKind.REQUESTED),
    ("on-failure", None, 9, True, ExitKind.REQUESTED),
    ("never", 1, None, True, ExitKind.REQUESTED),
    ("never", None, 9, True, ExitKind.REQUESTED),
    # always: every exit restarts, even a clean one
    ("always", 0, None, False, ExitKind.RESTART),
    ("always", 1, None, False, ExitKind.RESTART),
    ("always", None, 9, False, ExitKind.RESTART),
    # on-failure: expected codes are final, other codes and every signal restart
    ("on-failure", 0, None, False, ExitKind.DONE),
    ("on-failure", 3, None, False, ExitKind.DONE),
    ("on-failure", 1, None, False, ExitKind.RESTART),
    ("on-failure", None, 15, False, ExitKind.RESTART),
    ("on-failure", None, 9, False, ExitKind.RESTART),
    # never: every exit is final
    ("never", 0, None, False, ExitKind.DONE),
    ("never", 1, None, False, ExitKind.DONE),
    ("never", None, 9, False, ExitKind.DONE),
]


class TestClassifyExit:
    @pytest.mark.parametrize(("restart", "code", "sig", "stopping", "kind"), CLASSIFY_TABLE)
    def test_exit_meaning_under_each_policy(
        self, restart: str, code: int | None, sig: int | None, stopping: bool, kind: ExitKind
    ) -> None:
        """Policy x (code | signal) x stopping gives the documented meaning."""
        assert classify_exit(restart, EXPECTED, code, sig, stopping) is kind

    def test_on_failure_with_no_expected_codes_restarts_clean_exits(self) -> None:
        """exitcodes = [] means no exit is expected, not even 0."""
        assert classify_exit("on-failure", (), 0, None, False) is ExitKind.RESTART

    def test_on_failure_with_unknown_status_restarts(self) -> None:
        """An exit whose status could not be read is treated as a failure."""
        assert classify_exit("on-failure", (0,), None, None, False) is ExitKind.RESTART


class TestBackoff:
    def test_first_failure_respawns_at_once(self) -> None:
        """The first restart of an instance waits nothing."""
        assert backoff_delay(0) == 0.0
        assert backoff_delay(1) == 0.0

    def test_second_failure_waits(self) -> None:
        """From the second failure on, there is a real delay."""
        assert backoff_delay(2) > 0

    def test_backoff_is_non_decreasing_and_capped(self) -> None:
        """Delays grow with failures and never pass the cap."""
        delays = [backoff_delay(n) for n in range(0, 200)]
        assert delays == sorted(delays)
        assert max(delays) == BACKOFF_CAP

    @settings(max_examples=200, deadline=None)
    @given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
    def test_backoff_monotonic_for_any_count(self, a: int, b: int) -> None:
        """Even after a huge number of failures the delay is finite, capped and ordered."""
        low, high = sorted((a, b))
        assert 0.0 <= backoff_delay(low) <= backoff_delay(high) <= BACKOFF_CAP

    def test_very_many_failures_do_not_overflow(self) -> None:
        """An instance failing for days keeps getting the capped delay, not an OverflowError."""
        assert backoff_delay(5000) == BACKOFF_CAP


ALL_PAIRS = list(itertools.product(State, State))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


class TestTransitions:
    def test_every_state_has_its_moves_listed(self) -> None:
        """TRANSITIONS covers every state."""
        assert set(TRANSITIONS) == set(State)

    @pytest.mark.parametrize(("old", "new"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
    def test_legal_transition_is_accepted(self, old: State, new: State) -> None:
        """Each listed move passes the check."""
        check_transition(old, new)

    @pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
    def test_illegal_transition_is_refused(self, old: State, new: State) -> None:
        """Every move not listed raises IllegalTransition naming both states."""
        with pytest.raises(IllegalTransition) as info:
            check_transition(old, new)
        assert info.value.message == f"instance cannot go from {old} to {new}"
        assert info.value.code == "illegal_transition"

    def test_every_state_is_reachable_from_stopped(self) -> None:
        """No state is dead code: each can be reached from a fresh instance."""
        seen = {State.STOPPED}
        frontier = [State.STOPPED]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen == set(State)

    def test_every_state_can_get_back_to_stopped(self) -> None:
        """From anywhere an instance can end up stopped again (no trap states)."""
        for start in State:
            seen = {start}
            frontier = [start]
            while frontier:
                for nxt in TRANSITIONS[frontier.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        frontier.append(nxt)
            assert State.STOPPED in seen, start

    def test_stopping_only_ends_in_stopped(self) -> None:
        """Once a stop is sent, the only way on is stopped."""
        assert TRANSITIONS[State.STOPPING] == frozenset({State.STOPPED})

    def test_alive_states_are_the_ones_with_a_process(self) -> None:
        """starting, running and stopping hold a live process; the others do not."""
        assert ALIVE == {State.STARTING, State.RUNNING, State.STOPPING}

    def test_state_prints_as_its_value(self) -> None:
        """States show as lower-case words in tables and events."""
        assert str(State.BACKOFF) == "backoff"


class TestSpawnFailure:
    """Issue 7: restart = "never" must not retry a spawn that failed."""

    @pytest.mark.parametrize(("restart", "kind"), [
        ("never", ExitKind.DONE), ("on-failure", ExitKind.RESTART), ("always", ExitKind.RESTART),
    ])
    def test_a_failed_spawn_is_final_only_under_never(self, restart: str, kind: ExitKind) -> None:
        """never: one try, done; on-failure and always: retried with backoff."""
        assert classify_spawn_failure(restart) is kind

    @pytest.mark.parametrize("old", [State.STOPPED, State.BACKOFF])
    def test_a_never_instance_whose_spawn_failed_can_become_exited(self, old: State) -> None:
        """A spawn starts from stopped or backoff, and under never ends in exited."""
        check_transition(old, State.EXITED)

    def test_the_same_error_is_counted_not_repeated(self) -> None:
        """The first error is reported; its repeats are counted; another error starts over."""
        first = repeat_error(None, "command 'x' not found")
        assert first.first and first.again == 0
        third = repeat_error(repeat_error(first, "command 'x' not found"), "command 'x' not found")
        assert third == Repeats("command 'x' not found", 3) and not third.first and third.again == 2
        other = repeat_error(third, "no such directory")
        assert other == Repeats("no such directory", 1) and other.first

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=30))
    def test_one_report_per_run_of_the_same_error(self, errors: list[str]) -> None:
        """Reports (``first``) happen exactly where the error changes."""
        repeats = None
        reports = []
        for error in errors:
            repeats = repeat_error(repeats, error)
            reports.append(repeats.first)
        assert reports == [i == 0 or errors[i] != errors[i - 1] for i in range(len(errors))]
