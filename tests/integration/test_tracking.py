"""Descendant tracking on real processes: double-forking daemons never outlive their instance."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path

import pytest

from gaffer.agent import reaper as reaping
from gaffer.agent.cgroups import CgroupTree
from gaffer.agent.manager import Manager
from gaffer.agent.reaper import Reaper
from gaffer.agent.tracking import CGROUP, SUBREAPER, Tracker
from gaffer.testing import pid_dead, poll_until, template

DAEMON = r"""
import os, sys, time
out = sys.argv[1]
child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() == 0:
        with open(out + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(out + ".tmp", out)
        while True:
            time.sleep(60)
    os._exit(0)
os.waitpid(child, 0)
if len(sys.argv) > 2:
    while not os.path.exists(out):
        time.sleep(0.01)
    sys.exit(int(sys.argv[2]))
while True:
    time.sleep(60)
"""


def carrying(mark: str) -> list[int]:
    """Pids whose environment holds ``MARK=<mark>`` (a scan of /proc, as an operator would)."""
    needle = f"\0MARK={mark}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as env:
                data = b"\0" + env.read()
            with open(f"/proc/{name}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in data and state != b"Z":
            found.append(int(name))
    return found


def kill_all(mark: str) -> None:
    for pid in carrying(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def mark():
    """A token in every test process's environment; whatever still carries it is killed."""
    token = secrets.token_hex(6)
    try:
        yield token
    finally:
        kill_all(token)


@pytest.fixture(params=[CGROUP, SUBREAPER])
async def tracker(request):
    """This test process as a subreaper with a reaper, and a Tracker in each mode (cgroup
    mode skipped, with the reason, where this host does not allow it)."""
    node = "trk-" + secrets.token_hex(4)
    reaping.become_subreaper()
    reaper = Reaper()
    reaper.start()
    tracker = Tracker.for_host(node, None, request.param, reaper)
    try:
        if request.param == CGROUP and tracker.mode != CGROUP:
            pytest.skip(f"cgroups are not usable on this host: {tracker.reason}")
        yield tracker
    finally:
        await tracker.aclose()
        reaper.close()
        reaping.stop_being_subreaper()
        if tracker.cgroups is not None:
            _remove_tree(tracker.cgroups)


def _remove_tree(tree: CgroupTree) -> None:
    for path in (tree.fs, tree.node_fs):
        try:
            for entry in os.scandir(path):
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)
            os.rmdir(path)
        except OSError:
            pass


def daemon_template(name: str, out: Path, mark: str, *extra: str, **fields):
    return template(
        name, cmd=sys.executable, args=["-c", DAEMON, str(out), *extra], env={"MARK": mark},
        graceful_timeout=2.0, **fields,
    )


async def daemon_pid(out: Path) -> int:
    await poll_until(out.exists, what="the daemon to write its pid")
    return int(out.read_text())


class TestDoubleForkedDaemons:
    async def test_delete_stops_a_double_forked_daemon(self, tracker, mark, tmp_path):
        """After remove (gafferctl delete), the setsid daemon is gone: by pid and by its env marker."""
        manager = Manager(node=tracker.node, tracker=tracker)
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("dd", out, mark))
        daemon = await daemon_pid(out)
        [row] = manager.instances("dd")
        assert os.getsid(daemon) != row["pid"] and not pid_dead(daemon)

        await manager.remove("dd")

        await poll_until(lambda: pid_dead(daemon), what="the daemon to die with its instance")
        await poll_until(lambda: carrying(mark) == [], what="no process to carry the marker")

    async def test_the_daemon_dies_when_its_leader_exits(self, tracker, mark, tmp_path):
        """A leader that exits leaves no daemon behind (kill leftovers covers the escaped ones)."""
        manager = Manager(node=tracker.node, tracker=tracker)
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("lx", out, mark, "0", restart="never"))
        daemon = await daemon_pid(out)
        await manager.wait_until(lambda: manager.instances("lx")[0]["state"] == "exited", timeout=10)
        await poll_until(lambda: pid_dead(daemon), what="the leftover daemon to be killed")
        await poll_until(lambda: carrying(mark) == [], what="no process to carry the marker")
        await manager.shutdown()

    async def test_stopping_one_instance_spares_the_daemons_of_another(self, tracker, mark, tmp_path):
        """Descendants are told apart by instance: scale-down kills only the removed ordinal's daemon."""
        manager = Manager(node=tracker.node, tracker=tracker)
        manager.add(template(
            "two", cmd=sys.executable, numprocesses=2, env={"MARK": mark}, graceful_timeout=2.0,
            args=["-c", DAEMON, str(tmp_path / "d.$GAFFER_INSTANCE")],
        ))
        first, second = await daemon_pid(tmp_path / "d.1"), await daemon_pid(tmp_path / "d.2")
        manager.scale("two", 1)
        await poll_until(lambda: pid_dead(second), what="the removed ordinal's daemon to die")
        await manager.wait_until(lambda: len(manager.instances("two")) == 1, timeout=10)
        assert not pid_dead(first)
        await manager.shutdown()
        await poll_until(lambda: pid_dead(first) and carrying(mark) == [], what="everything to stop")

    async def test_orphans_are_reaped(self, tracker, mark, tmp_path):
        """Killed daemons re-parented to this subreaper do not stay zombies."""
        manager = Manager(node=tracker.node, tracker=tracker)
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("zz", out, mark))
        daemon = await daemon_pid(out)
        assert _ppid(daemon) == os.getpid()
        await manager.remove("zz")
        await poll_until(lambda: not Path(f"/proc/{daemon}").exists(), what="the daemon to be reaped")


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])
