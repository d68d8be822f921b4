"""The Manager driven by a fake clock and fake processes: no process, no socket, no real time.

Each scenario moves time by hand (``clock.advance``) and makes processes exit by hand
(``procs.last(id).exit(...)``), so crash loops, suspensions, rolls and graceful stops run the
same way every time. ``tests/integration/test_manager.py`` proves the same Manager on real
processes.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.adoption import Found
from gaffer.agent.lease import Lease
from gaffer.agent.manager import Manager
from gaffer.agent.processes import Proc
from gaffer.agent.stats import ProcStats
from gaffer.common.bus import Event, Subscription
from gaffer.common.errors import InstanceNotFound, InvalidRequest, StdinNotEnabled, TemplateNotFound
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses

CRASHY = {"attempts": 3, "window": 30, "retry_in": 5, "max_retry": 1}


@dataclass
class Rig:
    clock: FakeClock
    procs: FakeProcesses
    manager: Manager
    lease: Lease

    def states(self, name: str | None = None) -> dict[str, str]:
        return {row["id"]: row["state"] for row in self.manager.instances(name)}

    def pids(self, name: str | None = None) -> dict[str, int]:
        return {row["id"]: row["pid"] for row in self.manager.instances(name) if row["pid"]}


@dataclass
class Recorder:
    """ProcessHooks that write down what they hear."""

    seen: list[tuple[str, str, int | None]] = field(default_factory=list)

    def on_spawn(self, instance_id: str, process: Proc, spec: str | None, oneoff: bool) -> None:
        self.seen.append(("spawn", instance_id, process.pid))

    def on_adopt(self, instance_id: str, process: Proc) -> None:
        self.seen.append(("adopt", instance_id, process.pid))

    def on_exit(self, instance_id: str, process: Proc, oneoff: bool) -> None:
        self.seen.append(("exit", instance_id, process.pid))


def rig(**manager_args: Any) -> Rig:
    clock = FakeClock()
    procs = FakeProcesses(clock)
    lease = manager_args.pop("lease", None) or Lease()
    manager = Manager(
        node="n1", clock=clock, processes=procs, lease=lease, environ={"PATH": "/bin"}, **manager_args
    )
    return Rig(clock, procs, manager, lease)


def drain(sub: Subscription) -> list[Event]:
    events = []
    while (event := sub.get_nowait()) is not None:
        events.append(event)
    return events


def kinds(events: list[Event]) -> list[str]:
    return [e.topic.rsplit(".", 1)[1] for e in events]


class TestSpawning:
    def test_add_spawns_every_ordinal_with_its_environment(self) -> None:
        """Each instance gets a process with GAFFER_TEMPLATE, GAFFER_INSTANCE and GAFFER_NODE."""
        r = rig()
        r.manager.add(template("web", numprocesses=3))
        r.clock.run()
        assert r.states() == {"web.1": "running", "web.2": "running", "web.3": "running"}
        envs = [(p.env["GAFFER_TEMPLATE"], p.env["GAFFER_INSTANCE"], p.env["GAFFER_NODE"]) for p in r.procs.spawned]
        assert envs == [("web", "1", "n1"), ("web", "2", "n1"), ("web", "3", "n1")]

    def test_starting_becomes_running_after_startsecs(self) -> None:
        """An instance is starting until it has been up startsecs, then running (one event)."""
        r = rig()
        sub = r.manager.bus.subscribe("proc.slow.")
        r.manager.add(template("slow", startsecs=2))
        r.clock.run()
        r.clock.advance(1.99)
        assert r.states() == {"slow.1": "starting"}
        r.clock.advance(0.01)
        assert r.states() == {"slow.1": "running"}
        assert kinds(drain(sub)) == ["spawn", "running"]

    def test_a_big_scale_spawns_in_batches(self) -> None:
        """A scale to 200 spawns 64 per loop turn, lowest ordinals first, and gets them all."""
        r = rig()
        r.manager.add(template("many", numprocesses=200))
        counts = []
        while r.clock.turn():
            counts.append(len(r.procs.spawned))
        assert counts == [64, 128, 192, 200]
        assert [p.name for p in r.procs.spawned[:3]] == ["many.1", "many.2", "many.3"]
        assert len(r.procs.alive()) == 200

    def test_a_spawn_error_under_never_is_final_and_reported_once(self) -> None:
        """restart = "never": a failed spawn leaves the instance exited with the error, no retry."""
        r = rig()
        r.procs.fail("/nope")
        sub = r.manager.bus.subscribe("proc.once.")
        r.manager.add(template("once", cmd="/nope", restart="never"))
        r.clock.advance(60)
        [row] = r.manager.instances("once")
        assert row["state"] == "exited" and "not found" in row["error"]
        assert kinds(drain(sub)) == ["exit"]
        assert r.clock.pending() == 0

    def test_a_repeated_spawn_error_is_logged_once_then_counted(self, caplog: pytest.LogCaptureFixture) -> None:
        """The same spawn error is logged at its first try and counted once it stops coming."""
        caplog.set_level(logging.WARNING, logger="gaffer.manager")
        r = rig()
        r.procs.fail("/nope")
        r.manager.add(template("again", cmd="/nope", flapping=False))
        r.clock.advance(1.0)
        r.procs.heal("/nope")
        r.clock.advance(30)
        assert r.states() == {"again.1": "running"}
        said = [rec.getMessage() for rec in caplog.records]
        assert said[0] == "again.1: command not found: '/nope'"
        assert said[1].startswith("again.1: command not found: '/nope' (again, ") and len(said) == 2


class TestCrashLoop:
    def test_crash_backoff_suspension_retry_then_give_up(self) -> None:
        """Exits before running back off, flap into a suspension, retry once, then give up."""
        r = rig()
        sub = r.manager.bus.subscribe("proc.c.")
        r.manager.add(template("c", startsecs=1, flapping=CRASHY))
        r.clock.run()
        start = r.clock.now
        spawned_at = []

        def crash() -> None:
            spawned_at.append(round(r.clock.now - start, 3))
            r.procs.last("c.1").exit(1)

        crash()                       # failure 1: respawned at once
        crash()                       # failure 2: backoff 0.1 s
        assert r.states() == {"c.1": "backoff"}
        r.clock.advance(0.1)
        crash()                       # 3 exits in the window: suspended for retry_in
        flap = [e for e in drain(sub) if e.topic.endswith(".flap")]
        assert [f.data["retries"] for f in flap] == [1] and flap[0].data["retry_in"] == 5
        assert r.manager.template_status("c")["status"] == "flapping"
        r.clock.advance(4.9)
        assert len(r.procs.spawned) == 3, "respawned while suspended"
        r.clock.advance(0.1)
        crash()                       # after the suspension: backoff again (0.4 s)
        r.clock.advance(0.4)
        crash()                       # 0.8 s
        r.clock.advance(0.8)
        crash()                       # 3 more in the window: past max_retry
        assert spawned_at == [0, 0, 0.1, 5.1, 5.5, 6.3]
        r.clock.advance(3600)
        assert len(r.procs.spawned) == 6
        assert r.states() == {"c.1": "failed"}
        failed = [e for e in drain(sub) if e.topic.endswith(".failed")]
        assert [e.data["reason"] for e in failed] == ["flapping: gave up after max_retry retries"]
        assert r.manager.template_status("c")["status"] == "failed"

    def test_start_after_failed_tries_again_from_scratch(self) -> None:
        """start clears the flapping history of a failed template and spawns again."""
        r = rig()
        r.manager.add(template("p", flapping={"attempts": 1, "window": 10, "retry_in": 1, "max_retry": 0}))
        r.clock.run()
        r.procs.last("p.1").exit(1)
        assert r.states() == {"p.1": "failed"}
        r.manager.start("p")
        r.clock.run()
        assert r.states() == {"p.1": "running"} and r.manager.template_status("p")["flap_retries"] == 0

    def test_stop_cancels_a_pending_flap_retry(self) -> None:
        """A template stopped while suspended never respawns when the suspension would end."""
        r = rig()
        r.manager.add(template("s", flapping={"attempts": 1, "window": 10, "retry_in": 5, "max_retry": 3}))
        r.clock.run()
        r.procs.last("s.1").exit(1)
        r.manager.stop("s")
        r.clock.advance(60)
        assert r.states() == {"s.1": "stopped"} and len(r.procs.spawned) == 1

    def test_a_crash_of_a_running_instance_is_replaced_at_once(self) -> None:
        """A process that had reached running and died is respawned in the same turn."""
        r = rig()
        r.manager.add(template("w", numprocesses=2))
        r.clock.run()
        old = r.pids()["w.2"]
        r.procs.last("w.2").exit(signal=signal.SIGKILL)
        assert r.pids()["w.2"] != old and r.manager.instances("w")[1]["restarts"] == 1

    def test_requested_stops_never_count_as_flapping(self) -> None:
        """Restarting and scaling by hand many times never trips the flapping policy."""
        r = rig()
        r.manager.add(template("calm", numprocesses=2, flapping={"attempts": 2, "window": 60}))
        r.clock.run()
        for _ in range(3):
            r.manager.restart("calm")
            r.clock.advance(1)
        r.manager.scale("calm", 0)
        r.clock.advance(1)
        r.manager.scale("calm", 2)
        r.clock.advance(1)
        assert r.states() == {"calm.1": "running", "calm.2": "running"}
        assert r.manager.template_status("calm")["flap_retries"] == 0


class TestCrashLoopPerInstance:
    """Issue 12: flapping is counted per instance, so one instance's crash loop never touches
    its siblings, and crashes spread over many instances suspend nothing."""

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(1, 10), min_size=30, max_size=30))
    def test_kills_spread_over_instances_never_suspend_anything(self, victims: list[int]) -> None:
        """30 kills of random instances of 10, one every 0.2 s, at most attempts - 1 per instance,
        under the default policy: no suspension, and all 10 end up running."""
        r = rig()
        sub = r.manager.bus.subscribe("proc.web.")
        r.manager.add(template("web", numprocesses=10))
        r.clock.run()
        killed = dict.fromkeys(range(1, 11), 0)
        for victim in victims:
            if killed[victim] < 4:  # the default attempts is 5
                killed[victim] += 1
                r.procs.last(f"web.{victim}").exit(signal=signal.SIGKILL)
            r.clock.advance(0.2)
        r.clock.advance(1)
        assert not [e for e in drain(sub) if e.topic.endswith((".flap", ".failed"))]
        assert set(r.states("web").values()) == {"running"}
        assert r.manager.template_status("web")["status"] == "active"

    def test_one_crash_looping_instance_is_suspended_then_failed_alone(self) -> None:
        """c.2 exits at once every time: suspended (its flap event names it), then failed; c.1
        and c.3 keep running, and a crash of c.3 meanwhile is replaced at once."""
        r = rig()
        sub = r.manager.bus.subscribe("proc.c.")
        r.manager.add(template("c", numprocesses=3, flapping=CRASHY))
        r.clock.run()
        for _ in range(3):
            r.procs.last("c.2").exit(1)
            r.clock.advance(0.5)
        flaps = [e.data for e in drain(sub) if e.topic.endswith(".flap")]
        assert [(f["id"], f["ordinal"], f["retries"]) for f in flaps] == [("c.2", 2, 1)]
        assert r.states("c") == {"c.1": "running", "c.2": "backoff", "c.3": "running"}
        assert r.manager.template_status("c")["status"] == "flapping"
        old = r.pids()["c.3"]
        r.procs.last("c.3").exit(signal=signal.SIGKILL)
        assert r.pids()["c.3"] != old and r.states("c")["c.3"] == "running"
        r.clock.advance(5)
        for _ in range(3):
            r.procs.last("c.2").exit(1)
            r.clock.advance(0.5)
        r.clock.advance(3600)
        assert r.states("c") == {"c.1": "running", "c.2": "failed", "c.3": "running"}
        failed = [e.data["id"] for e in drain(sub) if e.topic.endswith(".failed")]
        assert failed == ["c.2"]
        assert r.manager.template_status("c")["status"] == "active"

    def test_the_template_is_failed_only_once_every_instance_gave_up(self) -> None:
        """One instance given up leaves the template active; the last one fails it."""
        r = rig()
        r.manager.add(template("f", numprocesses=2, flapping={"attempts": 1, "window": 10, "retry_in": 1, "max_retry": 0}))
        r.clock.run()
        r.procs.last("f.1").exit(1)
        assert r.states("f") == {"f.1": "failed", "f.2": "running"}
        assert r.manager.template_status("f")["status"] == "active"
        r.procs.last("f.2").exit(1)
        assert r.manager.template_status("f")["status"] == "failed"


class TestRolling:
    def test_a_spec_change_rolls_within_max_unavailable(self) -> None:
        """Every instance is replaced with the new spec, never more than 2 of 4 down at once."""
        r = rig()
        base = dict(numprocesses=4, startsecs=1, update={"max_unavailable": 2})
        r.manager.add(template("roll", **base))
        r.clock.advance(1)
        before = r.pids()
        new = template("roll", env={"V": "2"}, **base)
        assert r.manager.apply(new) == "updated"
        worst = 0
        for _ in range(40):
            r.clock.advance(0.25)
            down = sum(state != "running" for state in r.states().values())
            worst = max(worst, down)
        assert worst == 2
        assert {row["spec"] for row in r.manager.instances("roll")} == {new.spec_hash()}
        assert all(r.pids()[k] != before[k] for k in before) and r.states() == dict.fromkeys(before, "running")

    def test_a_roll_goes_on_when_a_new_instance_is_up_at_once(self) -> None:
        """startsecs 0: a scale-up spawned beside an outdated instance is up at once, and the roll
        goes on then (the outdated one is replaced, not left on the old spec)."""
        r = rig()
        base = dict(startsecs=0, update={"max_unavailable": 1})
        r.manager.add(template("up", numprocesses=1, **base))
        r.clock.run()
        new = template("up", numprocesses=2, env={"V": "2"}, **base)
        r.manager.apply(new)
        for _ in range(20):
            r.clock.advance(0.25)
        assert {row["spec"] for row in r.manager.instances("up")} == {new.spec_hash()}
        assert r.states() == {"up.1": "running", "up.2": "running"}

    def test_restart_rolls_one_at_a_time_by_default(self) -> None:
        """restart replaces every process, one instance down at a time."""
        r = rig()
        r.manager.add(template("rr", numprocesses=3, startsecs=1))
        r.clock.advance(1)
        before = r.pids()
        r.manager.restart("rr")
        worst = 0
        for _ in range(40):
            r.clock.advance(0.25)
            worst = max(worst, sum(state != "running" for state in r.states().values()))
        assert worst == 1 and all(r.pids()[k] != before[k] for k in before)

    def test_an_explicit_allowance_and_restart_generation(self) -> None:
        """apply(max_unavailable=, restart_gen=): a new generation rolls, with the given allowance."""
        r = rig()
        t = template("g", numprocesses=4, startsecs=1)
        r.manager.apply(t, restart_gen=1)
        r.clock.advance(1)
        assert r.manager.apply(t, restart_gen=1) == "unchanged"
        r.manager.apply(t, max_unavailable=4, restart_gen=2)
        r.clock.run()
        assert sorted(r.states().values()) == ["starting"] * 4

    def test_a_policy_change_restarts_nothing(self) -> None:
        """Changing only timeouts, flapping or update applies without a new process."""
        r = rig()
        r.manager.add(template("pol", numprocesses=2))
        r.clock.run()
        changed = template("pol", numprocesses=2, graceful_timeout=3, flapping={"attempts": 9})
        assert r.manager.apply(changed) == "updated"
        r.clock.advance(10)
        assert len(r.procs.spawned) == 2 and r.manager.get("pol").graceful_timeout == 3


class TestHold:
    def test_held_nothing_spawns_and_release_starts_what_waits(self) -> None:
        """While held a crash is not respawned and new instances wait; release spawns them."""
        r = rig()
        r.manager.add(template("h", numprocesses=2))
        r.clock.run()
        r.lease.hold()
        r.procs.last("h.2").exit(1)
        r.manager.scale("h", 3)
        r.clock.advance(60)
        assert r.states() == {"h.1": "running", "h.2": "backoff", "h.3": "backoff"}
        assert len(r.procs.spawned) == 2
        r.lease.release()
        r.clock.run()
        assert r.states() == {"h.1": "running", "h.2": "running", "h.3": "running"}

    def test_past_the_lease_a_crash_is_not_respawned(self) -> None:
        """Once the controller's lease has run out, nothing respawns, even before a hold."""
        r = rig()
        r.manager.add(template("l"))
        r.clock.run()
        r.lease.renew(r.clock.now + 5)
        r.clock.advance(5.5)
        r.procs.last("l.1").exit(1)
        r.clock.advance(60)
        assert r.states() == {"l.1": "backoff"} and len(r.procs.spawned) == 1
        r.lease.renew(r.clock.now + 5)
        r.lease.release()
        r.clock.run()
        assert r.states() == {"l.1": "running"}

    def test_a_manager_started_held_spawns_nothing(self) -> None:
        """An agent's Manager starts held: templates wait until the first release."""
        r = rig(lease=Lease(held=True))
        r.manager.add(template("x", numprocesses=2))
        r.clock.advance(10)
        assert r.procs.spawned == [] and set(r.states().values()) == {"backoff"}
        r.lease.settle(True)
        r.lease.release()
        r.clock.run()
        assert r.procs.spawned == []
        r.lease.settle(False)
        r.clock.run()
        assert len(r.procs.alive()) == 2


