"""Commands (what the controller may ask an agent) on a Manager of fake processes."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from gaffer.agent.commands import Commands
from gaffer.agent.manager import Manager
from gaffer.agent.stats import ProcStats
from gaffer.common.errors import InstanceNotFound, InvalidArgument, InvalidRequest, StdinNotEnabled
from gaffer.testing import template
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses


class Sampler:
    async def sample(self, pids: Any) -> dict[int, ProcStats]:
        return {pid: ProcStats(pid, 2.0, 1000, ("sleep", "300")) for pid in pids}


@pytest.fixture
def rig() -> tuple[FakeClock, FakeProcesses, Manager, Commands]:
    clock = FakeClock()
    procs = FakeProcesses(clock)
    manager = Manager(node="n1", clock=clock, processes=procs, environ={"PATH": "/bin"}, stats=Sampler())
    manager.add(template("web", numprocesses=2, redirect_input=True))
    manager.add(template("deaf"))
    clock.run()
    return clock, procs, manager, Commands(manager)


async def call(commands: Commands, op: str, **args: Any) -> Any:
    return await commands.table()[op](op, args)


class TestCommands:
    async def test_kill_signals_an_instance_or_a_template(self, rig: Any) -> None:
        """kill returns the pids signalled; a whole template, or one instance."""
        _, procs, manager, commands = rig
        pids = await call(commands, "kill", target="web", signal="HUP")
        assert sorted(pids) == sorted(p.pid for p in procs.alive("web."))
        assert procs.last("web.1").signals == [signal.SIGHUP]
        assert await call(commands, "kill", target="deaf.1", signal=9) == [procs.last("deaf.1").pid]

    async def test_bad_arguments_are_named(self, rig: Any) -> None:
        """A missing or malformed argument is an InvalidArgument naming it; unknown ids too."""
        _, _, _, commands = rig
        with pytest.raises(InvalidArgument, match="target"):
            await call(commands, "kill")
        with pytest.raises(InvalidArgument, match="lines"):
            await call(commands, "output", id="web.1", lines=-1)
        with pytest.raises(InstanceNotFound):
            await call(commands, "output", id="web.9")

    async def test_write_reaches_stdin_only_where_allowed(self, rig: Any) -> None:
        """write returns the bytes queued; a template without redirect_input refuses."""
        _, procs, _, commands = rig
        assert await call(commands, "write", id="web.2", data="hi\n") == 3
        assert bytes(procs.last("web.2").written) == b"hi\n"
        with pytest.raises(StdinNotEnabled):
            await call(commands, "write", id="deaf.1", data=b"x")

    async def test_output_returns_the_last_lines(self, rig: Any) -> None:
        """output gives the newest lines of a stream as dicts."""
        _, procs, _, commands = rig
        procs.last("web.1").emit("out", b"a\nb\nc\n")
        procs.last("web.1").emit("err", b"oops\n")
        lines = await call(commands, "output", id="web.1", lines=2, stream="out")
        assert [line["line"] for line in lines] == ["b", "c"]

    async def test_stats_per_template(self, rig: Any) -> None:
        """stats sums the sampled cpu and memory of a template's instances."""
        _, _, _, commands = rig
        report = await call(commands, "stats", template="web")
        assert report["web"]["cpu"] == 4.0 and report["web"]["mem"] == 2000

    async def test_run_adds_an_unknown_template_with_no_instances(self, rig: Any) -> None:
        """run of a template this node does not have adds it (no instances) and runs once."""
        clock, procs, manager, commands = rig
        result = await call(commands, "run", template={"name": "job", "cmd": "echo"}, args=["hi"])
        assert result == {"id": "job.run-1", "pid": procs.last("job.run-1").pid}
        assert procs.last("job.run-1").spec.argv == ("echo", "hi")
        clock.run()
        assert [row["id"] for row in manager.instances("job")] == ["job.run-1"]
        assert manager.has_runs("job")

    async def test_run_refuses_a_bad_spec(self, rig: Any) -> None:
        """A spec that is not a map, or not a valid template, is refused clearly."""
        _, _, _, commands = rig
        with pytest.raises(InvalidArgument, match="template"):
            await call(commands, "run", template="job")
        with pytest.raises(InvalidRequest, match="cmd"):
            await call(commands, "run", template={"name": "job"})
