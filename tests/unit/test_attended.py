"""One-off runs belong to their client (issue 9): the lease decision (pure), the Manager carrying
it out on a fake clock and fake processes, and gafferctl run's pure parts."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent.attended import MAX_LEASE, RunView, lapsed, renewed
from gaffer.agent.manager import Manager
from gaffer.cli.attach import exit_code, parse_env
from gaffer.common import arguments as arg
from gaffer.common.errors import InvalidArgument
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses


class TestLapsed:
    def test_a_lapsed_live_run_is_stopped_and_a_lapsed_ended_one_forgotten(self) -> None:
        """At its lease's end a running run is stopped, an ended one forgotten; unleased ones are left alone."""
        runs = [RunView("run-1", 10.0, True), RunView("run-2", 10.0, False), RunView("run-3", None, True),
                RunView("run-4", 15.0, True)]
        verdict = lapsed(runs, 10.0)
        assert (verdict.stop, verdict.forget, verdict.next_check) == (("run-1",), ("run-2",), 15.0)

    def test_nothing_happens_before_the_lease_ends(self) -> None:
        """A run whose lease is still running is neither stopped nor forgotten."""
        verdict = lapsed([RunView("run-1", 10.0, True)], 9.999)
        assert (verdict.stop, verdict.forget, verdict.next_check) == ((), (), 10.0)

    def test_a_renewal_never_shortens_a_lease_and_a_release_ends_it(self) -> None:
        """renewed() extends to now + seconds (capped), keeps a later end, and 0 ends the lease now."""
        assert renewed(None, 100.0, 5.0) == 105.0
        assert renewed(120.0, 100.0, 5.0) == 120.0
        assert renewed(120.0, 100.0, 0.0) == 100.0
        assert renewed(None, 0.0, 10 * MAX_LEASE) == MAX_LEASE

    @given(st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 1e6)), st.booleans()), max_size=20), st.floats(0, 1e6))
    def test_every_leased_run_is_decided_exactly_once(self, items, now) -> None:
        """Each lapsed run lands in stop (alive) or forget (ended), never both; the next check is in the future."""
        runs = [RunView(f"run-{i}", expires, alive) for i, (expires, alive) in enumerate(items)]
        verdict = lapsed(runs, now)
        due = {r.key for r in runs if r.expires is not None and r.expires <= now}
        assert set(verdict.stop) | set(verdict.forget) == due
        assert not set(verdict.stop) & set(verdict.forget)
        assert all(r.alive for r in runs if r.key in verdict.stop)
        assert verdict.next_check is None or verdict.next_check > now


def _manager() -> tuple[Manager, FakeClock, FakeProcesses]:
    clock = FakeClock()
    procs = FakeProcesses(clock)
    manager = Manager(node="n1", clock=clock, processes=procs, environ={"PATH": "/bin"})
    manager.add(template("job", numprocesses=0, graceful_timeout=3.0))
    clock.run()
    return manager, clock, procs


def _runs(manager: Manager) -> list[str]:
    return [row["id"] for row in manager.instances("job")]


class TestManagerLeases:
    async def test_a_run_whose_client_stops_renewing_is_stopped_then_forgotten(self) -> None:
        """A leased run is stopped (TERM to its group) once its lease lapses, KILLed after graceful_timeout, then forgotten."""
        manager, clock, procs = _manager()
        inst = manager.run("job", lease=10.0)
        proc = procs.last(inst.id)
        proc.ignores.add(signal.SIGTERM)
        clock.advance(9.0)
        assert proc.signals == []
        clock.advance(1.0)
        assert proc.signals == [signal.SIGTERM]
        clock.advance(3.0)
        clock.run()
        assert proc.signals == [signal.SIGTERM, signal.SIGKILL] and not proc.alive
        assert _runs(manager) == []

    async def test_renewals_keep_the_run_going(self) -> None:
        """Each renewal moves the lease's end: a run renewed in time is never stopped."""
        manager, clock, procs = _manager()
        inst = manager.run("job", lease=10.0)
        for _ in range(5):
            clock.advance(8.0)
            assert manager.lease_run(inst.id, 10.0)
        assert procs.last(inst.id).signals == [] and _runs(manager) == [inst.id]

    async def test_a_release_with_a_signal_stops_the_run_with_it_and_forgets_it(self) -> None:
        """lease_run(id, 0, INT) sends INT to the run's group and forgets the run once it ended."""
        manager, clock, procs = _manager()
        inst = manager.run("job", lease=10.0)
        assert manager.lease_run(inst.id, 0, "INT")
        clock.run()
        assert procs.last(inst.id).signals == [signal.SIGINT]
        assert _runs(manager) == []

    async def test_an_ended_run_is_forgotten_when_its_client_lets_go(self) -> None:
        """A run that ended stays listed while its client holds it, and goes at release."""
        manager, clock, procs = _manager()
        inst = manager.run("job", lease=10.0)
        procs.last(inst.id).exit(0)
        assert _runs(manager) == [inst.id]
        manager.lease_run(inst.id, 0)
        assert _runs(manager) == []

    async def test_a_run_without_a_lease_is_never_stopped(self) -> None:
        """Runs started without a lease (gaffer run, API clients) are left alone, however long."""
        manager, clock, procs = _manager()
        inst = manager.run("job")
        clock.advance(MAX_LEASE * 2)
        assert procs.last(inst.id).signals == [] and procs.last(inst.id).alive

    async def test_env_is_added_to_the_run_and_stdin_can_be_closed(self) -> None:
        """run(env=...) adds to the template's env; write(eof=True) closes the run's stdin."""
        manager, clock, procs = _manager()
        manager.add(template("cat", numprocesses=0, env={"A": "1"}, redirect_input=True))
        inst = manager.run("cat", env={"B": "2"})
        proc = procs.last(inst.id)
        assert proc.env["A"] == "1" and proc.env["B"] == "2"
        manager.write(inst.id, b"hi\n", eof=True)
        assert bytes(proc.written) == b"hi\n" and proc.stdin_closed


class TestRunArguments:
    def test_env_overrides_are_parsed_and_a_bad_one_is_named(self) -> None:
        """-e KEY=VALUE: later wins, the value may hold '='; no '=' or an empty name is refused by value."""
        assert parse_env(["A=1", "B=x=y", "A=2", "C="]) == {"A": "2", "B": "x=y", "C": ""}
        with pytest.raises(ValueError, match="expected KEY=VALUE, got 'NOPE'"):
            parse_env(["A=1", "NOPE"])
        with pytest.raises(ValueError, match="empty in '=x'"):
            parse_env(["=x"])

    def test_the_env_argument_names_its_bad_variable(self) -> None:
        """The wire's env map is checked on both sides: a non-string value is named by its variable."""
        assert arg.env({"env": {"A": "1"}}) == {"A": "1"}
        with pytest.raises(InvalidArgument, match="env.A"):
            arg.env({"env": {"A": 1}})
        with pytest.raises(InvalidArgument, match="invalid variable name"):
            arg.env({"env": {"A=B": "1"}})

    def test_the_exit_code_is_128_plus_the_interrupting_signal(self) -> None:
        """Interrupted: 130 / 143 whatever the run did; else its status, or 128 + the signal that ended it."""
        assert exit_code({"status": 0, "signal": None}, signal.SIGINT) == 130
        assert exit_code({"status": 0, "signal": None}, signal.SIGTERM) == 143
        assert exit_code({"status": 4, "signal": None}, None) == 4
        assert exit_code({"status": None, "signal": "KILL"}, None) == 137
        assert exit_code(None, None) == 1
