"""Several "hosts" on one machine: network namespaces joined by a bridge, for cluster tests.

A ``NetLab`` builds, with iproute2 only, a private Ethernet segment out of network namespaces
and starts real processes on it, so agents and a controller can talk over real TCP between
real addresses, and the test can kill, freeze, cut off and reconnect any of them::

                       netns gft<pid>-<n>-switch
      +-------------------------------------------------------+
      |                      br0 (bridge, no STP)             |
      |          p1               p2               p3   ...   |
      +----------+----------------+----------------+----------+
            veth |           veth |           veth |
      +----------+-----+ +--------+-------+ +------+---------+
      | eth0 10.231.X.1| | eth0 10.231.X.2| | eth0 10.231.X.3|
      | lo             | | lo             | | lo             |
      | gft<pid>-<n>-a | | gft<pid>-<n>-b | | gft<pid>-<n>-c |
      +----------------+ +----------------+ +----------------+

Every link is created inside the switch namespace with its peer placed straight into the host
namespace (``ip -n SWITCH link add pN type veth peer name eth0 netns HOST``), so the root
namespace's interfaces, routes and addresses are never touched and no interface name ever
carries the run prefix (IFNAMSIZ is 15). Nothing is routed to or from the root namespace: the
lab's addresses are reachable only from inside the lab.

Names. Each namespace is ``gft<pid>-<n>-<role>``: the creating pid and a per-process lab
number, so parallel runs and leftovers are told apart at a glance, and a new lab deletes the
leftovers of runs whose pid is dead (a SIGKILLed pytest cannot clean up after itself). Each lab
also gets its own /24, ``10.231.X.0/24`` with X derived from pid and lab number; the labs are
isolated from each other anyway (separate bridges), so the distinct subnet only keeps logs and
packet captures unambiguous.

Partition. ``partition(host)`` sets the host's bridge port to the *disabled* state
(``bridge link set dev pN state 0``); ``heal`` sets it back to *forwarding*. That is the
cleanest cut available: the bridge silently drops every frame to and from that port, in both
directions, while nothing changes inside any host: carrier stays up, addresses, routes and
neighbour entries stay put, sockets see only silence (connects time out, established TCP
connections stall and retransmit, nothing is reset; a peer whose ARP entry has expired gets
EHOSTUNREACH once ARP gives up, as on a real segment). Setting the host's eth0 down instead
removes its routes, so its own sends fail at once with ENETUNREACH, which no network fault
does; setting the switch-side end down drops the host's carrier and flushes its neighbour
table. Both change the host rather than the network. Heal is one netlink call; with STP off
the port forwards again at once, with no listening/learning delay.

Processes. ``host.spawn`` runs ``nsenter --net=/run/netns/NS -- argv``: nsenter joins the
network namespace and execs the command in place (no fork, no mount namespace, unlike
``ip netns exec``), so the Popen pid is the command itself and the cost is one extra exec.
Each process starts in its own session, so signals go to its whole process group.

Teardown always happens: on leaving the ``with`` block (exception or not, KeyboardInterrupt
included), on SIGTERM (a handler tears down every open lab, then lets the signal kill the
process as it would have), and at interpreter exit as a backstop. It thaws and kills every
tracked process group, kills whatever else still lives in the lab's namespaces, and deletes the
namespaces by name.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "gft"
LEFTOVER_RE = re.compile(rf"^{NAME_PREFIX}(\d+)-")
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SWITCH_ROLE = "switch"
BRIDGE = "br0"
HOST_IFACE = "eth0"
PORT_DISABLED = "0"
PORT_FORWARDING = "3"
MAX_HOSTS = 254
REAP_TIMEOUT = 5.0
TOOLS = ("ip", "bridge", "nsenter")

_lab_numbers = itertools.count(1)
_open_labs: list["NetLab"] = []


@dataclass
class _SigtermHook:
    """Whether our SIGTERM handler is installed, and the handler it replaced."""

    installed: bool = False
    previous: object = None


_sigterm = _SigtermHook()


class NetLabError(Exception):
    """A lab could not be built, changed or torn down; the message names the failing command."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail at a deadline.

    Tests wait on state in other processes and namespaces, which offers no event to await, so
    they poll; the deadline turns a hang into a clear failure naming what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(f"gave up after {timeout}s waiting for {name}")
        time.sleep(interval)  # poll


