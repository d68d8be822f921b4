"""The readiness policy (agent/health.py): scenarios, a reference model and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent import health
from gaffer.agent.lifecycle import State
from gaffer.common.healthspec import HealthCheck

T0 = 100.0


def check(**fields) -> HealthCheck:
    values = {"type": "tcp", "port": "1", "interval": 1.0, "timeout": 0.5}
    values.update(fields)
    return HealthCheck(**values)


def run(spec: HealthCheck, results: list[bool], *, restart: bool = True, start: float = T0) -> list[health.Verdict]:
    """Each result in turn, every check begun the moment it is due and taking no time."""
    watch = health.first(start)
    verdicts = []
    for ok in results:
        now = watch.next_at
        began = health.begin(watch, now)
        assert began is not None
        verdict = health.record(spec, began, ok, now, restart=restart)
        verdicts.append(verdict)
        watch = verdict.watch
    return verdicts


class TestScenarios:
    def test_the_first_check_is_due_as_soon_as_the_instance_is_up(self):
        """An instance is checked the moment it comes up, not an interval later."""
        assert health.due_in(health.first(T0), T0) == 0.0

    def test_one_success_makes_a_running_instance_ready(self):
        """With success_threshold 1 the first passing check announces ready, once."""
        verdicts = run(check(), [True, True])
        assert [v.became for v in verdicts] == [State.READY, None]

    def test_failures_make_it_unhealthy_at_the_threshold_and_ask_for_a_restart(self):
        """Three failures in a row (the default): unhealthy on the third, restart asked once."""
        verdicts = run(check(), [True, False, False, False, False])
        assert [v.became for v in verdicts] == [State.READY, None, None, State.UNHEALTHY, None]
        assert [v.restart for v in verdicts] == [False, False, False, True, False]
        assert verdicts[3].watch.failures == 3

    def test_without_restart_on_unhealthy_no_restart_is_asked(self):
        """restart_on_unhealthy = false: unhealthy is announced, nothing restarted."""
        verdicts = run(check(failure_threshold=1), [False], restart=False)
        assert verdicts[0].became is State.UNHEALTHY and not verdicts[0].restart

    def test_a_success_between_failures_starts_the_count_again(self):
        """Failures count only in a row."""
        verdicts = run(check(), [False, False, True, False, False])
        assert all(v.watch.status is not State.UNHEALTHY for v in verdicts)

    def test_failures_in_the_start_period_do_not_count(self):
        """A slow starter failing for its start period is not unhealthy; a success still counts."""
        spec = check(start_period=5.0, failure_threshold=1)
        verdicts = run(spec, [False] * 5 + [True])
        assert [v.became for v in verdicts] == [None] * 5 + [State.READY]
        assert all(v.watch.failures == 0 for v in verdicts)

    def test_unhealthy_recovers_to_ready_after_success_threshold(self):
        """unhealthy -> ready takes success_threshold passing checks in a row."""
        verdicts = run(check(failure_threshold=1, success_threshold=2), [False, True, True])
        assert [v.became for v in verdicts] == [State.UNHEALTHY, None, State.READY]

    def test_the_next_check_is_an_interval_after_the_last_began(self):
        """A regular cadence: interval from start to start; at once if a check overran."""
        spec = check(interval=2.0, timeout=2.0)
        began = health.begin(health.first(T0), T0)
        assert health.record(spec, began, True, T0 + 0.5).watch.next_at == T0 + 2.0
        assert health.record(spec, began, True, T0 + 2.5).watch.next_at == T0 + 2.5

    def test_a_result_with_no_check_in_flight_changes_nothing(self):
        """A stale result (its check was never begun) is ignored."""
        watch = health.first(T0)
        assert health.record(check(failure_threshold=1), watch, False, T0) == health.Verdict(watch)

    def test_ready_1_makes_it_ready_once(self):
        """notify: READY=1 is announced once, a second one changes nothing."""
        first = health.notified(health.first(T0))
        assert first.became is State.READY
        assert health.notified(first.watch).became is None


CHECKS = st.builds(
    check,
    interval=st.floats(0.1, 10),
    start_period=st.sampled_from([0.0, 0.5, 3.0, 20.0]),
    failure_threshold=st.integers(1, 5),
    success_threshold=st.integers(1, 5),
).filter(lambda c: c.timeout <= c.interval)
STEPS = st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.floats(0, 3)), max_size=60)


class TestProperties:
    @given(spec=CHECKS, steps=STEPS, restart=st.booleans())
    def test_the_status_is_the_reference_models(self, spec, steps, restart):
        """Driven at random times with random results, the policy equals a literal model: the
        schedule never lets two checks run at once, start-period failures never count, exactly
        failure_threshold counted failures in a row make unhealthy (restart asked then, and only
        with restart_on_unhealthy), success_threshold successes in a row make ready."""
        watch = health.first(T0)
        status, successes, failures = State.RUNNING, 0, 0
        now = T0
        for ok, duration, late in steps:
            wait = health.due_in(watch, now)
            assert wait is not None
            assert health.begin(watch, now + wait - 0.001) is None or wait < 0.001
            now += wait + late
            began = health.begin(watch, now)
            assert began is not None and began.busy
            assert health.begin(began, now) is None and health.due_in(began, now) is None
            end = now + duration * spec.timeout
            verdict = health.record(spec, began, ok, end, restart=restart)
            became = None
            if ok:
                successes, failures = successes + 1, 0
                if status is not State.READY and successes >= spec.success_threshold:
                    status = became = State.READY
            elif now < T0 + spec.start_period:
                successes = 0
            else:
                successes, failures = 0, failures + 1
                if status is not State.UNHEALTHY and failures == spec.failure_threshold:
                    status = became = State.UNHEALTHY
            assert (verdict.watch.status, verdict.became) == (status, became)
            assert (verdict.watch.successes, verdict.watch.failures) == (successes, failures)
            assert verdict.restart == (restart and became is State.UNHEALTHY)
            assert verdict.watch.next_at >= now + spec.interval - 1e-9
            watch, now = verdict.watch, end

    @given(spec=CHECKS, results=st.lists(st.booleans(), max_size=40))
    def test_start_period_failures_never_count(self, spec, results):
        """Every check inside a start period long enough for all of them: never unhealthy."""
        long = HealthCheck(**{**spec.__dict__, "start_period": 10_000.0})
        for verdict in run(long, results):
            assert verdict.watch.failures == 0 and verdict.watch.status is not State.UNHEALTHY
            assert not verdict.restart

    @given(spec=CHECKS, before=st.integers(0, 6))
    def test_exactly_failure_threshold_failures_make_unhealthy(self, spec, before):
        """After a pass, n failures in a row: unhealthy exactly when n reaches failure_threshold."""
        ready = run(spec, [True] * spec.success_threshold)[-1].watch
        watch = ready
        for n in range(1, spec.failure_threshold + before + 1):
            began = health.begin(watch, max(watch.next_at, T0 + spec.start_period))
            verdict = health.record(spec, began, False, began.began)
            assert (verdict.watch.status is State.UNHEALTHY) == (n >= spec.failure_threshold)
            assert (verdict.became is State.UNHEALTHY) == (n == spec.failure_threshold)
            watch = verdict.watch
