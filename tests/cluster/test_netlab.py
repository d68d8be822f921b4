"""The multi-host harness itself: real namespaces, TCP and signals, and teardown on every path."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netlab import (
    Host,
    NetLab,
    delete_netns,
    list_netns,
    pid_running,
    pid_stopped,
    wait_for,
)

pytestmark = pytest.mark.cluster

PORT = "7000"
REACHABLE = 5.0
UNREACHABLE = 0.5

SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen()
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    try:
        conn.sendall(b"pong\\n")
    except OSError:
        pass
    conn.close()
"""

CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        print(c.makefile().readline().strip() or "closed")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc.errno)
"""

HERE = Path(__file__).parent
TICKING = re.compile(r"(valid_lft|preferred_lft|expires) \S+")

LAB_IN_CHILD = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from netlab import NetLab
# Ctrl-C as a terminal delivers it, even if this test runs where SIGINT starts out ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
with NetLab() as lab:
    lab.add_host("a").spawn(["sleep", "300"])
    with open(sys.argv[2] + ".tmp", "w") as out:
        json.dump({"namespaces": lab.namespaces, "pids": lab.pids}, out)
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    signal.pause()
"""


def start_server(host: Host, log: Path) -> subprocess.Popen:
    """A pong server on ``host``'s address, returned once it listens."""
    proc = host.spawn([sys.executable, "-c", SERVER, host.address, PORT], log=log)
    wait_for(lambda: "listening" in log.read_text(), what=f"server on {host.name} to listen")
    return proc


def ask(lab: NetLab, client: Host, server: Host, timeout: float) -> str:
    """What a client on ``client`` gets from ``server``'s port: pong, timeout, refused, error N."""
    argv = [sys.executable, "-c", CLIENT, server.address, PORT, str(timeout)]
    return lab.run(client, argv).stdout.strip()


def root_network_snapshot() -> list[str]:
    """The root namespace's links, addresses and routes, lifetimes (which tick) left out."""
    shows = (["link", "show"], ["addr", "show"], ["route", "show", "table", "all"])
    runs = [subprocess.run(["ip", "-o", *show], capture_output=True, text=True) for show in shows]
    return [TICKING.sub("", run.stdout) for run in runs]


def leftovers(names: list[str]) -> set[str]:
    return set(names) & set(list_netns())


def running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


