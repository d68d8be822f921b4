"""The instance state machine, exit classification, respawn backoff and the exit decision."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gaffer.agent.flapping import FlapState
from gaffer.agent.lifecycle import (
    ALIVE,
    BACKOFF_CAP,
    TRANSITIONS,
    Begin,
    Event,
    Exit,
    ExitKind,
    LIFECYCLE,
    IllegalTransition,
    Life,
    Outcome,
    Policy,
    State,
    Then,
    backoff_delay,
    begin,
    Repeats,
    check_transition,
    classify_exit,
    classify_spawn_failure,
    next_state,
    on_exit,
    repeat_error,
)
from gaffer.common.template import Flapping
from budget import examples

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

    @settings(max_examples=examples(200), deadline=None)
    @given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
    def test_backoff_monotonic_for_any_count(self, a: int, b: int) -> None:
        """Even after a huge number of failures the delay is finite, capped and ordered."""
        low, high = sorted((a, b))
        assert 0.0 <= backoff_delay(low) <= backoff_delay(high) <= BACKOFF_CAP

    def test_very_many_failures_do_not_overflow(self) -> None:
        """An instance failing for days keeps getting the capped delay, not an OverflowError."""
        assert backoff_delay(5000) == BACKOFF_CAP


ALL_PAIRS = list(itertools.product(LIFECYCLE, LIFECYCLE))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


class TestTransitions:
    def test_every_state_has_its_moves_listed(self) -> None:
        """TRANSITIONS covers every state."""
        assert set(TRANSITIONS) == set(LIFECYCLE)

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
        assert seen == set(LIFECYCLE)

    def test_every_state_can_get_back_to_stopped(self) -> None:
        """From anywhere an instance can end up stopped again (no trap states)."""
        for start in LIFECYCLE:
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
        """starting, running (ready or not) and stopping hold a live process; the others do not."""
        assert ALIVE == {State.STARTING, State.RUNNING, State.READY, State.UNHEALTHY, State.STOPPING}

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

    @settings(max_examples=examples(200), deadline=None)
    @given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=30))
    def test_one_report_per_run_of_the_same_error(self, errors: list[str]) -> None:
        """Reports (``first``) happen exactly where the error changes."""
        repeats = None
        reports = []
        for error in errors:
            repeats = repeat_error(repeats, error)
            reports.append(repeats.first)
        assert reports == [i == 0 or errors[i] != errors[i - 1] for i in range(len(errors))]


# ------------------------------------------------------------------------- next_state, on_exit

EVENT_TABLE = [
    (State.STOPPED, Event.SPAWNED, State.STARTING),
    (State.BACKOFF, Event.SPAWNED, State.STARTING),
    (State.RUNNING, Event.SPAWNED, State.STARTING),
    (State.STARTING, Event.UP, State.RUNNING),
    (State.STOPPED, Event.ADOPTED, State.RUNNING),
    (State.RUNNING, Event.STOP, State.STOPPING),
    (State.STOPPED, Event.WAIT, State.BACKOFF),
    (State.BACKOFF, Event.UNWAIT, State.STOPPED),
    (State.BACKOFF, Event.FAIL, State.FAILED),
    (State.EXITED, Event.RESET, State.STOPPED),
    (State.FAILED, Event.RESET, State.STOPPED),
]


class TestNextState:
    @pytest.mark.parametrize(("old", "event", "new"), EVENT_TABLE, ids=[f"{a}-{e.label}" for a, e, _ in EVENT_TABLE])
    def test_event_moves(self, old: State, event: Event, new: State) -> None:
        """Each event takes an instance from the states it makes sense in to one state."""
        assert next_state(old, event) is new

    @pytest.mark.parametrize("event", list(Event))
    def test_every_event_is_a_legal_transition_or_refused(self, event: Event) -> None:
        """From any state an event either gives a transition TRANSITIONS allows, or raises."""
        for state in LIFECYCLE:
            try:
                new = next_state(state, event)
            except IllegalTransition as exc:
                assert event.label in exc.message and str(state) in exc.message
                continue
            assert new is state or new in TRANSITIONS[state], (state, event, new)

    def test_a_stopping_instance_takes_no_event(self) -> None:
        """Once a stop is sent only its exit moves the instance on."""
        for event in Event:
            with pytest.raises(IllegalTransition):
                next_state(State.STOPPING, event)


FLAPPY = Flapping(attempts=3, window=30, retry_in=5, max_retry=1)
ALWAYS = Policy("always", (0,), FLAPPY)
T = 1000.0


def outcome(state: State, exit: Exit = Exit(1), policy: Policy = ALWAYS, flap: FlapState = FlapState(),
            failures: int = 0, **kw: object) -> Outcome:
    return on_exit(Life(state, failures, 0), exit, policy, flap, T, **kw)  # type: ignore[arg-type]


class TestOnExit:
    def test_a_requested_stop_converges_and_counts_nothing(self) -> None:
        """An exit of a stopping instance is stopped, "stop", a converge; flapping untouched."""
        got = outcome(State.STOPPING, Exit(None, 15), failures=2)
        assert got == Outcome(Life(State.STOPPED, 2, 0), FlapState(), "stop", Then.CONVERGE)

    def test_a_first_crash_respawns_at_once(self) -> None:
        """A running instance's crash: spawn now, one restart, one exit in the flapping window."""
        got = outcome(State.RUNNING)
        assert (got.then, got.life.restarts, got.life.failures, got.flap.exits) == (Then.SPAWN, 1, 1, (T,))

    def test_crashes_before_running_back_off(self) -> None:
        """A second exit before running waits BACKOFF_BASE in backoff."""
        got = outcome(State.STARTING, failures=1)
        assert (got.life.state, got.then, got.delay) == (State.BACKOFF, Then.RETRY, 0.1)

    def test_the_attempts_th_exit_suspends_and_announces(self) -> None:
        """attempts exits in the window: backoff, suspended until now + retry_in, announced once."""
        flap = FlapState(exits=(T - 2, T - 1))
        got = outcome(State.STARTING, flap=flap)
        assert (got.life.state, got.then, got.suspend, got.announce) == (State.BACKOFF, Then.NOTHING, T + 5, True)
        again = outcome(State.STARTING, flap=got.flap)
        assert (again.suspend, again.announce) == (T + 5, False)

    def test_past_max_retry_gives_up(self) -> None:
        """A flap beyond max_retry: the template gives up."""
        flap = FlapState(exits=(T - 2, T - 1), retries=1, resume_at=T - 3)
        got = outcome(State.STARTING, flap=flap)
        assert got.then is Then.GIVE_UP and got.flap.failed

    def test_never_and_expected_codes_are_final(self) -> None:
        """restart=never, or on-failure with an expected code: exited, nothing next."""
        assert outcome(State.RUNNING, policy=Policy("never", (0,), None)).life.state is State.EXITED
        got = outcome(State.RUNNING, Exit(0), Policy("on-failure", (0,), FLAPPY))
        assert (got.life.state, got.then, got.event) == (State.EXITED, Then.NOTHING, "exit")

    def test_a_spawn_error_under_never_is_final(self) -> None:
        """A failed spawn under never ends exited; under always it is a failure like a crash."""
        assert outcome(State.STOPPED, Exit(error="no"), Policy("never")).life.state is State.EXITED
        got = outcome(State.STOPPED, Exit(error="no"), Policy("always"), failures=3)
        assert (got.then, got.life.failures) == (Then.RETRY, 4)

    def test_a_one_off_run_ends_whatever_happened(self) -> None:
        """A one-off run is never restarted: exited, or stopped if asked to stop."""
        assert outcome(State.STARTING, oneoff=True).life.state is State.EXITED
        assert outcome(State.STOPPING, oneoff=True).life.state is State.STOPPED

    def test_an_unwanted_instance_is_not_restarted(self) -> None:
        """An instance no longer wanted here that crashes ends stopped, and a converge follows."""
        got = outcome(State.RUNNING, wanted=False)
        assert (got.life.state, got.then, got.flap) == (State.STOPPED, Then.CONVERGE, FlapState())

    def test_held_the_respawn_waits(self) -> None:
        """Held, a respawn that would be immediate waits in backoff with no timer."""
        got = outcome(State.RUNNING, holding=True)
        assert (got.life.state, got.then) == (State.BACKOFF, Then.NOTHING)

    def test_begin_follows_the_template(self) -> None:
        """begin: failed before held before suspended; otherwise spawn."""
        assert begin(FlapState(failed=True), True, T) is Begin.FAIL
        assert begin(FlapState(), True, T) is Begin.WAIT
        assert begin(FlapState(resume_at=T + 1), False, T) is Begin.WAIT
        assert begin(FlapState(resume_at=T), False, T) is Begin.SPAWN


