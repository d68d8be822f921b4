"""Descendant tracking on real processes: double-forking daemons never outlive their instance."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gaffer.agent import adoption, presence
from gaffer.agent import reaper as reaping
from gaffer.agent import tracking
from gaffer.agent.cgroups import CgroupTree, procs as cgroup_procs
from gaffer.agent.manager import Manager
from gaffer.agent.ownership import ProcInfo
from gaffer.agent.reaper import Reaper
from gaffer.agent.tracking import CGROUP, SUBREAPER, Tracker
from gaffer.common.errors import ConfigError
from gaffer.testing import pid_dead, poll_until, template
from procs_helpers import remove_node_cgroups

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
            time.sleep(60)  # the managed process's own work: it idles until killed
    os._exit(0)
os.waitpid(child, 0)
if len(sys.argv) > 2:
    while not os.path.exists(out):
        time.sleep(0.01)  # poll: the daemon writes its pid file
    sys.exit(int(sys.argv[2]))
while True:
    time.sleep(60)  # the managed process's own work: it idles until killed
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
        remove_node_cgroups(node)


@pytest.fixture
async def manager(tracker, mark):
    """A Manager tracking with ``tracker``; shut down at the end (before the marked processes
    are killed), so a failing test leaves nothing that respawns."""
    made = Manager(node=tracker.node, tracker=tracker)
    try:
        yield made
    finally:
        try:
            await asyncio.wait_for(made.shutdown(), 15)
        finally:
            kill_all(mark)


def daemon_template(name: str, out: Path, mark: str, *extra: str, **fields):
    return template(
        name, cmd=sys.executable, args=["-c", DAEMON, str(out), *extra], env={"MARK": mark},
        graceful_timeout=2.0, **fields,
    )


async def daemon_pid(out: Path) -> int:
    await poll_until(out.exists, what="the daemon to write its pid")
    return int(out.read_text())


class TestDoubleForkedDaemons:
    async def test_delete_stops_a_double_forked_daemon(self, tracker, manager, mark, tmp_path):
        """After remove (gafferctl delete), the setsid daemon is gone: by pid and by its env marker."""
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("dd", out, mark))
        daemon = await daemon_pid(out)
        [row] = manager.instances("dd")
        assert os.getsid(daemon) != row["pid"] and not pid_dead(daemon)

        await manager.remove("dd")

        await poll_until(lambda: pid_dead(daemon), what="the daemon to die with its instance")
        await poll_until(lambda: carrying(mark) == [], what="no process to carry the marker")
        if tracker.cgroups is not None:
            place = tracker.cgroups.place("dd.1")
            await poll_until(lambda: not os.path.exists(place.fs), what="the empty cgroup to be removed")

    async def test_the_daemon_dies_when_its_leader_exits(self, manager, mark, tmp_path):
        """A leader that exits leaves no daemon behind (kill leftovers covers the escaped ones)."""
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("lx", out, mark, "0", restart="never"))
        daemon = await daemon_pid(out)
        await manager.wait_until(lambda: manager.instances("lx")[0]["state"] == "exited", timeout=10)
        await poll_until(lambda: pid_dead(daemon), what="the leftover daemon to be killed")
        await poll_until(lambda: carrying(mark) == [], what="no process to carry the marker")

    async def test_stopping_one_instance_spares_the_daemons_of_another(self, manager, mark, tmp_path):
        """Descendants are told apart by instance: scale-down kills only the removed ordinal's daemon."""
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

    async def test_orphans_are_reaped(self, manager, mark, tmp_path):
        """Killed daemons re-parented to this subreaper do not stay zombies."""
        out = tmp_path / "daemon.pid"
        manager.add(daemon_template("zz", out, mark))
        daemon = await daemon_pid(out)
        assert _ppid(daemon) == os.getpid()
        await manager.remove("zz")
        await poll_until(lambda: not Path(f"/proc/{daemon}").exists(), what="the daemon to be reaped")


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


