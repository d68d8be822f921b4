"""The Manager on real processes: spawn, restart, scale, stop, roll, signal and events."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from gaffer.agent.lease import Lease
from gaffer.agent.manager import Manager
from gaffer.common.errors import InstanceNotFound, InvalidSignal, TemplateExists, TemplateNotFound
from gaffer.testing import collect_events, next_event, pid_dead, poll_until, template


@pytest.fixture
async def manager():
    mgr = Manager(node="test-node")
    try:
        yield mgr
    finally:
        await mgr.shutdown()


def states(mgr: Manager, name: str | None = None) -> dict[str, str]:
    return {i["id"]: i["state"] for i in mgr.instances(name)}


def pids(mgr: Manager, name: str | None = None) -> dict[str, int]:
    return {i["id"]: i["pid"] for i in mgr.instances(name) if i["pid"]}


async def all_running(mgr: Manager, name: str, count: int) -> None:
    await mgr.wait_until(
        lambda: sorted(states(mgr, name).values()) == ["running"] * count, timeout=10
    )


class TestSpawning:
    async def test_instances_get_ordinals_and_gaffer_environment(self, manager, tmp_path):
        """Each instance sees GAFFER_TEMPLATE, GAFFER_INSTANCE and GAFFER_NODE."""
        script = 'echo "$GAFFER_TEMPLATE $GAFFER_INSTANCE $GAFFER_NODE" > "$OUT.$GAFFER_INSTANCE"; sleep 300'
        manager.add(template("envy", cmd="sh", args=["-c", script], numprocesses=3, env={"OUT": str(tmp_path / "o")}))
        await all_running(manager, "envy", 3)
        await poll_until(lambda: all((tmp_path / f"o.{n}").exists() for n in (1, 2, 3)))
        for n in (1, 2, 3):
            await poll_until(lambda: (tmp_path / f"o.{n}").read_text().strip() != "")
            assert (tmp_path / f"o.{n}").read_text().split() == ["envy", str(n), "test-node"]

    async def test_args_expand_variables_from_template_env(self, manager, tmp_path):
        """$VAR and ${VAR} in args come from the env, including GAFFER_INSTANCE."""
        target = tmp_path / "port"
        manager.add(template(
            "exp", cmd="sh", args=["-c", "echo $0 > " + str(target) + "; sleep 300", "${PORT}-$GAFFER_INSTANCE"],
            env={"PORT": "80"},
        ))
        await poll_until(lambda: target.exists() and target.read_text().strip() != "")
        assert target.read_text().strip() == "80-1"

    async def test_never_does_not_retry_a_spawn_that_failed(self, manager):
        """restart = "never": a missing binary leaves the instance exited with the error, once (issue 7)."""
        sub = manager.bus.subscribe("proc.once.")
        manager.add(template("once", cmd="/nonexistent/binary", restart="never"))
        failed = await next_event(sub, "proc.once.exit")
        await manager.wait_until(lambda: states(manager, "once") == {"once.1": "exited"}, timeout=5)
        info = manager.instances("once")[0]
        assert "not found" in info["error"] and info["error"] == failed.data["error"]
        assert manager._entries["once"].instances[1].timer is None, "a retry is scheduled"
        assert sub.get_nowait() is None, "more than one attempt was made"

    async def test_a_repeated_spawn_error_is_logged_once_then_counted(self, manager, caplog):
        """on-failure retries a failed spawn; its error is logged once, the repeats counted at the end."""
        sub = manager.bus.subscribe("proc.again.")
        caplog.set_level("WARNING", logger="gaffer.manager")
        manager.add(template(
            "again", cmd="/nonexistent/binary", restart="on-failure",
            flapping={"attempts": 4, "window": 30, "retry_in": 0, "max_retry": 0},
        ))
        exits = await collect_events(sub, "proc.again.exit", 4)
        await next_event(sub, "proc.again.failed")
        assert [e.data["again"] for e in exits] == [0, 1, 2, 3]
        said = [r.getMessage() for r in caplog.records if "/nonexistent/binary" in r.getMessage()]
        assert said == [
            "again.1: command '/nonexistent/binary' not found",
            "again.1: command '/nonexistent/binary' not found (again, 3 times)",
        ]

    async def test_starting_becomes_running_after_startsecs(self, manager):
        """An instance is `starting` until it has stayed up startsecs."""
        sub = manager.bus.subscribe("proc.slow.")
        manager.add(template("slow", startsecs=0.3))
        spawn = await next_event(sub, "proc.slow.spawn")
        assert states(manager, "slow") == {"slow.1": "starting"}
        running = await next_event(sub, "proc.slow.running")
        assert running.data["pid"] == spawn.data["pid"]
        assert running.ts - spawn.ts >= 0.25

    async def test_missing_command_fails_with_reason_and_never_crashes_manager(self, manager):
        """A command that cannot exec ends `failed` after flapping, with events."""
        sub = manager.bus.subscribe("proc.ghost.")
        manager.add(template("ghost", cmd="/nonexistent/binary", flapping={"attempts": 2, "window": 10, "retry_in": 0.05, "max_retry": 1}))
        first = await next_event(sub, "proc.ghost.exit")
        assert "not found" in first.data["error"]
        await next_event(sub, "proc.ghost.flap")
        failed = await next_event(sub, "proc.ghost.failed")
        assert failed.data["id"] == "ghost.1"
        assert states(manager, "ghost") == {"ghost.1": "failed"}
        assert manager.template_status("ghost")["status"] == "failed"

    async def test_duplicate_add_is_refused(self, manager):
        """Adding a name twice raises TemplateExists; apply is the idempotent way."""
        manager.add(template("dup"))
        with pytest.raises(TemplateExists):
            manager.add(template("dup"))
        assert manager.apply(template("dup")) == "unchanged"


class TestRestarts:
    async def test_crash_is_replaced_at_once(self, manager):
        """A killed instance gets a new process without waiting for any poll."""
        sub = manager.bus.subscribe("proc.crash.")
        manager.add(template("crash", numprocesses=2))
        await all_running(manager, "crash", 2)
        old = pids(manager, "crash")["crash.2"]
        os.kill(old, signal.SIGKILL)
        exit_event = await next_event(sub, "proc.crash.exit")
        assert exit_event.data["signal"] == "KILL" and exit_event.data["pid"] == old
        spawn = await next_event(sub, "proc.crash.spawn", lambda e: e.data["id"] == "crash.2")
        assert spawn.data["pid"] != old
        info = {i["id"]: i for i in manager.instances("crash")}
        assert info["crash.2"]["restarts"] == 1 and info["crash.1"]["restarts"] == 0

    async def test_on_failure_keeps_expected_exit(self, manager):
        """restart=on-failure: an exit code in exitcodes is final, others restart."""
        sub = manager.bus.subscribe("proc.")
        manager.add(template("ok", cmd="sh", args=["-c", "exit 3"], restart="on-failure", exitcodes=[0, 3]))
        await next_event(sub, "proc.ok.exit")
        await manager.wait_until(lambda: states(manager, "ok") == {"ok.1": "exited"}, timeout=5)
        info = manager.instances("ok")[0]
        assert info["last_exit"] == {"status": 3, "signal": None} and info["restarts"] == 0

    async def test_on_failure_restarts_unexpected_code(self, manager, tmp_path):
        """restart=on-failure respawns an exit code that is not expected."""
        marker = tmp_path / "ran"
        script = f'if [ -e {marker} ]; then sleep 300; else touch {marker}; exit 2; fi'
        manager.add(template("fix", cmd="sh", args=["-c", script], restart="on-failure"))
        await manager.wait_until(lambda: manager.instances("fix")[0]["restarts"] == 1, timeout=5)
        await all_running(manager, "fix", 1)

    async def test_never_does_not_restart(self, manager):
        """restart=never leaves the instance exited, whatever the status."""
        sub = manager.bus.subscribe("proc.once.")
        manager.add(template("once", cmd="sh", args=["-c", "exit 1"], restart="never"))
        await next_event(sub, "proc.once.exit")
        await manager.wait_until(lambda: states(manager, "once") == {"once.1": "exited"}, timeout=5)

    async def test_repeated_failures_back_off(self, manager):
        """An instance failing before `running` waits longer between respawns."""
        sub = manager.bus.subscribe("proc.bo.spawn")
        manager.add(template("bo", cmd="sh", args=["-c", "exit 1"], startsecs=1, flapping=False))
        spawns = await collect_events(sub, "proc.bo.spawn", 5)
        gaps = [b.ts - a.ts for a, b in zip(spawns, spawns[1:])]
        assert gaps[-1] > gaps[0]
        assert gaps[-1] >= 0.2


class TestFlapping:
    async def test_flapping_suspends_then_retries_then_fails(self, manager):
        """attempts exits in window -> flap (suspend retry_in) ... -> failed after max_retry."""
        sub = manager.bus.subscribe("proc.flappy.")
        policy = {"attempts": 3, "window": 30, "retry_in": 0.2, "max_retry": 2}
        manager.add(template("flappy", cmd="sh", args=["-c", "exit 1"], flapping=policy))
        flaps = await collect_events(sub, "proc.flappy.flap", 2, timeout=20)
        assert [f.data["retries"] for f in flaps] == [1, 2]
        failed = await next_event(sub, "proc.flappy.failed", timeout=20)
        assert "max_retry" in failed.data["reason"]
        assert states(manager, "flappy") == {"flappy.1": "failed"}

    async def test_requested_stops_never_count_as_flapping(self, manager):
        """Restarting and scaling by hand many times never trips the flapping policy."""
        sub = manager.bus.subscribe("proc.calm.")
        manager.add(template("calm", numprocesses=2, flapping={"attempts": 2, "window": 60}))
        await all_running(manager, "calm", 2)
        for _ in range(3):
            manager.restart("calm")
            await collect_events(sub, "proc.calm.running", 2)
        manager.scale("calm", 0)
        await manager.wait_until(lambda: not manager.instances("calm"), timeout=10)
        manager.scale("calm", 2)
        await all_running(manager, "calm", 2)
        assert manager.template_status("calm")["flap_retries"] == 0
        while (event := sub.get_nowait()) is not None:
            assert not event.topic.endswith((".flap", ".failed", ".exit"))

    async def test_stop_cancels_pending_retry(self, manager):
        """Stopping a suspended template cancels its retry: nothing respawns later."""
        sub = manager.bus.subscribe("proc.susp.")
        policy = {"attempts": 2, "window": 30, "retry_in": 0.3, "max_retry": 5}
        manager.add(template("susp", cmd="sh", args=["-c", "exit 1"], flapping=policy))
        await next_event(sub, "proc.susp.flap")
        manager.stop("susp")
        assert manager.template_status("susp")["status"] == "stopped"
        await manager.wait_until(lambda: states(manager, "susp") == {"susp.1": "stopped"}, timeout=5)
        spawns_after = []

        async def no_spawn_for_a_while() -> None:
            try:
                spawns_after.append(await next_event(sub, "proc.susp.spawn", timeout=0.8))
            except TimeoutError:
                pass

        await no_spawn_for_a_while()
        assert spawns_after == []

    async def test_start_resets_a_failed_template(self, manager, tmp_path):
        """`start` after `failed` clears the flapping history and tries again."""
        sub = manager.bus.subscribe("proc.phoenix.")
        marker = tmp_path / "fixed"
        script = f'[ -e {marker} ] && exec sleep 300; exit 1'
        policy = {"attempts": 2, "window": 30, "retry_in": 0.05, "max_retry": 0}
        manager.add(template("phoenix", cmd="sh", args=["-c", script], flapping=policy))
        await next_event(sub, "proc.phoenix.failed")
        marker.touch()
        manager.start("phoenix")
        await all_running(manager, "phoenix", 1)
        assert manager.template_status("phoenix")["status"] == "active"


class TestScaling:
    async def test_scale_down_stops_highest_ordinals(self, manager):
        """Scaling 5 -> 2 keeps ordinals 1 and 2 with their pids."""
        manager.add(template("sc", numprocesses=5))
        await all_running(manager, "sc", 5)
        before = pids(manager, "sc")
        manager.scale("sc", 2)
        await manager.wait_until(lambda: sorted(states(manager, "sc")) == ["sc.1", "sc.2"], timeout=10)
        after = pids(manager, "sc")
        assert after == {k: before[k] for k in ("sc.1", "sc.2")}
        assert all(pid_dead(before[k]) for k in ("sc.3", "sc.4", "sc.5"))

    async def test_scale_up_adds_next_ordinals_and_emits_scaled(self, manager):
        """Scaling 1 -> 3 adds ordinals 2 and 3 and publishes template.<name>.scaled."""
        sub = manager.bus.subscribe("template.up.")
        manager.add(template("up"))
        await all_running(manager, "up", 1)
        manager.scale("up", 3)
        scaled = await next_event(sub, "template.up.scaled")
        assert scaled.data["numprocesses"] == 3 and scaled.data["previous"] == 1
        await all_running(manager, "up", 3)
        assert sorted(states(manager, "up")) == ["up.1", "up.2", "up.3"]

    async def test_scale_to_many_converges_in_batches(self, manager):
        """A scale to 300 reaches 300 running instances."""
        manager.add(template("many", numprocesses=0, redirect_output=[]))
        manager.scale("many", 300)
        await all_running(manager, "many", 300)
        assert len(set(pids(manager, "many").values())) == 300


class TestStopStartRestart:
    async def test_stop_pauses_and_start_resumes(self, manager):
        """stop keeps the template with stopped instances; start brings them back."""
        manager.add(template("pz", numprocesses=2))
        await all_running(manager, "pz", 2)
        manager.stop("pz")
        await manager.wait_until(lambda: set(states(manager, "pz").values()) == {"stopped"}, timeout=10)
        assert [t.name for t in manager.templates()] == ["pz"]
        manager.start("pz")
        await all_running(manager, "pz", 2)

    async def test_graceful_timeout_escalates_to_kill(self, manager, tmp_path):
        """A process ignoring the stop signal is killed after graceful_timeout."""
        sub = manager.bus.subscribe("proc.stubborn.")
        ready = tmp_path / "trapped"
        script = f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"
        manager.add(template("stubborn", cmd="sh", args=["-c", script], graceful_timeout=0.3))
        await poll_until(ready.exists, what="the TERM trap to be set")
        manager.stop("stubborn")
        stopped = await next_event(sub, "proc.stubborn.stop")
        assert stopped.data["signal"] == "KILL"

    async def test_stop_signal_is_configurable(self, manager):
        """stop_signal is what the group receives first."""
        sub = manager.bus.subscribe("proc.intr.")
        manager.add(template("intr", stop_signal="INT"))
        await all_running(manager, "intr", 1)
        manager.stop("intr")
        stopped = await next_event(sub, "proc.intr.stop")
        assert stopped.data["signal"] == "INT"

    async def test_stopping_kills_grandchildren(self, manager, tmp_path):
        """Stopping an instance kills its whole process group, grandchildren included."""
        pidfile = tmp_path / "grandchild"
        script = f"sleep 300 & echo $! > {pidfile}; wait"
        manager.add(template("tree", cmd="sh", args=["-c", script]))
        await poll_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        grandchild = int(pidfile.read_text())
        assert not pid_dead(grandchild)
        manager.stop("tree")
        await poll_until(lambda: pid_dead(grandchild), what="grandchild to die")

    async def test_leader_crash_takes_its_group_with_it(self, manager, tmp_path):
        """When the leader dies on its own, its leftover children are killed too."""
        pidfile = tmp_path / "orphan"
        script = f"sleep 300 & echo $! > {pidfile}; sleep 300"
        manager.add(template("lead", cmd="sh", args=["-c", script]))
        await poll_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        orphan = int(pidfile.read_text())
        os.kill(pids(manager, "lead")["lead.1"], signal.SIGKILL)
        await poll_until(lambda: pid_dead(orphan), what="orphan to die")

    async def test_remove_stops_everything_and_forgets(self, manager):
        """remove waits for the instances to exit, then publishes template.<n>.deleted."""
        sub = manager.bus.subscribe("template.gone.")
        manager.add(template("gone", numprocesses=2))
        await all_running(manager, "gone", 2)
        old = list(pids(manager, "gone").values())
        await manager.remove("gone")
        assert all(pid_dead(p) for p in old)
        await next_event(sub, "template.gone.deleted")
        with pytest.raises(TemplateNotFound):
            manager.instances("gone")

    async def test_shutdown_leaves_no_process(self, manager):
        """shutdown stops every instance of every template."""
        manager.add(template("a", numprocesses=2))
        manager.add(template("b", numprocesses=2))
        await all_running(manager, "a", 2)
        await all_running(manager, "b", 2)
        everything = list(pids(manager).values())
        await manager.shutdown()
        assert all(pid_dead(p) for p in everything)


class TestRollingUpdate:
    async def test_changed_spec_rolls_within_max_unavailable(self, manager):
        """A spec change restarts instances, never more than max_unavailable down at once."""
        base = dict(numprocesses=4, startsecs=0.2, update={"max_unavailable": 2})
        manager.add(template("roll", **base))
        await all_running(manager, "roll", 4)
        sub = manager.bus.subscribe("proc.roll.")
        new = template("roll", env={"V": "2"}, **base)
        assert manager.apply(new) == "updated"
        down = set()
        worst = 0
        replaced = set()
        while len(replaced) < 4:
            event = await next_event(sub, "proc.roll.")
            kind = event.topic.rsplit(".", 1)[1]
            if kind == "stop":
                down.add(event.data["id"])
            elif kind == "running":
                down.discard(event.data["id"])
                replaced.add(event.data["id"])
            worst = max(worst, len(down))
        assert worst == 2
        assert {i["spec"] for i in manager.instances("roll")} == {new.spec_hash()}

    async def test_policy_change_applies_without_restarting(self, manager):
        """Changing only policies (timeouts, flapping, update) keeps every pid."""
        manager.add(template("pol", numprocesses=2))
        await all_running(manager, "pol", 2)
        before = pids(manager, "pol")
        sub = manager.bus.subscribe("template.pol.updated")
        changed = template("pol", numprocesses=2, graceful_timeout=3, flapping={"attempts": 9}, update={"max_unavailable": 2})
        assert manager.apply(changed) == "updated"
        event = await next_event(sub, "template.pol.updated")
        assert event.data["restart"] is False
        assert manager.get("pol").graceful_timeout == 3
        manager.scale("pol", 3)
        await all_running(manager, "pol", 3)
        assert {k: v for k, v in pids(manager, "pol").items() if k != "pol.3"} == before

    async def test_restart_rolls_one_at_a_time_by_default(self, manager):
        """restart replaces every pid, one instance down at a time."""
        manager.add(template("rr", numprocesses=3, startsecs=0.1))
        await all_running(manager, "rr", 3)
        before = pids(manager, "rr")
        sub = manager.bus.subscribe("proc.rr.")
        manager.restart("rr")
        down, worst, done = set(), 0, set()
        while len(done) < 3:
            event = await next_event(sub, "proc.rr.")
            if event.topic.endswith(".stop"):
                down.add(event.data["id"])
            elif event.topic.endswith(".running"):
                down.discard(event.data["id"])
                done.add(event.data["id"])
            worst = max(worst, len(down))
        assert worst == 1
        after = pids(manager, "rr")
        assert all(after[k] != before[k] for k in before)


class TestHold:
    async def test_held_manager_spawns_nothing_new_until_released(self):
        """While held, crashes are not respawned and new instances wait; release starts them."""
        lease = Lease()
        manager = Manager(node="test-node", lease=lease)
        try:
            await self._held_then_released(manager, lease)
        finally:
            await manager.shutdown()

    async def _held_then_released(self, manager: Manager, lease: Lease) -> None:
        manager.add(template("lease", numprocesses=2))
        await all_running(manager, "lease", 2)
        survivor = pids(manager, "lease")["lease.1"]
        lease.hold()
        sub = manager.bus.subscribe("proc.lease.exit")
        manager.kill("lease.2", "KILL")
        await next_event(sub, "proc.lease.exit")
        manager.scale("lease", 3)
        await manager.wait_until(
            lambda: states(manager, "lease") == {"lease.1": "running", "lease.2": "backoff", "lease.3": "backoff"},
            timeout=5,
        )
        assert pids(manager, "lease") == {"lease.1": survivor}
        lease.release()
        await all_running(manager, "lease", 3)
        assert pids(manager, "lease")["lease.1"] == survivor

    async def test_agent_env_marks_processes_for_adoption(self, tmp_path):
        """In agent mode every process carries the agent's variables and its spec hash."""
        mgr = Manager(node="n", agent_env={"GAFFER_AGENT_ID": "abc123"})
        out = tmp_path / "env"
        try:
            t = template("marked", cmd="sh", args=["-c", f"env > {out}; sleep 300"])
            mgr.add(t)
            await poll_until(lambda: out.exists() and "GAFFER_SPEC" in out.read_text())
            env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
            assert env["GAFFER_AGENT_ID"] == "abc123" and env["GAFFER_SPEC"] == t.spec_hash()
        finally:
            await mgr.shutdown()