LIVES = st.builds(
    Life, st.sampled_from([State.STARTING, State.RUNNING, State.STOPPING]), st.integers(0, 6), st.integers(0, 3)
)
EXITS = st.one_of(
    st.builds(Exit, st.integers(0, 3), st.none()),
    st.builds(Exit, st.none(), st.sampled_from([9, 15])),
    st.builds(Exit, st.none(), st.none(), st.just("cannot run")),
)
POLICIES = st.builds(
    Policy,
    st.sampled_from(["always", "on-failure", "never"]),
    st.sampled_from([(0,), (0, 3), ()]),
    st.sampled_from([None, FLAPPY, Flapping(attempts=1, window=10, retry_in=1, max_retry=0)]),
)
FLAPS = st.sampled_from([
    FlapState(), FlapState(exits=(T - 1,)), FlapState(exits=(T - 2, T - 1)),
    FlapState(retries=1, resume_at=T + 3), FlapState(retries=2, failed=True),
])


class TestOnExitProperties:
    @settings(max_examples=examples(500), deadline=None)
    @given(LIVES, EXITS, POLICIES, FLAPS, st.booleans(), st.booleans(), st.booleans())
    def test_outcomes_are_legal_and_safe(
        self, life: Life, exit: Exit, policy: Policy, flap: FlapState, wanted: bool, holding: bool, oneoff: bool
    ) -> None:
        """Every outcome is a legal move; held or unwanted never spawns; requested exits never
        count; a spawn error is always an "exit"."""
        assume(exit.error is None or life.state is not State.STOPPING)  # spawn errors come from spawns
        got = on_exit(life, exit, policy, flap, T, wanted=wanted, holding=holding, oneoff=oneoff)
        if got.then is not Then.SPAWN:
            assert got.life.state is life.state or got.life.state in TRANSITIONS[life.state]
        if holding or not wanted:
            assert got.then is not Then.SPAWN
        if not wanted or oneoff:
            assert got.then not in (Then.RETRY, Then.FAIL, Then.GIVE_UP) and got.suspend is None
        if life.state is State.STOPPING and exit.error is None:
            assert got.flap == flap and got.life.failures == life.failures
        if exit.error is not None:
            assert got.event == "exit"
        if got.then is Then.RETRY:
            assert got.delay > 0 and got.life.state is State.BACKOFF
        assert got.announce is False or got.suspend is not None