async def forked_before_tracking(tracker: Tracker, mark: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A leader of instance w.1 that has double-forked a daemon before the tracker saw it:
    the leader's Popen and the daemon's pid."""
    out = tmp_path / "daemon.pid"
    env = {"PATH": os.environ["PATH"], "MARK": mark, "GAFFER_NODE": tracker.node,
           "GAFFER_TEMPLATE": "w", "GAFFER_INSTANCE": "1"}
    leader = subprocess.Popen([sys.executable, "-c", DAEMON, str(out)], env=env, start_new_session=True)
    return leader, await daemon_pid(out)


class TestCgroupWindow:
    async def test_a_daemon_forked_before_the_move_into_the_cgroup_is_still_killed(self, tracker, mark, tmp_path):
        """A leader that double-forked before it entered its cgroup: the exit is followed by a scan that finds the daemon."""
        if tracker.mode != CGROUP:
            pytest.skip("only cgroup mode has a window between spawn and cgroup")
        leader, daemon = await forked_before_tracking(tracker, mark, tmp_path)
        try:
            track = tracker.spawned("w.1", leader.pid)
            assert track.target is not None and track.may_have_escaped
            leader.kill()
            await poll_until(lambda: _state(leader.pid) == "Z", what="the leader to be a zombie")
            tracker.leftovers(track)
            leader.wait()
            tracker.ended(track)
            await poll_until(lambda: pid_dead(daemon), what="the escaped daemon to be killed")
        finally:
            leader.kill()
            leader.wait()


    async def test_a_daemon_forked_before_the_move_follows_its_leader_into_the_cgroup(self, tracker, mark, tmp_path):
        """The batch that moves a leader into its cgroup moves what it forked before, too."""
        if tracker.mode != CGROUP:
            pytest.skip("only cgroup mode moves processes into cgroups")
        leader, daemon = await forked_before_tracking(tracker, mark, tmp_path)
        try:
            track = tracker.spawned("w.1", leader.pid)
            await poll_until(lambda: track.place is not None, what="the instance placed in its cgroup")
            members = set(cgroup_procs(track.place.fs))
            assert {leader.pid, daemon} <= members and not track.may_have_escaped
            tracker.signal(track, signal.SIGKILL)
            await poll_until(lambda: pid_dead(daemon), what="the daemon killed with its cgroup")
        finally:
            leader.kill()
            leader.wait()
            tracker.ended(track)


    async def test_a_new_incarnation_moved_in_with_an_ended_one_lives_on(self, tracker, mark, tmp_path):
        """An incarnation that ends while its batch is being moved leaves its cgroup to the
        next one: a respawn the move took in by its markers is not killed as a leftover."""
        if tracker.mode != CGROUP:
            pytest.skip("only cgroup mode moves processes into cgroups")
        held = HeldPlacement()
        asyncio.get_running_loop().set_default_executor(held)
        env = {"PATH": os.environ["PATH"], "MARK": mark, "GAFFER_NODE": tracker.node,
               "GAFFER_TEMPLATE": "w", "GAFFER_INSTANCE": "1"}
        old = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        new = None
        try:
            first = tracker.spawned("w.1", old.pid)
            assert await asyncio.to_thread(held.entered.wait, 10), "the batch was never moved"
            old.kill()
            await poll_until(lambda: _state(old.pid) == "Z", what="the old leader to be a zombie")
            tracker.leftovers(first)
            old.wait()
            tracker.ended(first)
            new = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
            second = tracker.spawned("w.1", new.pid)
            held.release.set()
            await poll_until(lambda: second.place is not None, what="the respawn placed in its cgroup")
            assert new.poll() is None, "the respawn was killed with the ended incarnation's leftovers"
            assert new.pid in cgroup_procs(second.place.fs)
            tracker.signal(second, signal.SIGKILL)
        finally:
            held.release.set()
            for proc in (old, new):
                if proc is not None:
                    proc.kill()
                    proc.wait()


class HeldPlacement(concurrent.futures.ThreadPoolExecutor):
    """A default executor that holds each move into cgroups (``tracking._place``) until
    ``release`` is set: the test acts while a batch is being moved."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.entered = threading.Event()
        self.release = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        if fn is not tracking._place:
            return super().submit(fn, *args, **kwargs)

        def held(*args, **kwargs):
            self.entered.set()
            self.release.wait(10)
            return fn(*args, **kwargs)

        return super().submit(held, *args, **kwargs)


class TestReaper:
    async def test_reaps_orphans_but_never_a_registered_child_or_one_in_its_own_session(self):
        """Only zombies that are nobody's are reaped; an owned child and a same-session child keep their status."""
        reaper = Reaper()
        orphan = subprocess.Popen(["true"], start_new_session=True)
        owned = subprocess.Popen(["true"], start_new_session=True)
        mine = subprocess.Popen(["true"])
        reaping.own(owned.pid)
        try:
            await poll_until(lambda: all(_state(p.pid) == "Z" for p in (orphan, owned, mine)), what="three zombies")
            reaper.sweep()
            await poll_until(lambda: reaper.sweep() >= 0 and _state(orphan.pid) is None, what="the orphan reaped")
            assert _state(owned.pid) == "Z" and _state(mine.pid) == "Z"
        finally:
            reaping.disown(owned.pid)
            reaper.close()
            assert owned.wait(5) == 0 and mine.wait(5) == 0


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


class TestPresence:
    def test_an_agent_is_alive_exactly_while_it_holds_its_name(self):
        """alive() is true while Presence holds the id, false once closed; a second holder is refused."""
        agent_id = secrets.token_hex(8)
        assert not presence.alive(agent_id)
        held = presence.Presence(agent_id)
        try:
            assert presence.alive(agent_id)
            assert presence.live_agents([agent_id, "nobody-" + agent_id, None]) == {agent_id}
            with pytest.raises(ConfigError, match=f"another agent with id {agent_id}"):
                presence.Presence(agent_id)
        finally:
            held.close()
        assert not presence.alive(agent_id)


class TestCgroupCleanup:
    async def test_start_removes_empty_cgroups_of_dead_agents_and_keeps_the_rest(self):
        """cleanup: a dead agent's empty cgroups go; a live agent's, and populated ones, stay."""
        node = "cln-" + secrets.token_hex(4)
        tree, reason = CgroupTree.probe(node, "me")
        if tree is None:
            pytest.skip(f"cgroups are not usable on this host: {reason}")
        live_id = secrets.token_hex(8)
        held = presence.Presence(live_id)
        sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
        try:
            dead_empty = os.path.join(tree.node_fs, "dead", "web.1")
            dead_busy = os.path.join(tree.node_fs, "dead", "web.2")
            live_empty = os.path.join(tree.node_fs, live_id, "web.3")
            mine_empty = os.path.join(tree.fs, "web.4")
            for path in (dead_empty, dead_busy, live_empty, mine_empty):
                os.makedirs(path)
            with open(os.path.join(dead_busy, "cgroup.procs"), "w") as procs:
                procs.write(str(sleeper.pid))

            removed = tree.cleanup(presence.alive)

            assert removed == 2
            assert [os.path.exists(p) for p in (dead_empty, dead_busy, live_empty, mine_empty)] == [
                False, True, True, False]
        finally:
            held.close()
            sleeper.kill()
            sleeper.wait()
            remove_node_cgroups(node)


class TestStrays:
    async def test_a_leftover_that_obeys_term_ends_its_stop_at_once(self, tracker):
        """A leftover being stopped (``terminate``) that exits on TERM ends the stop then, so
        an agent going away does not wait out the grace."""
        leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            info = adoption.read_stat(leftover.pid)
            tracker.terminate(ProcInfo(leftover.pid, os.getpid(), leftover.pid, leftover.pid, info.start_ticks),
                              [], grace=120.0)
            await asyncio.wait_for(tracker.finish_strays(120.0), 30)  # not the 120 s grace
            assert leftover.wait(5) == -signal.SIGTERM
        finally:
            leftover.kill()
            leftover.wait()