def netns_unavailable_reason() -> str | None:
    """Why this machine cannot run a lab (not root, tools missing, kernel refuses), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (iproute2, util-linux)"
    probe = f"{NAME_PREFIX}{os.getpid()}-0-probe"
    try:
        _command(["ip", "netns", "add", probe])
    except NetLabError as exc:
        return f"kernel refused a network namespace: {exc}"
    try:
        _command(["ip", "-n", probe, "link", "add", BRIDGE, "type", "bridge"])
        _command(["ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
    except NetLabError as exc:
        return f"kernel refused a bridge or veth pair: {exc}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _command(argv: Sequence[str]) -> str:
    """Run an iproute2 command; its stdout, or NetLabError naming the command and its stderr."""
    done = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise NetLabError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def list_netns() -> list[str]:
    """Names of every named network namespace (``ip netns list``, ids stripped)."""
    return [line.split()[0] for line in _command(["ip", "netns", "list"]).splitlines() if line]


def netns_pids(netns: str) -> list[int]:
    """Pids of every process living in ``netns``."""
    return [int(pid) for pid in _command(["ip", "netns", "pids", netns]).split()]


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie runs nothing and holds nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return _stat_state(stat) != "Z"


def pid_stopped(pid: int) -> bool:
    """True while ``pid`` is stopped by a signal (state T)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return _stat_state(stat) in ("T", "t")


def _stat_state(stat: str) -> str:
    """The state letter of a /proc/PID/stat line (the command may contain spaces and parens)."""
    return stat.rsplit(")", 1)[1].split()[0]


