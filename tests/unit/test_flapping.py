"""Crash-loop protection: worked examples, then properties over random policies and exit times.

Times sit on a quarter-second grid so that exits land exactly on window and suspension
boundaries, where off-by-one mistakes live.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.flapping import FlapDecision, FlapState, Verdict, record_exit, reset
from gaffer.common.template import Flapping
from budget import examples

FLAPS = (Verdict.SUSPEND, Verdict.GIVE_UP)


@dataclass(frozen=True)
class Step:
    now: float
    before: FlapState
    decision: FlapDecision

    @property
    def verdict(self) -> Verdict:
        return self.decision.verdict

    @property
    def after(self) -> FlapState:
        return self.decision.state

    @property
    def counts(self) -> bool:
        """Whether this exit was judged outside a suspension and before failure."""
        return not self.before.failed and not self.before.suspended(self.now)

    @property
    def flapped(self) -> bool:
        return self.counts and self.verdict in FLAPS


def run(policy: Flapping | None, times: list[float]) -> list[Step]:
    state = FlapState()
    steps = []
    for now in times:
        decision = record_exit(policy, state, now)
        steps.append(Step(now, state, decision))
        state = decision.state
    return steps


def verdicts(policy: Flapping | None, times: list[float]) -> list[Verdict]:
    return [step.verdict for step in run(policy, times)]


R, S, G = Verdict.RESPAWN, Verdict.SUSPEND, Verdict.GIVE_UP


class TestWorkedExamples:
    def test_suspend_on_attempts_th_exit_then_give_up(self) -> None:
        """3 exits in 10 s suspend for 5 s; exits while suspended are ignored; the 2nd flap gives up."""
        policy = Flapping(attempts=3, window=10, retry_in=5, max_retry=1)
        steps = run(policy, [0, 1, 2, 3, 6.9, 7, 8, 9, 100])
        assert [s.verdict for s in steps] == [R, R, S, S, S, R, R, G, G]
        assert steps[2].decision.resume_at == 7
        assert steps[3].after == steps[2].after
        assert steps[7].after.failed and steps[7].after.retries == 2

    def test_exit_exactly_a_window_old_no_longer_counts(self) -> None:
        """The window is half-open: an exit ``window`` seconds ago has dropped out."""
        policy = Flapping(attempts=2, window=10, retry_in=5, max_retry=3)
        assert verdicts(policy, [0, 10, 20, 30]) == [R, R, R, R]
        assert verdicts(policy, [0, 9.75]) == [R, S]

    def test_exits_at_the_same_instant_all_count(self) -> None:
        """Simultaneous exits of several instances are separate exits."""
        policy = Flapping(attempts=3, window=1, retry_in=1, max_retry=3)
        assert verdicts(policy, [5, 5, 5]) == [R, R, S]

    def test_resume_time_itself_is_outside_the_suspension(self) -> None:
        """An exit exactly at resume_at is counted afresh."""
        policy = Flapping(attempts=1, window=1, retry_in=5, max_retry=-1)
        steps = run(policy, [0, 4.75, 5])
        assert [s.verdict for s in steps] == [S, S, S]
        assert [s.after.retries for s in steps] == [1, 1, 2]
        assert steps[2].decision.resume_at == 10

    def test_retries_reset_a_full_window_after_resume(self) -> None:
        """A flap a whole window after the resume starts counting retries from zero again."""
        policy = Flapping(attempts=2, window=10, retry_in=5, max_retry=1)
        # suspended 1 -> 6; flapping again at 16 = resume + window: a fresh first retry
        assert verdicts(policy, [0, 1, 16, 17]) == [R, S, R, S]
        # flapping again before 16: the second retry, past max_retry
        assert verdicts(policy, [0, 1, 6, 7]) == [R, S, R, G]

    def test_retry_reset_boundary_is_exactly_one_window(self) -> None:
        """A flap exactly ``window`` after the resume is fresh; a quarter second earlier is not."""
        policy = Flapping(attempts=1, window=10, retry_in=5, max_retry=1)
        assert verdicts(policy, [0, 15]) == [S, S]
        assert verdicts(policy, [0, 14.75]) == [S, G]

    def test_max_retry_zero_gives_up_on_first_flap(self) -> None:
        """max_retry = 0 allows no retry at all."""
        policy = Flapping(attempts=2, window=10, retry_in=5, max_retry=0)
        assert verdicts(policy, [0, 1, 2]) == [R, G, G]

    def test_no_policy_always_respawns(self) -> None:
        """flapping = false: every exit respawns and nothing is remembered."""
        steps = run(None, [0, 0, 0, 0, 0, 0, 0])
        assert [s.verdict for s in steps] == [R] * 7
        assert all(s.after == FlapState() for s in steps)

    def test_reset_clears_failure(self) -> None:
        """An operator's start makes a failed template fresh again."""
        assert reset() == FlapState()
        assert not reset().failed


