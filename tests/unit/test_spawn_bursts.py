"""Bursts of spawns on fakes: prepared together, launched together, finished in order.

The Executor prepares a loop turn's spawns (up to SPAWN_BATCH), launches their execs at once
(real processes: in lanes) and then finishes each in ordinal order. A spawn that cannot start
at all (a missing program) is reported at once, after the spawns prepared before it are
finished; an exec that fails in its lane is reported after its burst, for its instance only.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.executor import SPAWN_BATCH
from gaffer.agent.manager import Manager
from gaffer.common.bus import Event, Subscription
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses


@dataclass
class Rig:
    clock: FakeClock
    procs: FakeProcesses
    manager: Manager
    sub: Subscription

    def states(self) -> dict[str, str]:
        return {row["id"]: row["state"] for row in self.manager.instances()}

    def events(self) -> list[tuple[str, str]]:
        """(kind, instance id) of every proc. event so far, in order."""
        seen: list[Event] = []
        while (event := self.sub.get_nowait()) is not None:
            seen.append(event)
        return [(e.topic.rsplit(".", 1)[1], e.data["id"]) for e in seen]


def rig() -> Rig:
    clock = FakeClock()
    procs = FakeProcesses(clock)
    manager = Manager(node="n1", clock=clock, processes=procs, environ={"PATH": "/bin"})
    return Rig(clock, procs, manager, manager.bus.subscribe("proc."))


def ids(name: str, ordinals: range | list[int]) -> list[str]:
    return [f"{name}.{n}" for n in ordinals]


class TestBursts:
    def test_a_start_launches_its_spawns_as_one_burst_and_finishes_them_in_order(self) -> None:
        """10 instances: one launch of all 10, then spawn and running events in ordinal order."""
        r = rig()
        r.manager.add(template("web", numprocesses=10, flapping=False))
        r.clock.run()
        assert r.procs.bursts == [ids("web", range(1, 11))]
        assert [p.name for p in r.procs.spawned] == ids("web", range(1, 11))
        expected = [(kind, i) for i in ids("web", range(1, 11)) for kind in ("spawn", "running")]
        assert r.events() == expected

    def test_a_big_scale_goes_in_bursts_of_spawn_batch(self) -> None:
        """SPAWN_BATCH + 6 instances: a burst per loop turn, the last one of 6."""
        r = rig()
        r.manager.add(template("many", numprocesses=SPAWN_BATCH + 6, flapping=False))
        r.clock.run()
        assert [len(b) for b in r.procs.bursts] == [SPAWN_BATCH, 6]
        assert r.procs.bursts[1] == ids("many", range(SPAWN_BATCH + 1, SPAWN_BATCH + 7))

    def test_a_single_spawn_and_a_replacement_run_alone(self) -> None:
        """One instance, and the replacement of a crashed one, are never launched as a burst."""
        r = rig()
        r.manager.add(template("one", flapping=False))
        r.manager.add(template("web", numprocesses=3, flapping=False))
        r.clock.run()
        r.procs.last("web.2").exit(1)
        r.clock.run()
        assert r.procs.bursts == [ids("web", range(1, 4))]
        assert [p.name for p in r.procs.spawned] == ["one.1", *ids("web", range(1, 4)), "web.2"]

    def test_an_exec_that_fails_in_its_lane_fails_only_its_instance(self) -> None:
        """web.3's exec fails: its neighbours run, it alone backs off with the error, reported
        after the burst's spawns."""
        r = rig()
        r.procs.fail_exec("web.3")
        r.manager.add(template("web", numprocesses=5, restart="never"))
        r.clock.run()
        assert r.states() == {
            "web.1": "running", "web.2": "running", "web.3": "exited", "web.4": "running", "web.5": "running",
        }
        [row] = [row for row in r.manager.instances() if row["id"] == "web.3"]
        assert row["error"] == "cannot run 'sleep': Exec format error"
        assert [p.name for p in r.procs.spawned] == ["web.1", "web.2", "web.4", "web.5"]
        spawned = [("spawn", i) for i in ids("web", [1, 2, 4, 5])]
        assert [e for e in r.events() if e[0] in ("spawn", "exit")] == [*spawned, ("exit", "web.3")]

    def test_a_failed_exec_is_retried_alone_under_backoff(self) -> None:
        """With restarts on, the failed instance is retried by itself, and runs once healed."""
        r = rig()
        r.procs.fail_exec("web.2")
        r.manager.add(template("web", numprocesses=3))
        r.clock.run()
        assert r.states()["web.2"] == "backoff"
        r.procs.heal_exec("web.2")
        r.clock.advance(30)
        assert set(r.states().values()) == {"running"}
        assert r.procs.bursts == [ids("web", range(1, 4))]

    def test_a_spawn_that_cannot_start_is_reported_after_the_spawns_before_it(self) -> None:
        """web.3 cannot start (a missing program): web.1 and web.2 are finished first, then
        its exit is reported, then web.4 and web.5 go as a burst of their own."""
        r = rig()
        r.procs.fail_instance("web.3")
        r.manager.add(template("web", numprocesses=5, restart="never"))
        r.clock.run()
        assert r.procs.bursts == [ids("web", [1, 2]), ids("web", [4, 5])]
        order = [e for e in r.events() if e[0] in ("spawn", "exit")]
        assert order == [("spawn", "web.1"), ("spawn", "web.2"), ("exit", "web.3"),
                         ("spawn", "web.4"), ("spawn", "web.5")]

    def test_close_releases_the_factory(self) -> None:
        """Manager.close closes its ProcessFactory (the lanes), after which nothing spawns."""
        r = rig()
        r.manager.add(template("web", numprocesses=2, flapping=False))
        r.clock.run()
        r.manager.close()
        assert r.procs.closed
        r.procs.last("web.1").exit(1)
        r.clock.advance(30)
        assert len(r.procs.spawned) == 2


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=SPAWN_BATCH + 10),
    bad_exec=st.sets(st.integers(min_value=1, max_value=SPAWN_BATCH + 10), max_size=8),
    bad_prepare=st.sets(st.integers(min_value=1, max_value=SPAWN_BATCH + 10), max_size=8),
)
def test_every_instance_ends_with_its_own_process_or_its_own_error(
    n: int, bad_exec: set[int], bad_prepare: set[int]
) -> None:
    """Whatever fails where in a burst: each instance that could start has exactly one process,
    each other one its error, and spawns are finished in ordinal order."""
    r = rig()
    for ordinal in bad_exec:
        r.procs.fail_exec(f"web.{ordinal}")
    for ordinal in bad_prepare:
        r.procs.fail_instance(f"web.{ordinal}")
    r.manager.add(template("web", numprocesses=n, restart="never"))
    r.clock.run()
    bad = (bad_exec | bad_prepare) & set(range(1, n + 1))
    good = [o for o in range(1, n + 1) if o not in bad]
    assert [p.name for p in r.procs.spawned] == ids("web", good)
    states = r.states()
    assert {i for i, s in states.items() if s == "running"} == set(ids("web", good))
    assert {i for i, s in states.items() if s == "exited"} == set(ids("web", sorted(bad)))
    exits = [i for kind, i in r.events() if kind == "exit"]
    assert sorted(exits) == sorted(ids("web", sorted(bad)))
    launched = [name for burst in r.procs.bursts for name in burst]
    assert len(launched) == len(set(launched))
    assert set(launched) <= set(ids("web", good)) | set(ids("web", sorted(bad_exec - bad_prepare)))
