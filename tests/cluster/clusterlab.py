"""A gaffer cluster of real daemons on a NetLab, and the means to judge it from outside.

``ClusterLab`` puts ``gaffer-controller`` on one host and a ``gaffer-agent`` on each other
host of a ``NetLab`` (each its own network namespace), with liveness fast enough for tests.
The fault properties of DESIGN.md are about what actually ran, so the lab answers two
questions separately and tests compare them:

- what the controller says: requests go through a small client process living in the
  controller's namespace (the lab's addresses are unreachable from the root namespace, which
  tests must not touch), driven over a pipe; it also records every published event;
- what really runs: ``processes()`` scans /proc for session leaders that carry
  GAFFER_TEMPLATE / GAFFER_INSTANCE and live in one of the lab's namespaces; the namespace
  names the host, whatever the process or the controller claims.

``SharedCluster`` keeps one cluster per test module and resets it between tests (every
daemon running, links healed, nodes uncordoned, no templates, no instance process left), so a
module pays for the daemons' start-up once; a cluster that cannot be reset is rebuilt.
Run as a script (``clusterlab.py client ENDPOINT PUB [KEY CONTROLLER_KEY]``) this module is
that client process.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from gaffer.common import keys as keyfiles
from gaffer.common.errors import ControllerUnreachable, GafferError, from_wire
from netlab import NETNS_DIR, Host, NetLab, netns_pids, wait_for

BIN = Path(sys.executable).parent
PORT = 6001
POLL = 0.05
CALL_TIMEOUT = 10.0
POLL_CALL_TIMEOUT = 5.0
"""Requests made while polling: a controller that is restarting is "not yet", not an error."""
REAP = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Timing:
    """Liveness settings given to the daemons, and the bounds the tests derive from them."""

    heartbeat: float = 0.2
    suspect_misses: int = 3
    down_misses: int = 5
    node_grace: float = 0.5
    startup_grace: float = 2.0

    @property
    def down_after(self) -> float:
        return self.heartbeat * self.down_misses

    @property
    def move_after(self) -> float:
        """Silence after which a node's instances may be placed elsewhere."""
        return self.down_after + self.node_grace

    def controller_options(self) -> list[str]:
        return [
            "--heartbeat", str(self.heartbeat), "--suspect-misses", str(self.suspect_misses),
            "--down-misses", str(self.down_misses), "--node-grace", str(self.node_grace),
            "--startup-grace", str(self.startup_grace),
        ]


@dataclass(frozen=True)
class Start:
    """One line of the start journal: a process that began running ``id`` on ``node``."""

    node: str
    id: str
    pid: int


@dataclass(frozen=True)
class Proc:
    """One instance process found in /proc: where it really runs and what it says it is."""

    pid: int
    host: str
    env_node: str
    template: str
    ordinal: str
    started: float
    """When it started, wall clock (to the kernel's 10 ms tick)."""

    @property
    def id(self) -> str:
        return f"{self.template}.{self.ordinal}"


class Daemon:
    """One daemon on one host: started, signalled and restarted with the same command line."""

    def __init__(self, host: Host, argv: Sequence[str], log: Path) -> None:
        self.host = host
        self.argv = list(argv)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.frozen = False

    def start(self) -> None:
        self.proc = self.host.spawn(self.argv, log=self.log)
        self.frozen = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon's process group and wait until the daemon is gone."""
        if not self.running:
            return
        assert self.proc is not None
        if self.frozen:
            self.thaw()
        self.host.kill(self.proc, sig)
        self.proc.wait(REAP)

    def freeze(self) -> None:
        assert self.proc is not None
        self.host.freeze(self.proc)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        self.host.thaw(self.proc)
        self.frozen = False


@dataclass
class AgentNode:
    name: str
    host: Host
    labels: dict[str, str]
    state_dir: Path
    daemon: Daemon
    partitioned: bool = False


@dataclass(frozen=True)
class Keys:
    """CURVE key files made for a secure lab (controller key dir, one secret per peer)."""

    directory: Path
    agent_secrets: Path
    client_secrets: Path

    @property
    def controller_public(self) -> Path:
        return self.directory / "controller.key"


