"""Adoption: finding and watching the instances an earlier agent spawned (real orphaned processes)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from gaffer.agent import journal
from gaffer.agent.adoption import discover
from gaffer.agent.keeper.client import KeeperClient
from gaffer.agent.keeper.daemon import lock_path
from gaffer.agent.process import ExitStatus, LaunchSpec, Process
from gaffer.common.errors import AdoptError
from gaffer.testing import pid_dead, poll_until

NODE = "adopt-node"

LAUNCHER = r"""
import json, subprocess, sys
pids = []
for spec in json.loads(sys.argv[1]):
    proc = subprocess.Popen(
        spec["argv"], env=spec["env"], start_new_session=spec["leader"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pids.append(proc.pid)
print(json.dumps(pids))
"""

KEEPING_LAUNCHER = r"""
import asyncio, json, subprocess, sys, uvloop
from gaffer.agent.keeper.client import KeeperClient

async def main(path, spec):
    client = await KeeperClient.connect(path)
    proc = subprocess.Popen(
        spec["argv"], env=spec["env"], start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    await client.deposit(spec["id"], {"out": proc.stdout.fileno(), "in": proc.stdin.fileno()})
    print(json.dumps([proc.pid]), flush=True)

uvloop.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""

ECHO = 'echo started; while read line; do echo "got $line"; done'


def env(agent_id: str, template: str, ordinal: int | str, node: str = NODE, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "GAFFER_AGENT_ID": agent_id,
        "GAFFER_NODE": node,
        "GAFFER_TEMPLATE": template,
        "GAFFER_INSTANCE": str(ordinal),
        **extra,
    }


def spec(argv: list[str], environ: dict[str, str], leader: bool = True) -> dict:
    return {"argv": argv, "env": environ, "leader": leader}


def launch_spec(argv: list[str]) -> LaunchSpec:
    return LaunchSpec(argv=tuple(argv), env={}, stdout=True, stdin=True)


def _kill(pid: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def agent_id() -> str:
    """A fresh agent id per test, so processes of other tests never match."""
    return secrets.token_hex(8)


@pytest.fixture
def orphans():
    """Launch processes through a launcher that exits, so they are not this test's children
    (as after an agent restart); every one is killed at the end, with its group if it leads one."""
    launched: list[tuple[int, bool]] = []

    def launch(*specs: dict) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", LAUNCHER, json.dumps(list(specs))],
            capture_output=True, check=True, timeout=30,
        )
        pids = json.loads(out.stdout)
        launched.extend(zip(pids, (s["leader"] for s in specs)))
        return pids

    try:
        yield launch
    finally:
        for pid, leader in launched:
            _kill(pid, leader)


@pytest.fixture
def keeper_sock():
    path = Path(tempfile.mkdtemp(prefix="ga-", dir="/tmp"))
    sock = path / "keeper.sock"
    try:
        yield sock
    finally:
        try:
            pid = int(Path(lock_path(str(sock))).read_text().split()[0])
            if "gaffer.agent.keeper" in psutil.Process(pid).cmdline():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ValueError, IndexError, psutil.Error, ProcessLookupError):
            pass
        shutil.rmtree(path, ignore_errors=True)


class TestDiscover:
    def test_finds_exactly_this_agents_session_leaders_on_this_node(self, orphans, agent_id, tmp_path):
        """Only live session leaders with this agent id and node: not their children, not other agents or nodes."""
        child_file = tmp_path / "child"
        web1, web2, web3, other_agent, other_node, follower = orphans(
            spec(["sleep", "300"], env(agent_id, "web", 1)),
            spec(["sh", "-c", f"sleep 300 & echo $! > {child_file}; wait"], env(agent_id, "web", 2)),
            spec(["sleep", "300"], env(agent_id, "web", "run-1", GAFFER_SPEC="abc123")),
            spec(["sleep", "300"], env("someone-else", "web", 4)),
            spec(["sleep", "300"], env(agent_id, "web", 5, node="elsewhere")),
            spec(["sleep", "300"], env(agent_id, "web", 6), leader=False),
        )
        poll_until_sync(lambda: child_file.exists() and child_file.read_text().strip())

        found = discover(NODE, agent_id)

        assert [(f.pid, f.instance_id) for f in found] == [(web1, "web.1"), (web2, "web.2"), (web3, "web.run-1")]
        first, _, oneoff = found
        assert (first.template, first.ordinal, first.spec) == ("web", 1, None)
        assert (oneoff.ordinal, oneoff.spec) == ("run-1", "abc123")
        assert first.started_at == pytest.approx(psutil.Process(web1).create_time(), abs=0.011)

    def test_skips_a_zombie_instance(self, agent_id):
        """A session leader that exited but is not reaped yet is not an instance to adopt."""
        proc = subprocess.Popen(["true"], env=env(agent_id, "job", 1), start_new_session=True)
        try:
            poll_until_sync(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
            assert discover(NODE, agent_id) == []
        finally:
            proc.wait()

    def test_tolerates_processes_exiting_mid_scan(self, orphans, agent_id):
        """Instances that come and go while scanning never break the scan nor hide a live one."""
        (stable,) = orphans(spec(["sleep", "300"], env(agent_id, "web", 1)))
        churn = subprocess.Popen(
            [sys.executable, "-c", (
                "import subprocess, sys, json\n"
                "env = json.loads(sys.argv[1])\n"
                "for _ in range(300):\n"
                "    subprocess.run(['true'], env=env, start_new_session=True)\n"
            ), json.dumps(env(agent_id, "churn", 1))],
        )
        try:
            scans = 0
            while churn.poll() is None or scans < 5:
                found = discover(NODE, agent_id)
                assert stable in [f.pid for f in found]
                assert {f.template for f in found} <= {"web", "churn"}
                scans += 1
        finally:
            churn.kill()
            churn.wait()


def poll_until_sync(predicate, timeout: float = 10.0) -> None:
    """poll_until for sync tests: runs the same deadline poll on a private loop."""
    asyncio.run(poll_until(predicate, timeout))


class TestAdopt:
    async def test_reports_the_exit_of_an_adopted_process_and_kills_its_group(self, orphans, agent_id, tmp_path):
        """kill -9 of an adopted leader: the exit is reported at once and the leader's leftover child is killed."""
        child_file = tmp_path / "child"
        (pid,) = orphans(spec(["sh", "-c", f"sleep 300 & echo $! > {child_file}; wait"], env(agent_id, "web", 1)))
        await poll_until(lambda: child_file.exists() and child_file.read_text().strip() != "")
        child = int(child_file.read_text())
        (found,) = discover(NODE, agent_id)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ExitStatus] = loop.create_future()
        proc = Process.adopt(launch_spec(["sh"]), found.pid, found.started_at, {}, done.set_result, loop=loop)
        assert proc.alive and proc.pid == pid

        os.kill(pid, signal.SIGKILL)
        status = await asyncio.wait_for(done, 10)

        assert status.code is None and status.signal in (signal.SIGKILL, None)
        assert not proc.alive
        await poll_until(lambda: pid_dead(child), what="the leftover child to be killed")

    async def test_reclaimed_pipes_carry_output_and_input_of_an_adopted_process(
        self, keeper_sock, agent_id
    ):
        """After the agent's death: reclaim the pipes, adopt, and the process's stdout and stdin work again."""
        environ = env(agent_id, "echo", 1)
        launched = subprocess.run(
            [sys.executable, "-c", KEEPING_LAUNCHER, str(keeper_sock),
             json.dumps({"argv": ["sh", "-c", ECHO], "env": environ, "id": "echo.1"})],
            capture_output=True, check=True, timeout=30,
        )
        (pid,) = json.loads(launched.stdout)
        client = await KeeperClient.connect(keeper_sock, spawn=False)
        proc = None
        try:
            held = (await client.reclaim())["echo.1"]
            (found,) = discover(NODE, agent_id)
            assert found.pid == pid
            loop = asyncio.get_running_loop()
            output = bytearray(held.buffered.get("out", b""))
            done: asyncio.Future[ExitStatus] = loop.create_future()
            proc = Process.adopt(
                launch_spec(["sh"]), found.pid, found.started_at, held.fds, done.set_result,
                lambda stream, data: output.extend(data), loop=loop,
            )
            await poll_until(lambda: b"started\n" in output, what="the output from before adoption")
            proc.write(b"hello\n")
            await poll_until(lambda: b"got hello\n" in output, what="the answer through the adopted pipes")
            proc.signal(signal.SIGTERM)
            await asyncio.wait_for(done, 10)
            assert await client.release("echo.1") is True
        finally:
            client.close()
            _kill(pid, True)

    async def test_refuses_a_pid_that_started_at_another_time(self, orphans, agent_id):
        """A recorded start time that does not match means the pid was reused: AdoptError, nothing watched."""
        (pid,) = orphans(spec(["sleep", "300"], env(agent_id, "web", 1)))
        (found,) = discover(NODE, agent_id)
        loop = asyncio.get_running_loop()
        with pytest.raises(AdoptError, match=f"pid {pid}: it started at"):
            Process.adopt(launch_spec(["sleep"]), pid, found.started_at - 60, {}, lambda status: None, loop=loop)

    async def test_refuses_a_pid_that_is_gone(self):
        """Adopting a process that no longer exists is a clear AdoptError."""
        proc = subprocess.Popen(["true"])
        proc.wait()
        loop = asyncio.get_running_loop()
        with pytest.raises(AdoptError, match=f"cannot adopt pid {proc.pid}"):
            Process.adopt(launch_spec(["true"]), proc.pid, 0.0, {}, lambda status: None, loop=loop)


class TestJournal:
    def test_a_recorded_process_is_recognised_only_while_it_is_the_same(self, tmp_path: Path) -> None:
        """still_running checks pid, start time and session leadership."""
        proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            book = journal.Journal(tmp_path / "j")
            book.spawned("s.1", proc.pid, "abc")
            book.close()
            [entry] = journal.read(tmp_path / "j")
            assert entry.pid == proc.pid and entry.spec == "abc" and journal.still_running(entry)
            assert not journal.still_running(journal.Entry("s.1", proc.pid, entry.start_ticks + 1))
            assert not journal.still_running(journal.Entry("me.1", os.getpid(), 0))
        finally:
            proc.kill()
            proc.wait()
        assert not journal.still_running(entry)