class TestSignals:
    async def test_kill_one_instance(self, manager):
        """kill ID SIGNAL reaches only that instance."""
        sub = manager.bus.subscribe("proc.sig.exit")
        manager.add(template("sig", numprocesses=2))
        await all_running(manager, "sig", 2)
        [pid] = manager.kill("sig.2", "USR1")
        event = await next_event(sub, "proc.sig.exit")
        assert event.data["id"] == "sig.2" and event.data["signal"] == "USR1" and event.data["pid"] == pid

    async def test_kill_all_instances_of_a_template(self, manager):
        """kill NAME signals every live instance."""
        manager.add(template("all", numprocesses=3))
        await all_running(manager, "all", 3)
        assert sorted(manager.kill("all", "TERM")) == sorted(pids(manager, "all").values())

    async def test_exit_while_no_longer_wanted_does_not_hang_shutdown(self, manager):
        """Instances that die on their own just as the template is stopped end `stopped`."""
        manager.add(template("racy", numprocesses=3))
        await all_running(manager, "racy", 3)
        old = list(pids(manager, "racy").values())
        manager.kill("racy", "KILL")
        deadline = time.monotonic() + 5
        while not all(pid_dead(p) for p in old):
            assert time.monotonic() < deadline, "killed processes did not die"
        manager.stop("racy")
        await manager.wait_until(lambda: set(states(manager, "racy").values()) == {"stopped"}, timeout=10)
        await asyncio.wait_for(manager.shutdown(), 10)

    async def test_bad_targets_and_signals_are_clear_errors(self, manager):
        """Unknown instance or signal names raise specific errors."""
        manager.add(template("x"))
        with pytest.raises(InstanceNotFound):
            manager.kill("x.9", "TERM")
        with pytest.raises(InvalidSignal):
            manager.kill("x.1", "SIGNOPE")


class TestEvents:
    async def test_proc_event_payload(self, manager):
        """Events carry node, template, id, pid, status, signal and a timestamp."""
        sub = manager.bus.subscribe("proc.pay.")
        manager.add(template("pay", cmd="sh", args=["-c", "exit 4"], restart="never"))
        spawn = await next_event(sub, "proc.pay.spawn")
        exit_ = await next_event(sub, "proc.pay.exit")
        for key in ("node", "template", "id", "pid", "ts"):
            assert key in spawn.data and key in exit_.data
        assert exit_.data["status"] == 4 and exit_.data["signal"] is None
        assert exit_.data["pid"] == spawn.data["pid"] and exit_.seq > spawn.seq

    async def test_slow_subscriber_never_blocks_the_manager(self, manager):
        """A subscriber that never reads is cut off; spawning carries on."""
        stuck = manager.bus.subscribe("", maxsize=5)
        manager.add(template("busy", numprocesses=20))
        await all_running(manager, "busy", 20)
        assert stuck.too_slow