def make_keys(
    root: Path, agents: Sequence[str], extra_agents: Sequence[str] = (), extra_clients: Sequence[str] = ()
) -> Keys:
    """Controller keys authorizing ``agents`` and one client (``admin``); ``extra_agents``
    and ``extra_clients`` get key pairs that are *not* authorized."""
    made = Keys(root / "controller", root / "agent-secrets", root / "client-secrets")
    keyfiles.generate(made.directory, "controller")
    for name in (*agents, *extra_agents):
        keyfiles.generate(made.agent_secrets, name)
    for name in ("admin", *extra_clients):
        keyfiles.generate(made.client_secrets, name)
    (made.directory / "agents").mkdir()
    (made.directory / "clients").mkdir()
    for name in agents:
        shutil.copy(made.agent_secrets / f"{name}.key", made.directory / "agents" / f"{name}.key")
    shutil.copy(made.client_secrets / "admin.key", made.directory / "clients" / "admin.key")
    return made


class ControllerClient:
    """A gaffer client in the controller's namespace, driven over a pipe (see the module doc).

    Replies are read by a thread into a queue, so a call waits with a deadline and a dead or
    stuck client process is a clear failure, not a hang.
    """

    def __init__(self, host: Host, endpoint: str, pub: str | None, log: Path, credentials: Sequence[Path] = ()) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "client", endpoint, pub or "-", *map(str, credentials)]
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                host.command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
            )
        self._ids = itertools.count(1)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        """``op`` at the controller; its result, or the GafferError it reported, raised here."""
        with self._lock:
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, "op": op, "args": args, "timeout": timeout})
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout + 5.0
            while True:
                try:
                    reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ControllerUnreachable(f"client process gave no answer to {op}") from None
                if reply is None:
                    raise ControllerUnreachable(f"client process exited ({self.proc.poll()})")
                if reply["id"] == request_id:
                    break
        if not reply["ok"]:
            raise from_wire(reply["error"])
        return reply["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(REAP)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class ClusterLab:
    """A controller host (``ctl``) and one agent host per entry of ``agents`` (name -> labels)."""

    def __init__(
        self,
        lab: NetLab,
        root: Path,
        agents: Mapping[str, Mapping[str, str]],
        timing: Timing = Timing(),
        keys: Keys | None = None,
    ) -> None:
        self.lab = lab
        self.root = root
        self.timing = timing
        self.keys = keys
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.controller_host = lab.add_host("ctl")
        self.endpoint = f"tcp://{self.controller_host.address}:{PORT}"
        self.pub = f"tcp://{self.controller_host.address}:{PORT + 1}"
        self.data_dir = root / "controller-data"
        security = ["--keys", str(keys.directory)] if keys else ["--insecure"]
        self.controller = Daemon(self.controller_host, [
            str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--pub", self.pub,
            "--data-dir", str(self.data_dir), *timing.controller_options(), *security,
        ], self.logs / "controller.log")
        self.journal = root / "starts.journal"
        self.journal.touch()
        self.agents: dict[str, AgentNode] = {}
        self._namespaces: dict[int, str] = {}
        for name, labels in agents.items():
            self.add_agent(name, labels)
        self.client: ControllerClient | None = None
        self._events: list[dict[str, Any]] = []

    def add_agent(self, name: str, labels: Mapping[str, str] | None = None, key: str | None = None) -> AgentNode:
        """An agent (not started) on a new host named ``name``; ``key`` names its secret key
        in the lab's agent key folder (secure labs)."""
        host = self.lab.add_host(name)
        state_dir = self.root / "agents" / name
        node = AgentNode(name, host, dict(labels or {}), state_dir, self._agent_daemon(host, name, state_dir, labels, key))
        self.agents[name] = node
        self._namespaces[os.stat(NETNS_DIR / host.netns).st_ino] = name
        return node

    def stray_agent(self, host_name: str, node: str) -> Daemon:
        """An agent (not started, not part of the cluster) on a new host, claiming ``node``."""
        host = self.lab.add_host(host_name)
        return self._agent_daemon(host, node, self.root / "agents" / host_name, None, None, log=host_name)

    def _agent_daemon(
        self, host: Host, name: str, state_dir: Path, labels: Mapping[str, str] | None,
        key: str | None, log: str | None = None,
    ) -> Daemon:
        argv = [
            str(BIN / "gaffer-agent"), "--controller", self.endpoint, "--name", name,
            "--state-dir", str(state_dir),
        ]
        for key_name, value in (labels or {}).items():
            argv += ["--label", f"{key_name}={value}"]
        if self.keys is not None and key is not None:
            argv += [
                "--key", str(self.keys.agent_secrets / f"{key}.key_secret"),
                "--controller-key", str(self.keys.controller_public),
            ]
        else:
            argv += ["--insecure"]
        return Daemon(host, argv, self.logs / f"agent-{log or name}.log")

    # ----------------------------------------------------------------- daemons

    def start(self, wait: bool = True) -> None:
        """Start the controller, the client and every agent; return once all nodes are up
        (unless not ``wait``)."""
        self.controller.start()
        credentials: list[Path] = []
        if self.keys is not None:
            credentials = [self.keys.client_secrets / "admin.key_secret", self.keys.controller_public]
        self.client = ControllerClient(
            self.controller_host, self.endpoint, self.pub, self.logs / "client.log", credentials
        )
        for node in self.agents.values():
            node.daemon.start()
        if wait:
            self.wait_nodes({name: "up" for name in self.agents}, timeout=30)

    def client_as(self, name: str) -> ControllerClient:
        """Another client (no events) in the controller's namespace, with client key ``name``
        of a secure lab; the caller closes it."""
        assert self.keys is not None, "only a secure lab has client keys"
        credentials = [self.keys.client_secrets / f"{name}.key_secret", self.keys.controller_public]
        return ControllerClient(self.controller_host, self.endpoint, None, self.logs / f"client-{name}.log", credentials)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def restart_controller(self) -> float:
        """SIGKILL the controller and start it again on the same data dir; the kill's time."""
        self.controller.kill()
        killed = time.time()
        self.controller.start()
        return killed

    def kill_agent(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal the agent daemon only (its processes live on); return when it is gone."""
        self.agents[name].daemon.kill(sig)
        return time.time()

    def start_agent(self, name: str) -> None:
        self.agents[name].daemon.start()

    def lose_host(self, name: str) -> float:
        """The host dies: every process in its namespace (agent, fd keeper, instances) gets
        SIGKILL at once. Returns the time of the kill."""
        node = self.agents[name]
        if node.daemon.frozen:
            node.daemon.thaw()
        killed = time.time()
        for pid in netns_pids(node.host.netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.daemon.proc is not None:
            node.daemon.proc.wait(REAP)
        wait_for(lambda: not netns_pids(node.host.netns), REAP, POLL, what=f"{name} to be empty")
        return killed

    def freeze(self, name: str) -> float:
        self.agents[name].daemon.freeze()
        return time.time()

    def thaw(self, name: str) -> None:
        self.agents[name].daemon.thaw()

    def partition(self, name: str) -> float:
        node = self.agents[name]
        self.lab.partition(node.host)
        node.partitioned = True
        return time.time()

    def heal(self, name: str) -> None:
        node = self.agents[name]
        self.lab.heal(node.host)
        node.partitioned = False

    # ----------------------------------------------------------------- the controller's view

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        assert self.client is not None, "cluster not started"
        return self.client.call(op, timeout=timeout, **args)

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {node["name"]: node for node in self.call("nodes")}

    def ps(self, template: str | None = None, timeout: float = CALL_TIMEOUT) -> list[dict[str, Any]]:
        return self.call("ps", timeout=timeout, **({"name": template} if template else {}))

    def apply(self, *templates: dict[str, Any]) -> list[dict[str, Any]]:
        return self.call("apply", templates=list(templates))

    def events(self, start: int = 0) -> list[dict[str, Any]]:
        """Every event the client has seen, from index ``start`` (``len(events())`` is a mark)."""
        fresh = self.call("_events", start=len(self._events))
        self._events.extend(fresh)
        return self._events[start:]

    def event_mark(self) -> int:
        return len(self.events())

    def wait_nodes(self, states: Mapping[str, str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """Poll ``nodes`` until each named node is in the given state."""

        def reached() -> dict[str, dict[str, Any]] | None:
            try:
                nodes = {node["name"]: node for node in self.call("nodes", timeout=POLL_CALL_TIMEOUT)}
            except ControllerUnreachable:
                return None
            ok = all(nodes.get(name, {}).get("state") == state for name, state in states.items())
            return nodes if ok else None

        return wait_for(reached, timeout, POLL, what=f"nodes {dict(states)}")

    # ----------------------------------------------------------------- what really runs

    def processes(self, template: str | None = None) -> list[Proc]:
        """Instance processes alive in the agents' namespaces (``template``'s only, if given)."""
        found = []
        since_boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        for pid in _pids():
            proc = _examine(pid, self._namespaces, since_boot)
            if proc is not None and (template is None or proc.template == template):
                assert proc.env_node == proc.host, f"{proc} runs on {proc.host} but says {proc.env_node}"
                found.append(proc)
        return found

    def by_id(self, template: str | None = None) -> dict[str, list[Proc]]:
        grouped: dict[str, list[Proc]] = {}
        for proc in self.processes(template):
            grouped.setdefault(proc.id, []).append(proc)
        return grouped

    def agree(self, template: str) -> dict[str, Proc] | None:
        """What runs of ``template``, by id, when /proc and the controller agree on it: each
        id runs exactly once and ``ps`` names the same node and pid for each, in state
        running, with no stale copy. Rows of a down node (state ``unknown``: the controller
        cannot know) are left out. None while they disagree."""
        grouped = self.by_id(template)
        if any(len(procs) != 1 for procs in grouped.values()):
            return None
        actual = {ident: procs[0] for ident, procs in grouped.items()}
        try:
            rows = self.ps(template, timeout=POLL_CALL_TIMEOUT)
        except ControllerUnreachable:
            return None
        known = [row for row in rows if row["state"] != "unknown"]
        if any(row["stale"] for row in known):
            return None
        seen = {row["id"]: (row["node"], row["pid"], row["state"]) for row in known if row["pid"]}
        if seen != {ident: (p.host, p.pid, "running") for ident, p in actual.items()}:
            return None
        return actual

    def describe(self, template: str) -> str:
        """What /proc and ps show of ``template``, for failure messages."""
        lines = [f"/proc: {ident} on {[(p.host, p.pid) for p in procs]}" for ident, procs in sorted(self.by_id(template).items())]
        try:
            rows = self.ps(template, timeout=POLL_CALL_TIMEOUT)
        except GafferError as exc:
            rows = []
            lines.append(f"ps: {exc.message}")
        lines += [
            f"ps: {row['id']} on {row['node']} pid {row['pid']} {row['state']}{' stale' if row['stale'] else ''}"
            for row in rows
        ]
        return "\n".join(lines)

    def settled(self, template: str, count: int) -> dict[str, Proc] | None:
        """``template.1..count`` each run exactly once, and the controller agrees (``agree``)."""
        wanted = {f"{template}.{n}" for n in range(1, count + 1)}
        if set(self.by_id(template)) != wanted:
            return None
        actual = self.agree(template)
        return actual if actual is not None and set(actual) == wanted else None

    def wait_settled(self, template: str, count: int, timeout: float = 20.0) -> dict[str, Proc]:
        try:
            return wait_for(lambda: self.settled(template, count), timeout, POLL)
        except TimeoutError:
            raise AssertionError(
                f"{template}.1..{count} did not settle (each running once, ps agreeing) within "
                f"{timeout}s:\n{self.describe(template)}"
            ) from None

    def spec(self, name: str, count: int, **fields: Any) -> dict[str, Any]:
        """A long-running template whose every process first appends ``NODE ID PID`` to the
        start journal: a record of each start that no sampling of /proc can miss, however
        briefly the process lived. (The agent expands ``$GAFFER_*`` and turns ``$$$$`` into
        the shell's ``$$``; ``exec`` keeps that pid for the sleep.)"""
        line = f'echo "$GAFFER_NODE $GAFFER_TEMPLATE.$GAFFER_INSTANCE $$$$" >> "{self.journal}"; exec sleep 600'
        return {"name": name, "cmd": "sh", "args": ["-c", line], "numprocesses": count, "startsecs": 0, **fields}

    def journal_mark(self) -> int:
        return self.journal.stat().st_size

    def starts(self, since: int = 0, template: str | None = None) -> list[Start]:
        """Every process start journaled after ``since`` (a ``journal_mark``), oldest first."""
        with open(self.journal, "rb") as journal:
            journal.seek(since)
            lines = journal.read().decode().splitlines()
        found = []
        for line in lines:
            node, ident, pid = line.split()
            if template is None or ident.rpartition(".")[0] == template:
                found.append(Start(node, ident, int(pid)))
        return found

    # ----------------------------------------------------------------- reset

    def reset(self, timeout: float = 20.0) -> None:
        """Back to: every daemon running and every node up, uncordoned, with no templates, no
        instance process anywhere and an empty start journal."""
        for name, node in self.agents.items():
            if node.partitioned:
                self.heal(name)
            if node.daemon.frozen:
                node.daemon.thaw()
        if not self.controller.running:
            self.controller.start()
        for node in self.agents.values():
            if not node.daemon.running:
                node.daemon.start()
        self.wait_nodes({name: "up" for name in self.agents}, timeout)
        for template in self.call("templates"):
            self.call("delete", name=template["name"])
        for name in self.agents:
            self.call("uncordon", node=name)
        wait_for(lambda: not self.processes(), timeout, POLL, what="every instance process to end")
        wait_for(lambda: not self.ps(), timeout, POLL, what="an empty ps")
        self.journal.write_bytes(b"")

    def log_marks(self) -> dict[Path, int]:
        files = list(self.logs.glob("*.log")) + list((self.root / "agents").glob("*/keeper.log"))
        return {path: path.stat().st_size for path in files}

    def save_logs(self, marks: Mapping[Path, int], dest: Path) -> None:
        """Copy what each daemon logged since ``marks`` into ``dest`` (the test's own logs)."""
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.log_marks():
            with open(path, "rb") as src:
                src.seek(marks.get(path, 0))
                data = src.read()
            name = path.name if path.parent == self.logs else f"{path.parent.name}-{path.name}"
            (dest / name).write_bytes(data)


def _pids() -> Iterator[int]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def _examine(pid: int, namespaces: Mapping[int, str], since_boot: float) -> Proc | None:
    """The instance process ``pid`` if it is one, alive, in one of ``namespaces``."""
    try:
        host = namespaces.get(os.stat(f"/proc/{pid}/ns/net").st_ino)
        if host is None or os.getsid(pid) != pid:
            return None
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    values = dict(
        item.split("=", 1) for item in environ.decode(errors="replace").split("\0")
        if item.startswith("GAFFER_") and "=" in item
    )
    fields = stat.rsplit(")", 1)[1].split()
    if "GAFFER_TEMPLATE" not in values or "GAFFER_INSTANCE" not in values or fields[0] in ("Z", "X"):
        return None
    return Proc(
        pid=pid, host=host, env_node=values.get("GAFFER_NODE", ""), template=values["GAFFER_TEMPLATE"],
        ordinal=values["GAFFER_INSTANCE"], started=since_boot + int(fields[19]) / CLOCK_TICKS,
    )


def holds_for(seconds: float, check: Callable[[], None], interval: float = POLL) -> int:
    """Run ``check`` (which asserts) repeatedly for ``seconds``; the number of checks made.

    For properties that must hold *throughout* a period (nothing moves, pids stay), not
    just at its end.
    """
    deadline = time.monotonic() + seconds
    checks = 0
    while True:
        check()
        checks += 1
        if time.monotonic() >= deadline:
            return checks
        time.sleep(interval)  # poll


def pids(procs: Mapping[str, Proc]) -> dict[str, int]:
    return {ident: proc.pid for ident, proc in procs.items()}


def per_host(procs: Mapping[str, Proc]) -> dict[str, int]:
    """How many of ``procs`` run on each host."""
    counts: dict[str, int] = {}
    for proc in procs.values():
        counts[proc.host] = counts.get(proc.host, 0) + 1
    return counts


@dataclass
class SharedCluster:
    """One ClusterLab per test module, reset for each test and rebuilt when a reset fails."""

    root: Path
    agents: Mapping[str, Mapping[str, str]]
    timing: Timing = Timing()
    cluster: ClusterLab | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _builds: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def _build(self) -> ClusterLab:
        root = self.root / f"build{next(self._builds)}"
        lab = self._stack.enter_context(NetLab(log_dir=root / "netlab"))
        cluster = ClusterLab(lab, root, self.agents, self.timing)
        self._stack.callback(cluster.close)
        cluster.start()
        return cluster

    @contextlib.contextmanager
    def for_test(self, tmp_path: Path) -> Iterator[ClusterLab]:
        """A clean cluster for one test; the daemons' logs of the test go to tmp_path/logs."""
        if self.cluster is not None:
            try:
                self.cluster.reset()
            except Exception as exc:
                warnings.warn(f"cluster reset failed ({exc}); rebuilding it")
                self.close()
        if self.cluster is None:
            self.cluster = self._build()
        marks = self.cluster.log_marks()
        try:
            yield self.cluster
        finally:
            self.cluster.save_logs(marks, tmp_path / "logs")

    def close(self) -> None:
        self.cluster = None
        stack, self._stack = self._stack, contextlib.ExitStack()
        stack.close()


# --------------------------------------------------------------------- the client process

def _client_main(argv: list[str]) -> None:
    import uvloop

    endpoint, pub, *credentials = argv
    uvloop.run(_client_loop(endpoint, None if pub == "-" else pub, credentials))


async def _client_loop(endpoint: str, pub: str | None, credentials: list[str]) -> None:
    import asyncio

    from gaffer.client import AsyncClient, Credentials
    from gaffer.common.keys import load_keypair, load_public

    creds = Credentials(load_keypair(credentials[0]), load_public(credentials[1])) if credentials else None
    client = AsyncClient(endpoint, creds)
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    if pub is not None:
        tasks.add(loop.create_task(_collect(client, pub, events)))
    while line := await reader.readline():
        task = loop.create_task(_answer(client, json.loads(line), events))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _collect(client: Any, pub: str, events: list[dict[str, Any]]) -> None:
    from gaffer.client import EventsLost, ReceivedEvent

    missed = 0
    async for event in client.events(("",), endpoint=pub):
        if isinstance(event, EventsLost):
            missed += event.last - event.first + 1
        elif isinstance(event, ReceivedEvent):
            events.append({
                "seq": event.seq, "topic": event.topic, "ts": event.ts, "data": event.data,
                "missed": missed,
            })
            missed = 0


async def _answer(client: Any, request: dict[str, Any], events: list[dict[str, Any]]) -> None:
    reply: dict[str, Any] = {"id": request["id"], "ok": True}
    try:
        if request["op"] == "_events":
            reply["result"] = events[request["args"]["start"]:]
        else:
            reply["result"] = await client.call(request["op"], timeout=request["timeout"], **request["args"])
    except GafferError as exc:
        reply = {"id": request["id"], "ok": False, "error": exc.to_dict()}
    except Exception as exc:
        reply = {"id": request["id"], "ok": False, "error": {"code": "error", "message": repr(exc)}}
    sys.stdout.write(json.dumps(reply, default=repr) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] != ["client"]:
        sys.exit("usage: clusterlab.py client ENDPOINT PUB|- [KEY_SECRET CONTROLLER_KEY]")
    _client_main(sys.argv[2:])
