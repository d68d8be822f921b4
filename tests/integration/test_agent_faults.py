"""Faults on a real ``gaffer-agent`` daemon, then the invariants (issue 7, section 4).

Each test runs a controller in this process and the agent as a real daemon (with its real fd
keeper), breaks something with SIGKILL or rm -rf, and checks what actually runs in /proc:
at most one process per ``<template>.<ordinal>``, nothing escaped, nothing lost. Every loop is
bounded; every process of the test's node is killed at the end by pid.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from gaffer.agent.agent import Agent
from gaffer.agent.keeper.daemon import lock_path
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import POLL, pid_dead, poll_until
from procs_helpers import remove_node_cgroups

AGENT_BIN = str(Path(sys.executable).parent / "gaffer-agent")
FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)
CHATTY = "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done"
DAEMON = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        while True:
            time.sleep(60)  # the managed process's own work: it idles until killed
    os._exit(0)
while True:
    time.sleep(60)  # the managed process's own work: it idles until killed
"""


def spec(name: str, count: int, cmd: str, *args: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "cmd": cmd, "args": list(args), "numprocesses": count, "startsecs": 0, **fields}


class Lab:
    """One controller (here) and the node's agent daemon; knows every pid it must clean up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = "fx-" + secrets.token_hex(4)
        self.state = root / "agent"
        self.controller: Controller | None = None
        self.client: AsyncClient | None = None
        self.agents: list[subprocess.Popen] = []
        self.keepers: set[int] = set()

    async def start_controller(self) -> None:
        self.controller = Controller(ControllerSettings(
            bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=self.root / "controller",
            insecure=True, liveness=FAST, node_grace=0.3,
        ))
        await self.controller.start()
        self.client = AsyncClient(self.controller.endpoint, timeout=5.0)

    async def start_agent(self, tracking: str = "auto") -> subprocess.Popen:
        """Start an agent daemon and wait until *it* said hello: after an earlier agent of the
        node, until the node's ``connected_at`` changes (the old rows answer ``ps`` from
        memory meanwhile)."""
        assert self.controller is not None
        earlier = (await self.node_view()).get("connected_at")
        argv = [AGENT_BIN, "--controller", self.controller.endpoint, "--name", self.node,
                "--state-dir", str(self.state), "--insecure"]
        if tracking != "auto":
            argv += ["--tracking", tracking]
        with open(self.root / "agent.log", "ab") as log:
            agent = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        self.agents.append(agent)
        await self.wait_node(lambda n: n["state"] == "up" and n.get("version") and n.get("connected_at") != earlier)
        self.note_keeper()
        return agent

    async def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None
        return await self.client.call(op, **args)

    async def node_view(self) -> dict[str, Any]:
        rows = {n["name"]: n for n in await self.call("nodes")}
        return rows.get(self.node, {})

    async def wait_node(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.node_view()
            if view and predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.node} never got there: {view}\n{self.log_tail()}")
            await asyncio.sleep(POLL)  # poll

    async def running(self) -> dict[str, int]:
        rows = await self.call("ps")
        return {r["id"]: r["pid"] for r in rows if r["state"] == "running" and not r["stale"]}

    async def wait_running(self, predicate, timeout: float = 20.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.running()
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"running: {found}; leaders: {self.leaders()}\n{self.log_tail()}")
            await asyncio.sleep(POLL)  # poll

    def keeper_pid(self) -> int | None:
        try:
            pid = int(Path(lock_path(str(self.state / "keeper.sock"))).read_text().split()[0])
            if "gaffer.agent.keeper" in psutil.Process(pid).cmdline():
                return pid
        except (FileNotFoundError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def note_keeper(self) -> int | None:
        pid = self.keeper_pid()
        if pid is not None:
            self.keepers.add(pid)
        return pid

    def processes(self) -> list[psutil.Process]:
        """Every live process that carries this node's GAFFER_NODE."""
        out = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("GAFFER_NODE") == self.node and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def leaders(self) -> dict[str, list[int]]:
        """Session leaders per instance id (the instances' main processes, by /proc)."""
        out: dict[str, list[int]] = {}
        for proc in self.processes():
            try:
                env = proc.environ()
                if os.getsid(proc.pid) == proc.pid:
                    out.setdefault(f"{env['GAFFER_TEMPLATE']}.{env['GAFFER_INSTANCE']}", []).append(proc.pid)
            except (psutil.Error, OSError, KeyError):
                continue
        return out

    def log_tail(self) -> str:
        try:
            return (self.root / "agent.log").read_text()[-3000:]
        except FileNotFoundError:
            return ""

    async def close(self) -> None:
        for agent in self.agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
        self.note_keeper()
        for pid in self.keepers:
            _kill(pid)
        for _ in range(3):
            for proc in self.processes():
                _kill(proc.pid)
        remove_node_cgroups(self.node)
        if self.client is not None:
            await self.client.close()
        if self.controller is not None:
            await self.controller.stop()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