class TestStopping:
    def test_graceful_timeout_then_kill(self) -> None:
        """A process ignoring its stop signal gets KILL after graceful_timeout, not before."""
        r = rig()
        sub = r.manager.bus.subscribe("proc.stub.stop")
        r.procs.ignores["stub.1"] = {signal.SIGTERM}
        r.manager.add(template("stub", graceful_timeout=3))
        r.clock.run()
        r.manager.stop("stub")
        r.clock.advance(2.99)
        process = r.procs.last("stub.1")
        assert process.alive and process.signals == [signal.SIGTERM]
        r.clock.advance(0.01)
        assert process.signals == [signal.SIGTERM, signal.SIGKILL] and not process.alive
        [stopped] = drain(sub)
        assert stopped.data["signal"] == "KILL" and r.states() == {"stub.1": "stopped"}

    def test_stop_signal_is_configurable(self) -> None:
        """stop_signal is what the process receives first."""
        r = rig()
        r.manager.add(template("intr", stop_signal="INT"))
        r.clock.run()
        r.manager.stop("intr")
        r.clock.run()
        assert r.procs.last("intr.1").signals == [signal.SIGINT]

    def test_scale_down_stops_the_highest_ordinals_and_forgets_them(self) -> None:
        """5 -> 2 keeps ordinals 1 and 2 with their processes; 3..5 stop and are forgotten."""
        r = rig()
        r.manager.add(template("sc", numprocesses=5))
        r.clock.run()
        before = r.pids()
        r.manager.scale("sc", 2)
        r.clock.run()
        assert r.pids() == {k: before[k] for k in ("sc.1", "sc.2")}
        assert [p.name for p in r.procs.spawned if not p.alive] == ["sc.3", "sc.4", "sc.5"]

    async def test_remove_stops_everything_and_forgets_the_template(self) -> None:
        """remove returns once every instance exited, and template.<n>.deleted is published."""
        r = rig()
        sub = r.manager.bus.subscribe("template.gone.deleted")
        r.manager.add(template("gone", numprocesses=2))
        r.clock.run()
        await r.clock.drive(r.manager.remove("gone"))
        assert r.procs.alive() == [] and len(drain(sub)) == 1
        with pytest.raises(TemplateNotFound):
            r.manager.instances("gone")

    async def test_shutdown_leaves_no_process(self) -> None:
        """shutdown stops every instance of every template, KILLing the stubborn ones in time."""
        r = rig()
        r.procs.ignores["b.1"] = {signal.SIGTERM}
        r.manager.add(template("a", numprocesses=2))
        r.manager.add(template("b", graceful_timeout=5))
        r.clock.run()
        await r.clock.drive(r.manager.shutdown(), step=1.0)
        assert r.procs.alive() == [] and r.procs.last("b.1").signals[-1] == signal.SIGKILL

    def test_an_instance_that_exits_as_it_is_unassigned_ends_stopped(self) -> None:
        """An exit of an instance no longer wanted is not restarted and it is forgotten."""
        r = rig()
        r.manager.add(template("u", numprocesses=2))
        r.clock.run()
        r.manager.assign("u", [1])
        r.procs.last("u.2").exit(1)
        r.clock.run()
        assert r.states() == {"u.1": "running"} and len(r.procs.spawned) == 2


