"""Readiness in the Manager, on a fake clock, fake processes and fake probes: rows, events,
restarts on unhealthy, and the Checks runner's bound and ownership."""

from __future__ import annotations

import asyncio

from gaffer.agent.checks import Checks
from gaffer.agent.manager import Manager
from gaffer.agent.probes import Result, Target
from gaffer.common.healthspec import HealthCheck
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.probes import FakeProbes
from gaffer.testing.process import FakeProcesses

CHECK = {"type": "exec", "command": "true", "interval": 1, "timeout": 1, "failure_threshold": 2}


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.procs = FakeProcesses(self.clock)
        self.probes = FakeProbes()
        self.checks = Checks(self.clock, probes=self.probes)
        self.manager = Manager(node="n1", clock=self.clock, processes=self.procs, environ={"PATH": "/bin"},
                               checks=self.checks)
        self.events = self.manager.bus.subscribe("proc.", maxsize=10_000)

    async def advance(self, seconds: float) -> None:
        """Move time on, letting each check that falls due run (in the loop) before the next."""
        self.clock.advance(0)
        await self.clock.settle()
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)
            await self.clock.settle()

    def row(self, instance_id: str) -> dict:
        return self.manager.instance(instance_id)

    def kinds(self) -> list[str]:
        out = []
        while (event := self.events.get_nowait()) is not None:
            out.append(event.topic.rpartition(".")[2])
        return out


async def test_a_checked_instance_is_running_not_ready_until_its_check_passes():
    """Up but not yet checked: running, ready false; the first passing check: ready, ready true."""
    rig = Rig()
    rig.probes.set("api.1", False)
    rig.manager.add(template("api", health=CHECK))
    rig.clock.run()
    assert (rig.row("api.1")["state"], rig.row("api.1")["ready"]) == ("running", False)
    await rig.advance(0.5)
    assert rig.row("api.1")["ready"] is False
    rig.probes.set("api.1", True, "fine")
    await rig.advance(1)
    assert (rig.row("api.1")["state"], rig.row("api.1")["ready"]) == ("ready", True)
    assert rig.kinds() == ["spawn", "running", "ready"]


async def test_an_instance_without_check_or_notify_is_ready_when_running():
    """The contract's rule: running and nothing to wait for counts as ready."""
    rig = Rig()
    rig.manager.add(template("plain"))
    rig.clock.run()
    assert (rig.row("plain.1")["state"], rig.row("plain.1")["ready"]) == ("running", True)


async def test_unhealthy_restarts_the_instance_and_counts_for_flapping():
    """failure_threshold failures: unhealthy, its group stopped, a new process spawned, the exit
    recorded as a failure for flapping (an ordinary stop never is)."""
    rig = Rig()
    rig.manager.add(template("api", health=CHECK))
    await rig.advance(0.5)
    first = rig.procs.last("api.1")
    rig.probes.set("api.1", False, "refused")
    await rig.advance(2)
    assert first.signals and not first.alive
    second = rig.procs.last("api.1")
    assert second is not first and second.alive
    assert len(rig.manager._entries["api"].instances[1].flap.exits) == 1
    assert rig.row("api.1")["restarts"] == 1
    kinds = rig.kinds()
    assert kinds[:6] == ["spawn", "running", "ready", "unhealthy", "stop", "spawn"], kinds


async def test_without_restart_on_unhealthy_it_stays_unhealthy():
    """restart_on_unhealthy = false: announced, left running, and it recovers by passing again."""
    rig = Rig()
    rig.manager.add(template("api", health=CHECK, restart_on_unhealthy=False))
    rig.probes.set("api.1", False, "refused")
    await rig.advance(2)
    assert (rig.row("api.1")["state"], rig.row("api.1")["ready"]) == ("unhealthy", False)
    assert len(rig.procs.of("api.1")) == 1
    rig.probes.set("api.1", True)
    await rig.advance(1)
    assert rig.row("api.1")["state"] == "ready"


async def test_a_stopped_instance_is_no_longer_checked():
    """Stopping an instance ends its watch: no timer, no task, no more checks."""
    rig = Rig()
    rig.manager.add(template("api", health=CHECK))
    await rig.advance(1)
    assert len(rig.checks) == 1
    rig.manager.stop("api")
    rig.clock.run()
    assert len(rig.checks) == 0
    runs = rig.probes.runs["api.1"]
    await rig.advance(5)
    assert rig.probes.runs["api.1"] == runs


async def test_a_changed_check_applies_to_running_instances():
    """apply with a new [health] (no restart: not a launch field) checks the instances with it."""
    rig = Rig()
    rig.manager.add(template("api", health=CHECK))
    await rig.advance(0.5)
    rig.probes.set("api.1", False)
    rig.manager.apply(template("api", health={**CHECK, "failure_threshold": 1}, restart_on_unhealthy=False))
    await rig.advance(0.5)
    assert rig.row("api.1")["state"] == "unhealthy"
    assert len(rig.procs.of("api.1")) == 1


class GatedProbes:
    """Checks that wait until released, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def run(self, check: HealthCheck, target: Target) -> Result:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            return Result(True, "ok")
        finally:
            self.running -= 1


async def test_checks_run_at_most_limit_at_once_and_aclose_cancels_them():
    """20 due checks with a bound of 3: never more than 3 running; aclose ends every one."""
    clock = FakeClock()
    probes = GatedProbes()
    checks = Checks(clock, limit=3, probes=probes)
    spec = HealthCheck(type="tcp", port="1", interval=1.0, timeout=1.0)
    for n in range(20):
        checks.watch(n, lambda verdict, output: None, spec, Target({}))
    clock.advance(0)
    await clock.settle()
    assert probes.most == 3
    await checks.aclose()
    assert probes.running == 0 and len(checks) == 0