QUARTERS = st.integers(min_value=0, max_value=4000).map(lambda q: q / 4)
POLICIES = st.builds(
    Flapping,
    attempts=st.integers(1, 6),
    window=st.integers(1, 200).map(lambda q: q / 4),
    retry_in=st.integers(0, 200).map(lambda q: q / 4),
    max_retry=st.integers(-1, 4),
)
EXIT_TIMES = st.lists(QUARTERS, max_size=60).map(sorted)
RANDOM = settings(max_examples=examples(200), deadline=None)


class TestProperties:
    @RANDOM
    @given(POLICIES, EXIT_TIMES)
    def test_no_flap_while_fewer_than_attempts_exits_in_the_window(
        self, policy: Flapping, times: list[float]
    ) -> None:
        """Outside a suspension, fewer than ``attempts`` exits in the window always respawn."""
        for i, step in enumerate(run(policy, times)):
            in_window = [t for t in times[: i + 1] if t > step.now - policy.window]
            if step.counts and len(in_window) < policy.attempts:
                assert step.verdict is R

    @RANDOM
    @given(POLICIES, EXIT_TIMES)
    def test_flap_exactly_on_the_attempts_th_counted_exit(
        self, policy: Flapping, times: list[float]
    ) -> None:
        """A flap happens exactly when the attempts-th exit since the last flap falls in one window."""
        counted: list[float] = []
        for step in run(policy, times):
            if not step.counts:
                continue
            counted = [t for t in counted if t > step.now - policy.window] + [step.now]
            assert step.flapped == (len(counted) >= policy.attempts)
            if step.flapped:
                counted = []

    @RANDOM
    @given(POLICIES, EXIT_TIMES)
    def test_exits_during_suspension_change_nothing(self, policy: Flapping, times: list[float]) -> None:
        """While suspended, every exit answers SUSPEND and leaves the state as it was."""
        for step in run(policy, times):
            if not step.before.failed and step.before.suspended(step.now):
                assert step.verdict is S
                assert step.after == step.before

    @RANDOM
    @given(POLICIES, EXIT_TIMES)
    def test_retry_count_and_give_up_follow_the_policy(self, policy: Flapping, times: list[float]) -> None:
        """Each flap adds a retry (from zero a window after the resume); past max_retry it gives up."""
        for step in run(policy, times):
            if not step.flapped:
                continue
            resumed = step.before.resume_at
            fresh = resumed is not None and step.now >= resumed + policy.window
            assert step.after.retries == (1 if fresh else step.before.retries + 1)
            gives_up = 0 <= policy.max_retry < step.after.retries
            assert step.verdict is (G if gives_up else S)
            if not gives_up:
                assert step.after.resume_at == step.now + policy.retry_in
                assert step.after.exits == ()

    @RANDOM
    @given(POLICIES, EXIT_TIMES)
    def test_once_failed_always_give_up(self, policy: Flapping, times: list[float]) -> None:
        """After GIVE_UP, every later exit gives up again and the state never changes."""
        steps = run(policy, times)
        first = next((i for i, s in enumerate(steps) if s.verdict is G), None)
        if first is None:
            return
        assert steps[first].after.failed
        for step in steps[first + 1 :]:
            assert step.verdict is G
            assert step.after == step.before

    @RANDOM
    @given(POLICIES.map(lambda p: Flapping(p.attempts, p.window, p.retry_in, -1)), EXIT_TIMES)
    def test_max_retry_minus_one_never_gives_up(self, policy: Flapping, times: list[float]) -> None:
        """Retrying forever means no sequence of exits ever fails the template."""
        assert G not in verdicts(policy, times)

    @RANDOM
    @given(st.lists(QUARTERS, max_size=60).map(sorted))
    def test_no_policy_never_suspends(self, times: list[float]) -> None:
        """Without a policy every exit respawns and the state stays empty."""
        assert all(s.verdict is R and s.after == FlapState() for s in run(None, times))

    @RANDOM
    @given(POLICIES)
    def test_give_up_after_exactly_max_retry_plus_one_dense_flaps(self, policy: Flapping) -> None:
        """With every flap within a window of the last resume, flap number max_retry + 1 gives up."""
        flaps = self.flaps_until_give_up(policy, limit_flaps=policy.max_retry + 2)
        expected = policy.max_retry + 1 if policy.max_retry >= 0 else None
        assert flaps == expected

    @staticmethod
    def flaps_until_give_up(policy: Flapping, limit_flaps: int) -> int | None:
        """Feed evenly spaced exits, ``attempts`` of them fitting inside one window."""
        step = policy.window / (policy.attempts + 1)
        state, now, flaps = FlapState(), 0.0, 0
        while flaps < limit_flaps:
            before = state
            decision = record_exit(policy, state, now)
            state = decision.state
            if not before.suspended(now) and decision.verdict in FLAPS:
                flaps += 1
                if decision.verdict is G:
                    return flaps
            now += step
        return None

    @RANDOM
    @given(POLICIES.map(lambda p: Flapping(p.attempts, p.window, p.retry_in, -1)))
    def test_dense_flaps_with_unlimited_retries_keep_suspending(self, policy: Flapping) -> None:
        """max_retry = -1 survives any number of dense flaps."""
        assert self.flaps_until_give_up(policy, limit_flaps=25) is None