class TestTopology:
    def test_two_hosts_reach_each_other_over_tcp(self, netlab, tmp_path):
        """A client on one host gets an answer from a server bound to the other's address."""
        a, b = netlab.add_host("a"), netlab.add_host("b")
        start_server(b, tmp_path / "b.log")
        assert ask(netlab, a, b, REACHABLE) == "pong"

    def test_hosts_get_distinct_addresses_in_the_lab_subnet(self, netlab):
        """Each host's address is its own and lies in the lab's private /24."""
        a, b = netlab.add_host("a"), netlab.add_host("b")
        net = netlab.subnet.removesuffix("0/24")
        assert a.address != b.address
        assert a.address.startswith(net) and b.address.startswith(net)
        assert netlab.subnet.startswith("10.231.")

    def test_host_sees_only_its_loopback_and_its_cable(self, netlab):
        """Inside a host: lo and eth0 with the host's address, nothing of the root namespace."""
        a = netlab.add_host("a")
        links = netlab.run(a, ["ip", "-o", "link", "show"]).stdout
        names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
        assert names == ["eth0", "lo"]
        assert a.address in netlab.run(a, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout

    def test_root_namespace_is_left_untouched(self, tmp_path):
        """Building a lab adds no link, address or route to the root namespace."""
        before = root_network_snapshot()
        with NetLab(log_dir=tmp_path) as lab:
            lab.add_host("a")
            lab.add_host("b")
            during = root_network_snapshot()
        assert during == before

    def test_namespaces_carry_the_run_prefix(self, netlab):
        """Every namespace is named gft<pid>-<lab>-<role>, so runs and leftovers are told apart."""
        netlab.add_host("node1")
        prefix = f"gft{os.getpid()}-{netlab.number}-"
        assert netlab.namespaces == [prefix + "switch", prefix + "node1"]
        assert set(netlab.namespaces) <= set(list_netns())

    def test_bad_or_duplicate_host_name_is_refused(self, netlab):
        """A host name that cannot be a namespace suffix, or is taken, is refused by name."""
        netlab.add_host("a")
        with pytest.raises(ValueError, match="'a'"):
            netlab.add_host("a")
        with pytest.raises(ValueError, match="'A/b'"):
            netlab.add_host("A/b")
        with pytest.raises(ValueError, match="'switch'"):
            netlab.add_host("switch")


class TestProcesses:
    def test_spawned_process_runs_in_the_host_namespace_as_itself(self, netlab):
        """The Popen pid is the command itself (no wrapper left), inside the host's namespace."""
        a = netlab.add_host("a")
        proc = a.spawn(["sleep", "300"])
        expected = f"net:[{os.stat(f'/run/netns/{a.netns}').st_ino}]"
        wait_for(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") == expected, what="setns")
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_for(lambda: cmdline.read_bytes() == b"sleep\x00300\x00", what="exec")
        assert proc.pid in netlab.pids

    def test_spawn_env_is_laid_over_the_environment(self, netlab, tmp_path):
        """Extra variables reach the process and PATH is still there."""
        a = netlab.add_host("a")
        log = tmp_path / "env.log"
        code = "import os; print(os.environ['GFT_EXTRA'], 'PATH' in os.environ)"
        proc = a.spawn([sys.executable, "-c", code], env={"GFT_EXTRA": "42"}, log=log)
        assert proc.wait(timeout=10) == 0
        assert log.read_text() == "42 True\n"

    def test_kill_ends_the_server_and_connects_are_refused(self, netlab, tmp_path):
        """After kill the server is dead (SIGKILL) and its port refuses connections."""
        a, b = netlab.add_host("a"), netlab.add_host("b")
        server = start_server(b, tmp_path / "b.log")
        b.kill(server)
        assert server.wait(timeout=5) == -signal.SIGKILL
        assert ask(netlab, a, b, REACHABLE) == "refused"

    def test_kill_reaches_the_whole_process_group(self, netlab, tmp_path):
        """A child the process forked dies with it: the signal goes to the process group."""
        a = netlab.add_host("a")
        log = tmp_path / "sh.log"
        proc = a.spawn(["sh", "-c", "sleep 300 & echo $!; wait"], log=log)
        child = int(wait_for(lambda: log.read_text().strip(), what="child pid"))
        a.kill(proc)
        wait_for(lambda: not pid_running(child), what=f"child {child} to die")

    def test_freeze_stops_answers_and_thaw_restores_them(self, netlab, tmp_path):
        """A frozen server accepts nothing and answers nothing; thawed, it answers again."""
        a, b = netlab.add_host("a"), netlab.add_host("b")
        server = start_server(b, tmp_path / "b.log")
        b.freeze(server)
        assert pid_stopped(server.pid)
        assert ask(netlab, a, b, UNREACHABLE) == "timeout"
        b.thaw(server)
        assert ask(netlab, a, b, REACHABLE) == "pong"


class TestPartition:
    def test_partition_cuts_the_host_off_both_ways_and_heal_restores(self, netlab, tmp_path):
        """A cut-off host neither reaches nor is reached, the others carry on; heal undoes it."""
        hosts = [netlab.add_host(name) for name in ("a", "b", "c")]
        for host in hosts:
            start_server(host, tmp_path / f"{host.name}.log")
        a, b, c = hosts
        netlab.partition(a)
        assert ask(netlab, a, b, UNREACHABLE) == "timeout"
        assert ask(netlab, c, a, UNREACHABLE) == "timeout"
        assert ask(netlab, c, b, REACHABLE) == "pong"
        assert ask(netlab, a, a, REACHABLE) == "pong"
        netlab.heal(a)
        assert ask(netlab, a, b, REACHABLE) == "pong"
        assert ask(netlab, c, a, REACHABLE) == "pong"

    def test_host_of_another_lab_is_refused(self, netlab, tmp_path):
        """Partitioning a host of another lab is refused instead of cutting anything."""
        netlab.add_host("a")
        with NetLab(log_dir=tmp_path / "other") as other:
            foreign = other.add_host("a")
            with pytest.raises(ValueError, match="does not belong"):
                netlab.partition(foreign)


class TestTeardown:
    def test_teardown_leaves_no_namespace_and_no_tracked_process(self, tmp_path):
        """Leaving the lab deletes its namespaces and kills its processes, frozen ones too."""
        with NetLab(log_dir=tmp_path) as lab:
            a = lab.add_host("a")
            a.spawn(["sleep", "300"])
            a.freeze(a.spawn(["sleep", "300"]))
            names, pids = lab.namespaces, lab.pids
        assert leftovers(names) == set()
        assert running(pids) == []

    def test_failing_body_still_tears_down(self, tmp_path):
        """An exception inside the lab propagates, and the lab is gone all the same."""
        with pytest.raises(RuntimeError, match="body failed"):
            with NetLab(log_dir=tmp_path) as lab:
                lab.add_host("a").spawn(["sleep", "300"])
                names, pids = lab.namespaces, lab.pids
                raise RuntimeError("body failed")
        assert leftovers(names) == set()
        assert running(pids) == []

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_signal_tears_down_then_ends_the_process(self, tmp_path, signum):
        """A process holding a lab that gets SIGTERM or SIGINT removes the lab, then dies of it."""
        state_file = tmp_path / "state.json"
        holder = subprocess.Popen([sys.executable, "-c", LAB_IN_CHILD, str(HERE), str(state_file)])
        try:
            state = json.loads(wait_for(lambda: state_file.exists() and state_file.read_text()))
            holder.send_signal(signum)
            assert holder.wait(timeout=10) == -signum
        finally:
            holder.kill()
            holder.wait()
        assert leftovers(state["namespaces"]) == set()
        assert [pid for pid in state["pids"] if pid_running(pid)] == []

    def test_startup_sweeps_leftovers_of_dead_runs(self, tmp_path):
        """A namespace left by a dead run is deleted, and whatever ran in it is killed."""
        corpse = subprocess.Popen(["true"])
        corpse.wait()
        leftover = f"gft{corpse.pid}-1-switch"
        subprocess.run(["ip", "netns", "add", leftover], check=True)
        orphan = subprocess.Popen(["nsenter", f"--net=/run/netns/{leftover}", "sleep", "300"])
        try:
            wait_for(lambda: Path(f"/proc/{orphan.pid}/cmdline").read_bytes().startswith(b"sleep"))
            with NetLab(log_dir=tmp_path):
                assert leftover not in list_netns()
            assert orphan.wait(timeout=5) == -signal.SIGKILL
        finally:
            orphan.kill()
            orphan.wait()
            delete_netns(leftover)

    def test_startup_spares_namespaces_of_live_runs(self, tmp_path):
        """A namespace whose creating pid still lives belongs to a run in progress and stays."""
        alive = subprocess.Popen(["sleep", "300"])
        other_run = f"gft{alive.pid}-1-switch"
        subprocess.run(["ip", "netns", "add", other_run], check=True)
        try:
            with NetLab(log_dir=tmp_path):
                assert other_run in list_netns()
        finally:
            delete_netns(other_run)
            alive.kill()
            alive.wait()


def test_wait_for_names_what_it_waited_for():
    """A predicate that never holds ends in TimeoutError naming the awaited thing."""
    with pytest.raises(TimeoutError, match="the moon"):
        wait_for(lambda: False, timeout=0.05, what="the moon")