class TestTheRest:
    def test_kill_write_and_output(self) -> None:
        """kill signals the instance; write reaches stdin if allowed; output keeps the lines."""
        r = rig()
        r.manager.add(template("io", redirect_input=True))
        r.manager.add(template("deaf"))
        r.clock.run()
        assert r.manager.kill("io.1", "USR1") == [r.pids()["io.1"]]
        r.manager.write("io.1", b"hello")
        process = r.procs.last("io.1")
        assert process.signals == [signal.SIGUSR1] and bytes(process.written) == b"hello"
        process.emit("out", b"one\ntwo\npart")
        assert [line.text for line in r.manager.output("io.1")] == ["one", "two"]
        with pytest.raises(StdinNotEnabled):
            r.manager.write("deaf.1", b"x")
        with pytest.raises(InstanceNotFound):
            r.manager.kill("io.9")

    def test_write_to_an_instance_that_is_not_running_is_refused(self) -> None:
        """A write to an exited instance is a clear error."""
        r = rig()
        r.manager.add(template("gone", restart="never", redirect_input=True))
        r.clock.run()
        r.procs.last("gone.1").exit(0)
        with pytest.raises(InvalidRequest, match="not running"):
            r.manager.write("gone.1", b"x")

    async def test_a_one_off_run_is_never_restarted(self) -> None:
        """run spawns once, its exit resolves ``done``, and it stays listed."""
        r = rig()
        r.manager.add(template("job", numprocesses=0))
        inst = r.manager.run("job", ["a", "b"])
        assert r.procs.last("job.run-1").spec.argv[1:] == ("a", "b") and r.manager.has_runs("job")
        r.procs.last("job.run-1").exit(7)
        assert (await inst.done).code == 7 and not r.manager.has_runs("job")
        r.clock.advance(60)
        [row] = r.manager.instances("job")
        assert row["state"] == "exited" and row["oneoff"] and len(r.procs.spawned) == 1

    async def test_a_one_off_run_is_running_once_spawned(self) -> None:
        """ps shows a run as running while it runs (it stayed starting for its whole life)."""
        r = rig()
        r.manager.add(template("job", numprocesses=0, startsecs=5))
        r.manager.run("job", [])
        [row] = r.manager.instances("job")
        assert row["state"] == "running"

    def test_adopt_watches_a_found_process_and_replays_what_the_keeper_kept(self) -> None:
        """An adopted process runs as its instance, with buffered output and a loss note."""
        r = rig(lease=Lease(held=True))
        t = template("kept")
        r.manager.add(t)
        r.clock.run()
        found = Found(pid=4242, instance_id="kept.1", template="kept", ordinal=1, started_at=5.0, spec=t.spec_hash())
        assert r.manager.adopt(found, {}, buffered={"out": b"before\n"}, dropped={"out": 10})
        assert r.pids() == {"kept.1": 4242} and r.states() == {"kept.1": "running"}
        assert [line.text for line in r.manager.output("kept.1")] == [
            "[gaffer: 10 bytes lost while no agent ran]", "before",
        ]
        assert not r.manager.adopt(found, {}), "adopted twice"
        unwanted = Found(pid=4343, instance_id="kept.2", template="kept", ordinal=2, started_at=5.0, spec=None)
        assert not r.manager.adopt(unwanted, {})

    def test_abandon_lets_go_without_stopping(self) -> None:
        """abandon stops watching: no signal, no respawn, nothing scheduled."""
        r = rig()
        r.manager.add(template("ab", numprocesses=2, startsecs=5))
        r.clock.run()
        r.manager.abandon()
        r.clock.advance(60)
        assert all(p.abandoned and p.signals == [] for p in r.procs.spawned)
        assert r.clock.pending() == 0

    def test_hooks_hear_every_spawn_and_exit(self) -> None:
        """ProcessHooks get each spawn and each exit with the pid."""
        hooks = Recorder()
        r = rig(hooks=[hooks])
        r.manager.add(template("hk"))
        r.clock.run()
        first = r.pids()["hk.1"]
        r.procs.last("hk.1").exit(signal=signal.SIGKILL)
        second = r.pids()["hk.1"]
        assert hooks.seen == [("spawn", "hk.1", first), ("exit", "hk.1", first), ("spawn", "hk.1", second)]

    async def test_stats_sum_per_template(self) -> None:
        """stats adds each instance's cpu and memory (children included) per template."""

        class Sampler:
            async def sample(self, pids: Any) -> dict[int, ProcStats]:
                return {pid: ProcStats(pid, 1.5, 100, ("x",), (ProcStats(1, 0.5, 10),)) for pid in pids}

        r = rig(stats=Sampler())
        r.manager.add(template("st", numprocesses=2))
        r.clock.run()
        report = await r.manager.stats("st")
        assert report["st"]["cpu"] == 4.0 and report["st"]["mem"] == 220
        assert [i["id"] for i in report["st"]["instances"]] == ["st.1", "st.2"]

    def test_apply_reports_what_changed(self) -> None:
        """apply says created, unchanged, scaled or updated, and publishes the matching event."""
        r = rig()
        sub = r.manager.bus.subscribe("template.t.")
        assert r.manager.apply(template("t")) == "created"
        assert r.manager.apply(template("t")) == "unchanged"
        assert r.manager.apply(template("t", numprocesses=2)) == "scaled"
        assert r.manager.apply(template("t", numprocesses=2, env={"A": "1"})) == "updated"
        assert kinds(drain(sub)) == ["created", "scaled", "updated"]