def run_many(policy: Flapping, exits: list[tuple[float, int]]) -> tuple[dict[int, FlapState], list[tuple[int, Verdict]]]:
    """Exits of several instances in one timeline, each instance with its own history (as the
    Manager keeps them): the final states and every (instance, verdict)."""
    states: dict[int, FlapState] = {}
    said = []
    for now, who in exits:
        decision = record_exit(policy, states.get(who, FlapState()), now)
        states[who] = decision.state
        said.append((who, decision.verdict))
    return states, said


def spread(policy: Flapping, exits: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The exits of ``exits`` kept while each instance has fewer than ``attempts`` in any window
    (what an outside killer picking random victims does to a healthy template)."""
    kept: list[tuple[float, int]] = []
    for now, who in sorted(exits):
        recent = [t for t, w in kept if w == who and t > now - policy.window]
        if len(recent) + 1 < policy.attempts:
            kept.append((now, who))
    return kept


EXITS_OF_MANY = st.lists(st.tuples(QUARTERS, st.integers(1, 10)), max_size=80)


class TestPerInstance:
    @RANDOM
    @given(POLICIES, EXITS_OF_MANY)
    def test_kills_spread_over_instances_never_suspend_anything(
        self, policy: Flapping, exits: list[tuple[float, int]]
    ) -> None:
        """Exits spread over many instances, fewer than attempts per instance per window, never
        suspend anything, however many there are in all (issue 12)."""
        _, said = run_many(policy, spread(policy, exits))
        assert all(verdict is R for _, verdict in said)

    @RANDOM
    @given(POLICIES.filter(lambda p: p.max_retry >= 0), EXITS_OF_MANY)
    def test_an_instance_that_exits_at_once_is_suspended_then_failed_alone(
        self, policy: Flapping, sibling_exits: list[tuple[float, int]]
    ) -> None:
        """Instance 0 exits soon after each start (attempts exits fit in one window, the first
        at each resume); it is suspended max_retry times then failed, while its siblings'
        verdicts and histories are exactly what they would be without it."""
        siblings = spread(policy, sibling_exits)
        looping: list[tuple[float, int]] = []
        state, now, gap = FlapState(), 0.0, policy.window / (policy.attempts + 1)
        while not state.failed and len(looping) < 1000:
            looping.append((now, 0))
            state = record_exit(policy, state, now).state
            resume = state.resume_at
            now = resume if resume is not None and resume > now else now + gap
        states, said = run_many(policy, sorted(siblings + looping))
        mine = [verdict for who, verdict in said if who == 0]
        assert mine.count(S) == policy.max_retry and mine[-1] is G and states[0].failed
        alone_states, alone_said = run_many(policy, siblings)
        assert [v for v in said if v[0] != 0] == alone_said
        assert {w: s for w, s in states.items() if w != 0} == alone_states