async def lab():
    root = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))
    lab = Lab(root)
    try:
        yield lab
    finally:
        await lab.close()
        shutil.rmtree(root, ignore_errors=True)


def one_per_ordinal(lab: Lab, running: dict[str, int], count: int) -> bool:
    """Exactly ``count`` running, one main process each in /proc, and they are the ones ps shows."""
    leaders = lab.leaders()
    return (
        len(running) == count
        and all(len(pids) == 1 for pids in leaders.values())
        and {ident: pids[0] for ident, pids in leaders.items()} == running
    )


def nothing_escaped(lab: Lab, running: dict[str, int]) -> list[int]:
    """Pids of this node's processes that are neither a running instance nor in its session."""
    sessions = set(running.values())
    strays = []
    for proc in lab.processes():
        try:
            if os.getsid(proc.pid) not in sessions:
                strays.append(proc.pid)
        except OSError:
            continue
    return strays


class TestDeletedStateDir:
    async def test_a_new_agent_settles_to_one_process_per_ordinal(self, lab):
        """Issue 7: kill -9 agent and keeper, rm -rf the state dir, start again: one process per
        ordinal, the silent ones adopted (same pid), nothing left over."""
        await lab.start_controller()
        agent = await lab.start_agent()
        await lab.call("apply", templates=[
            spec("quiet", 3, "sleep", "300", redirect_output=[]),
            spec("chatty", 2, "sh", "-c", CHATTY),
        ])
        before = await lab.wait_running(lambda r: len(r) == 5)
        keeper = lab.note_keeper()
        assert keeper is not None

        agent.kill()
        agent.wait(10)
        os.kill(keeper, signal.SIGKILL)
        await poll_until(lambda: pid_dead(keeper), what="the keeper to die")
        shutil.rmtree(lab.state)
        await lab.start_agent()

        settled = await lab.wait_running(lambda r: one_per_ordinal(lab, r, 5), timeout=30)
        quiet = {ident: pid for ident, pid in before.items() if ident.startswith("quiet.")}
        assert {ident: settled[ident] for ident in quiet} == quiet
        assert nothing_escaped(lab, settled) == []


