"""The test fakes themselves: the clock fires what is due in order, the process acts like one."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from gaffer.agent.process import ExitStatus, LaunchSpec, Process
from gaffer.agent.processes import Proc, ProcessFactory, Processes
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcess, FakeProcesses


def members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


class TestFakeClock:
    def test_timers_fire_in_time_order_at_their_time(self) -> None:
        """advance fires each due timer in order, with time set to when it was due."""
        clock = FakeClock(start=0.0)
        fired: list[tuple[str, float]] = []
        clock.call_later(2, lambda: fired.append(("b", clock.time())))
        clock.call_later(1, lambda: fired.append(("a", clock.time())))
        clock.call_later(2, lambda: fired.append(("c", clock.time())))
        clock.advance(1.5)
        assert fired == [("a", 1.0)] and clock.time() == 1.5
        clock.advance(10)
        assert fired == [("a", 1.0), ("b", 2.0), ("c", 2.0)] and clock.time() == 11.5

    def test_callbacks_a_timer_makes_ready_run_before_the_next_timer(self) -> None:
        """What a timer schedules with call_soon runs before a later timer fires."""
        clock = FakeClock(start=0.0)
        order: list[str] = []
        clock.call_later(1, lambda: clock.call_soon(order.append, "soon"))
        clock.call_later(2, order.append, "later")
        clock.advance(3)
        assert order == ["soon", "later"]

    def test_cancelled_handles_never_run(self) -> None:
        """cancel() keeps a callback or a timer from running; pending counts live ones."""
        clock = FakeClock()
        ran: list[int] = []
        clock.call_soon(ran.append, 1).cancel()
        clock.call_later(1, ran.append, 2).cancel()
        assert clock.pending() == 0
        clock.advance(5)
        assert ran == [] and clock.next_timer() is None

    def test_time_never_goes_back_and_runaway_loops_fail(self) -> None:
        """A negative advance is refused; a callback that reschedules itself for ever fails."""
        clock = FakeClock()
        with pytest.raises(ValueError):
            clock.advance(-1)

        def again() -> None:
            clock.call_soon(again)

        clock.call_soon(again)
        with pytest.raises(AssertionError, match="loop"):
            clock.run()

    def test_wall_follows_time(self) -> None:
        """The wall clock moves with the monotonic one."""
        clock = FakeClock(start=10.0, wall_offset=1000.0)
        clock.advance(5)
        assert clock.wall() == 1015.0


def spec(**fields: Any) -> LaunchSpec:
    return LaunchSpec(argv=("sleep", "300"), env={}, **fields)


class TestFakeProcess:
    def test_it_has_what_the_manager_uses_of_a_process(self) -> None:
        """FakeProcess and Process both have every member of the Proc protocol; the factories
        every member of ProcessFactory."""
        fake = FakeProcess(FakeClock(), spec(), "x.1", 1, print, None)
        real = Process(spec(), print, loop=object())  # type: ignore[arg-type]  # never spawned
        for name in members(Proc):
            assert hasattr(fake, name) and hasattr(real, name), name
        for name in members(ProcessFactory):
            assert hasattr(FakeProcesses, name) and hasattr(Processes, name), name

    def test_signals_are_recorded_and_kill_as_they_would(self) -> None:
        """TERM kills on the next turn; an ignored TERM does not; KILL always does."""
        clock = FakeClock()
        statuses: list[ExitStatus] = []
        procs = FakeProcesses(clock)
        procs.ignores["s.1"] = {signal.SIGTERM, signal.SIGKILL}
        stubborn = procs.spawn(spec(), "s.1", statuses.append, None)
        plain = procs.spawn(spec(), "p.1", statuses.append, None)
        plain.signal(signal.SIGTERM)
        stubborn.signal(signal.SIGTERM)
        assert plain.alive, "an exit is seen on a later turn, never inside signal()"
        clock.run()
        assert not plain.alive and stubborn.alive and statuses == [ExitStatus(None, signal.SIGTERM)]
        stubborn.signal(signal.SIGKILL)
        clock.run()
        assert statuses[-1] == ExitStatus(None, signal.SIGKILL) and stubborn.signals == [15, 9]

    def test_exit_is_once_and_failures_are_spawn_errors(self) -> None:
        """A process exits once; a program marked failing raises SpawnError until healed."""
        clock = FakeClock()
        procs = FakeProcesses(clock)
        process = procs.spawn(spec(), "e.1", lambda status: None, None)
        process.exit(3)
        assert process.status == ExitStatus(3, None) and not process.alive
        with pytest.raises(AssertionError):
            process.exit(0)
        procs.fail("sleep")
        from gaffer.common.errors import SpawnError
        with pytest.raises(SpawnError):
            procs.spawn(spec(), "e.1", lambda status: None, None)
        procs.heal("sleep")
        assert procs.spawn(spec(), "e.1", lambda status: None, None).alive
