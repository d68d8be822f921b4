"""A burst of real spawns whose execs run in lanes (threads): each child is its own.

``Processes.prepare`` then ``launch`` then ``finish``, as the Executor drives a burst, with
two lanes whatever the machine has: every child gets its own process, session, process group
and pipes; a spawn that cannot start (a missing program, an exec that fails in its lane) is
reported for that spawn alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import threading
from pathlib import Path

import pytest

from gaffer.agent.lanes import Lanes
from gaffer.agent.manager import Manager
from gaffer.agent.process import ExitStatus, LaunchSpec, Process
from gaffer.agent.processes import Processes
from gaffer.common.errors import SpawnError
from gaffer.testing import pid_dead, poll_until, template

SH = "/bin/sh"
SCRIPT = 'echo "out $0"; echo "err $0" >&2; exec sleep 30'


def lane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gaffer-lane")]


def spec(argv: tuple[str, ...]) -> LaunchSpec:
    return LaunchSpec(argv=argv, env=dict(os.environ), stdout=True, stderr=True)


async def stop(processes: list[Process]) -> None:
    for process in processes:
        process.signal(signal.SIGKILL)
    await poll_until(lambda: all(not p.alive for p in processes), what="children killed")


async def test_a_burst_in_lanes_gives_each_child_its_own_session_and_streams(tmp_path: Path) -> None:
    """8 spawns in two lanes, one with a missing program and one whose exec fails: the six
    others run, each leading its own session with its own pipes; each failure is its own."""
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF not really\n")
    garbage.chmod(stat.S_IRWXU)
    factory = Processes(asyncio.get_running_loop(), lanes=Lanes(2))
    output: dict[str, list[tuple[str, bytes]]] = {}
    exits: dict[str, ExitStatus] = {}
    launches = []
    refused = []
    for n in range(1, 9):
        name = f"web.{n}"
        argv = (SH, "-c", SCRIPT, name)
        if n == 3:
            argv = ("gaffer-no-such-program",)
        elif n == 6:
            argv = (str(garbage),)
        on_output = lambda stream, data, name=name: output.setdefault(name, []).append((stream, data))
        on_exit = lambda status, name=name: exits.__setitem__(name, status)
        try:
            launches.append((name, factory.prepare(spec(argv), name, on_exit, on_output)))
        except SpawnError as exc:
            refused.append((name, exc.message))
    assert refused == [("web.3", "command 'gaffer-no-such-program' not found")]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        factory.launch([launch for _, launch in launches])
        assert len(lane_threads()) == 1
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    started: dict[str, Process] = {}
    failed = []
    for name, launch in launches:
        try:
            started[name] = launch.finish()
        except SpawnError as exc:
            failed.append((name, exc.message))
    try:
        assert failed == [("web.6", f"cannot run {str(garbage)!r}: Exec format error")]
        assert sorted(started) == ["web.1", "web.2", "web.4", "web.5", "web.7", "web.8"]
        pids = [p.pid for p in started.values()]
        assert len(set(pids)) == 6
        for process in started.values():
            assert process.pid is not None
            assert os.getsid(process.pid) == process.pid
            assert os.getpgid(process.pid) == process.pid
        pipes = [os.readlink(f"/proc/{pid}/fd/{fd}") for pid in pids for fd in (1, 2)]
        assert len(set(pipes)) == 12 and all(p.startswith("pipe:") for p in pipes)

        def said(name: str) -> bytes:
            return b"".join(data for _, data in output.get(name, []))

        def said_all() -> bool:
            execd = all(Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep") for pid in pids)
            return execd and all(said(name).count(b"\n") == 2 for name in started)

        await poll_until(said_all, what="every child's output, then its exec of sleep")
        for name, process in started.items():
            out = b"".join(d for s, d in output[name] if s == "out").decode()
            err = b"".join(d for s, d in output[name] if s == "err").decode()
            assert (out, err) == (f"out {name}\n", f"err {name}\n")
            status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
            assert "SigBlk:\t0000000000000000" in status
        assert not exits
    finally:
        await stop(list(started.values()))
        factory.close()
    assert not lane_threads()


async def test_a_manager_start_of_many_runs_each_in_its_own_session() -> None:
    """A template of 40 on real processes: all running, 40 pids, 40 sessions; close ends the
    lanes."""
    manager = Manager(node="n1", processes=Processes(asyncio.get_running_loop(), lanes=Lanes(2)))
    manager.add(template("many", cmd="sleep", args=["30"], numprocesses=40))
    try:
        await manager.wait_until(
            lambda: [row["state"] for row in manager.instances()] == ["running"] * 40, timeout=30
        )
        pids = [row["pid"] for row in manager.instances()]
        assert len(set(pids)) == 40
        assert {os.getsid(pid) for pid in pids} == set(pids)
        assert lane_threads()
    finally:
        await manager.shutdown()
        manager.close()
    assert not lane_threads()
    assert all(pid_dead(pid) for pid in pids)


def test_one_lane_runs_every_exec_on_the_callers_thread() -> None:
    """Lanes(1) starts no thread: a burst is then run where it is launched."""
    lanes = Lanes(1)
    ran: list[str] = []
    lanes.run([lambda: ran.append(threading.current_thread().name) for _ in range(3)])
    assert ran == [threading.current_thread().name] * 3
    assert not lane_threads()


@pytest.fixture(autouse=True)
def no_lanes_left() -> None:
    assert not lane_threads()