class TestKeeperKills:
    async def test_a_lost_keeper_never_costs_a_running_process(self, lab):
        """Issue 7: kill -9 the keeper five times, then once more and stop the agent at once;
        after the restart every writer runs with the same pid, adopted, and its output flows."""
        await lab.start_controller()
        agent = await lab.start_agent()
        await lab.call("apply", templates=[spec("chatty", 3, "sh", "-c", CHATTY)])
        before = await lab.wait_running(lambda r: len(r) == 3)
        for _ in range(5):
            old = lab.note_keeper()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            await poll_until(lambda: pid_dead(old) and lab.note_keeper() not in (None, old),
                             timeout=15, what="a new keeper")
            await lab.wait_node(lambda n: n.get("keeper") == "running")
            assert await lab.running() == before

        last = lab.note_keeper()
        assert last is not None
        os.kill(last, signal.SIGKILL)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        assert all(not pid_dead(pid) for pid in before.values())

        await lab.start_agent()
        after = await lab.wait_running(lambda r: one_per_ordinal(lab, r, 3), timeout=30)
        assert after == before
        for ident in before:
            seen = _last_line(await lab.call("logs", target=ident, lines=5))
            await _wait_for_output(lab, ident, seen + 20)

    async def test_keeper_state_is_reported(self, lab):
        """The node's keeper state and tracking mode reach the controller (nodes and status)."""
        await lab.start_controller()
        await lab.start_agent()
        view = await lab.wait_node(lambda n: n.get("keeper") == "running")
        assert view["tracking"] in ("cgroup", "subreaper")
        status = await lab.call("status")
        assert status["hosts"]["keeper"] == {"running": 1}
        assert sum(status["hosts"]["tracking"].values()) == 1


def _last_line(lines: list[dict[str, Any]]) -> int:
    numbers = [int(m.group(1)) for line in lines if (m := re.fullmatch(r"line (\d+)", line["line"]))]
    return max(numbers, default=0)


async def _wait_for_output(lab: Lab, ident: str, beyond: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _last_line(await lab.call("logs", target=ident, lines=5)) < beyond:
        if time.monotonic() > deadline:
            raise AssertionError(f"{ident}: no output past line {beyond}\n{lab.log_tail()}")
        await asyncio.sleep(POLL)  # poll


class TestDaemonsUnderAnAgent:
    @pytest.mark.parametrize("tracking", ["auto", "subreaper"])
    async def test_delete_leaves_no_double_forked_daemon(self, lab, tracking):
        """A real agent (cgroups where possible, or forced to subreaper mode): delete kills the
        instances' setsid daemons, checked by pid and by scanning /proc for the node's marker."""
        await lab.start_controller()
        await lab.start_agent(tracking)
        await lab.call("apply", templates=[spec(
            "dmn", 2, sys.executable, "-c", DAEMON, str(lab.root / "d.$GAFFER_INSTANCE"),
            graceful_timeout=2.0,
        )])
        await lab.wait_running(lambda r: len(r) == 2)
        await poll_until(lambda: all((lab.root / f"d.{i}").exists() for i in (1, 2)), what="the daemons")
        daemons = [int((lab.root / f"d.{i}").read_text()) for i in (1, 2)]
        assert all(not pid_dead(pid) for pid in daemons)

        await lab.call("delete", name="dmn")

        await poll_until(lambda: all(pid_dead(pid) for pid in daemons), timeout=15, what="the daemons to die")
        await poll_until(lambda: lab.processes() == [], timeout=15, what="no process of the node")


class TestGafferStartLeftovers:
    async def test_a_restarted_keeperless_agent_stops_what_its_predecessor_left(self, lab):
        """``gaffer start`` killed and started again in the same data dir: the old processes are
        stopped and new ones run, one per ordinal."""
        await lab.start_controller()
        assert lab.controller is not None
        settings = LinkSettings(
            controller=lab.controller.endpoint, node=lab.node, labels={}, state_dir=lab.root / "embedded",
            heartbeat=0.1, timeout=0.5,
        )
        first = Agent(settings, keeper=False)
        await first.start()
        await lab.call("apply", templates=[spec("web", 2, "sleep", "300", redirect_output=[])])
        old = await lab.wait_running(lambda r: len(r) == 2)
        await first.stop()
        assert all(not pid_dead(pid) for pid in old.values())

        again = Agent(settings, keeper=False)
        await again.start()
        try:
            await poll_until(lambda: all(pid_dead(pid) for pid in old.values()), what="the old processes to stop")
            await lab.wait_running(lambda r: one_per_ordinal(lab, r, 2) and not set(r.values()) & set(old.values()))
        finally:
            await again.stop(stop_processes=True)