def _creator_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_everything_in(netns: str) -> None:
    """SIGKILL every process of ``netns``, frozen ones included (SIGKILL ends a stopped process)."""
    for pid in netns_pids(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_netns(netns: str) -> None:
    """Kill what lives in ``netns`` and delete it; a namespace already gone is fine."""
    if netns not in list_netns():
        return
    _kill_everything_in(netns)
    _command(["ip", "netns", "delete", netns])


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of earlier runs whose creating pid is dead; return their names.

    Only names matching ``gft<pid>-`` are considered, and a live pid's namespaces are spared:
    they belong to a run in progress.
    """
    swept = []
    for netns in list_netns():
        match = LEFTOVER_RE.match(netns)
        if match and not _creator_alive(int(match.group(1))):
            delete_netns(netns)
            swept.append(netns)
    return swept


def _lab_octet(pid: int, number: int) -> int:
    """The X of 10.231.X.0/24: spread over 1..254 by pid and lab number."""
    return 1 + (pid * 31 + number) % 254


class ProcessTable:
    """Every process a lab started, so teardown can thaw and kill each one's process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> None:
        self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def kill_all(self) -> list[str]:
        """Thaw, SIGKILL and reap every tracked process group; return what went wrong."""
        errors = []
        for proc in self._procs:
            signal_group(proc, signal.SIGCONT)
            signal_group(proc, signal.SIGKILL)
        for proc in self._procs:
            try:
                proc.wait(timeout=REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                errors.append(f"pid {proc.pid} did not die within {REAP_TIMEOUT}s of SIGKILL")
        return errors


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group led by ``proc``; a reaped or vanished group is skipped.

    Once Popen has reaped the leader its pid may be reused, so a reaped process is never
    signalled; until then the (possibly zombie) leader pins the group id.
    """
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@dataclass(frozen=True, eq=False)
class Host:
    """One namespace on the lab's bridge: where processes run as if on their own machine."""

    name: str
    netns: str
    address: str
    switch_port: str
    _table: ProcessTable = field(repr=False)
    _log_dir: Path = field(repr=False)
    _log_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's network namespace."""
        _check_argv(argv)
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv]

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        log: str | os.PathLike | None = None,
    ) -> subprocess.Popen:
        """Start ``argv`` on this host, tracked for teardown, stdout and stderr to ``log``.

        ``env`` is laid over this process's environment (so PATH and the venv stay usable).
        Without ``log`` the output goes to ``<log_dir>/<host>-<n>.log``.
        """
        with open(self._log_path(log), "ab") as out:
            proc = subprocess.Popen(
                self.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_merged_env(env),
                start_new_session=True,
            )
        self._table.add(proc)
        return proc

    def _log_path(self, log: str | os.PathLike | None) -> Path:
        if log is not None:
            return Path(log)
        return self._log_dir / f"{self.name}-{next(self._log_numbers)}.log"

    def run(
        self, argv: Sequence[str], timeout: float = 10.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host to completion, output captured as text."""
        return subprocess.run(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_merged_env(env),
        )

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``proc``'s process group (the process and whatever it forked)."""
        signal_group(proc, sig)

    def freeze(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        """SIGSTOP ``proc``'s group and return once the process is really stopped.

        SIGSTOP takes effect when the target is next scheduled; waiting for state T means a
        caller that probes right after ``freeze`` sees a frozen process, not a race.
        """
        signal_group(proc, signal.SIGSTOP)
        wait_for(lambda: pid_stopped(proc.pid), timeout, what=f"pid {proc.pid} to stop")

    def thaw(self, proc: subprocess.Popen) -> None:
        """SIGCONT ``proc``'s group (the kernel resumes stopped tasks as the signal is sent)."""
        signal_group(proc, signal.SIGCONT)


def _check_argv(argv: Sequence[str]) -> None:
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError(f"argv must be a non-empty list of strings, got {argv!r}")


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


class NetLab:
    """A switch namespace with a bridge, and hosts attached to it; torn down on every exit path.

    Use as a context manager::

        with NetLab(log_dir=tmp_path) as lab:
            a, b = lab.add_host("a"), lab.add_host("b")
            server = b.spawn(["python3", "-m", "http.server", "--bind", b.address, "8000"])
            lab.partition(b)
            lab.heal(b)
    """

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        self.number = next(_lab_numbers)
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{self.number}-"
        self.subnet = f"10.231.{_lab_octet(os.getpid(), self.number)}.0/24"
        self.switch = self.prefix + SWITCH_ROLE
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=self.prefix))
        self._table = ProcessTable()
        self._hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._closed = False

    def __enter__(self) -> "NetLab":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _register(self)
        try:
            sweep_leftovers()
            self._create_switch()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab created and has not yet deleted, the switch first."""
        return list(self._namespaces)

    @property
    def pids(self) -> list[int]:
        """Every pid ``spawn`` started in this lab, alive or not."""
        return self._table.pids

    def add_host(self, name: str) -> Host:
        """Create namespace ``name`` with lo up and eth0 cabled to the bridge, and return it."""
        self._check_new_host(name)
        index = len(self._hosts) + 1
        host = Host(
            name=name,
            netns=self.prefix + name,
            address=str(ipaddress.ip_network(self.subnet)[index]),
            switch_port=f"p{index}",
            _table=self._table,
            _log_dir=self.log_dir,
        )
        self._add_netns(host.netns)
        self._cable(host)
        self._hosts[name] = host
        return host

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """A one-shot command on ``host``, output captured as text (see ``Host.run``)."""
        return self._own(host).run(argv, timeout=timeout, env=env)

    def partition(self, host: Host) -> None:
        """Cut ``host`` off from every other host: its bridge port drops all frames both ways."""
        self._set_port_state(self._own(host), PORT_DISABLED)

    def heal(self, host: Host) -> None:
        """Reconnect a partitioned ``host``: its bridge port forwards again, at once."""
        self._set_port_state(self._own(host), PORT_FORWARDING)

    def close(self) -> None:
        """Kill every tracked process group, then delete the namespaces; safe to call twice.

        Every step runs even when an earlier one fails; the failures are raised together at
        the end, so a half-broken lab still loses everything it can.
        """
        if self._closed:
            return
        errors = self._table.kill_all()
        for netns in reversed(list(self._namespaces)):
            try:
                delete_netns(netns)
                self._namespaces.remove(netns)
            except NetLabError as exc:
                errors.append(str(exc))
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self._closed = True
        _unregister(self)
        if errors:
            raise NetLabError("teardown incomplete: " + "; ".join(errors))

    def _create_switch(self) -> None:
        self._add_netns(self.switch)
        sw = ["ip", "-n", self.switch]
        bridge = ["type", "bridge", "stp_state", "0", "forward_delay", "0"]
        _command([*sw, "link", "add", BRIDGE, *bridge])
        _command([*sw, "link", "set", BRIDGE, "up"])

    def _cable(self, host: Host) -> None:
        """One veth pair: ``pN`` on the bridge in the switch namespace, ``eth0`` in the host."""
        sw = ["ip", "-n", self.switch]
        on_host = ["ip", "-n", host.netns]
        veth = ["type", "veth", "peer", "name", HOST_IFACE, "netns", host.netns]
        _command([*sw, "link", "add", host.switch_port, *veth])
        _command([*sw, "link", "set", host.switch_port, "master", BRIDGE, "up"])
        _command([*on_host, "link", "set", "lo", "up"])
        _command([*on_host, "addr", "add", f"{host.address}/24", "dev", HOST_IFACE])
        _command([*on_host, "link", "set", HOST_IFACE, "up"])

    def _add_netns(self, netns: str) -> None:
        _command(["ip", "netns", "add", netns])
        self._namespaces.append(netns)

    def _set_port_state(self, host: Host, state: str) -> None:
        port = ["dev", host.switch_port, "state", state]
        _command(["bridge", "-netns", self.switch, "link", "set", *port])

    def _check_new_host(self, name: str) -> None:
        if self._closed:
            raise NetLabError("lab is closed")
        if not isinstance(name, str) or not HOST_NAME_RE.match(name) or name == SWITCH_ROLE:
            raise ValueError(
                f"host name must match {HOST_NAME_RE.pattern} and not be {SWITCH_ROLE!r}: {name!r}"
            )
        if name in self._hosts:
            raise ValueError(f"host name already used in this lab: {name!r}")
        if len(self._hosts) >= MAX_HOSTS:
            raise NetLabError(f"a lab holds at most {MAX_HOSTS} hosts")

    def _own(self, host: Host) -> Host:
        if self._hosts.get(host.name) is not host:
            raise ValueError(f"host {host.name!r} does not belong to lab {self.prefix!r}")
        return host


def _register(lab: NetLab) -> None:
    """Track an open lab; the first one installs the SIGTERM teardown (main thread only)."""
    if not _sigterm.installed and _in_main_thread():
        _sigterm.previous = signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm.installed = True
    _open_labs.append(lab)


def _unregister(lab: NetLab) -> None:
    """Forget a closed lab; the last one puts the previous SIGTERM handler back."""
    if lab in _open_labs:
        _open_labs.remove(lab)
    if not _open_labs and _sigterm.installed and _in_main_thread():
        signal.signal(signal.SIGTERM, _restorable(_sigterm.previous))
        _sigterm.installed = False


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restorable(handler: object) -> object:
    """``signal.signal`` reports a handler set outside Python as None; treat it as the default."""
    return signal.SIG_DFL if handler is None else handler


def close_open_labs() -> None:
    """Tear down every lab still open in this process, reporting (not raising) failures."""
    for lab in list(_open_labs):
        try:
            lab.close()
        except Exception as exc:
            print(f"netlab: {exc}", file=sys.stderr)


def _on_sigterm(signum: int, frame: object) -> None:
    """Tear down, then let SIGTERM do what it would have done without us."""
    previous = _restorable(_sigterm.previous)
    close_open_labs()
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, previous)
    os.kill(os.getpid(), signum)


atexit.register(close_open_labs)
