"""circus and supervisor doing the spawn bench's work, each driven through its own control API.

This file plays two parts. ``bench/spawn.py`` imports it (project venv, stdlib only) to build
the peers' own venv, ``bench/.venv-peers``, and to run it. That venv's python then runs this
file as a script, ``peers.py circus|supervisor ...``: it starts the peer's daemon in its own
session under bench/.work, measures, prints one JSON line on stdout, and kills the daemon and
every process it spawned, by pid, also on Ctrl-C, SIGTERM or an error.

**Scale.** The clock stops when the peer itself says all N are up, without polling it:
polling distorts the result (circus answers ``list`` with a psutil call per process; 5 ms
polls stretched its 0 -> 1,000 from seconds to 40 s). circus: the N-th ``spawn`` event on its
pub/sub socket. supervisor: ``startProcessGroup(wait=True)``, whose reply means every process
of the group is RUNNING. Each count is then checked, untimed, against the status API.

**Crash.** circus reaps and respawns on its ``check_delay`` timer (5 s, its config-file
default), so each kill lands at a random moment of that period (a seeded random pause before
it; back to back, every kill would land just after a pass and measure the whole period).
supervisord sees the exit at once (the child's output pipes close) and reaps it, but respawns
on the next pass of its loop, which first waits up to 1 s for activity: about 1 s when nothing
else happens, at once when anything, a status request included, wakes it. The replacement is
seen three ways: ``proc``, a new child in /proc, which does not touch the daemon (what an
unobserved peer does); ``events``, circus's ``spawn`` event on its pub/sub; ``api``,
supervisor's ``getProcessInfo`` polled, which wakes supervisord and so shortens what it
measures.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-peers"
WORK = HERE / ".work"
# The newest releases. Both list Python 3.11 as supported and run here on 3.11.7 (circus
# 0.18.0 also starts on 3.11, but 0.19.0 is the first release that declares it).
PINS = {"circus": "0.19.0", "supervisor": "4.3.0"}
CRASH_POOL = 10
SAMPLE_TIMEOUT = 15.0
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0
CIRCUS_CHECK_DELAY = 5.0  # circus's default when read from a config file (circus/config.py)
SUPERVISOR_TICK = 1.0  # supervisord's poll timeout (supervisord.py, runforever)
SUPERVISOR_SUCCESS = 80  # supervisor.xmlrpc.Faults.SUCCESS
PR_SET_CHILD_SUBREAPER = 36


# --------------------------------------------------------------------- from the project venv


def ensure_venv(log: Callable[[str], None]) -> tuple[Path | None, str]:
    """The peers' venv python, built on first use; (None, why) if it cannot be had."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".pins"
    wanted = " ".join(f"{name}=={version}" for name, version in sorted(PINS.items()))
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python, ""
    log(f"building {VENV.relative_to(HERE.parent)} with {wanted}")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "-q", *wanted.split()],
    ]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(argv[:4])}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"{' '.join(argv[:4])} failed: {' / '.join(tail)}"
    stamp.write_text(wanted)
    return python, ""


def run(python: Path, peer: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run the driver for ``peer`` in its venv; its JSON result, or {"error": why}."""
    argv = [str(python), str(Path(__file__).resolve()), peer, *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{peer} driver gave no result within {timeout:.0f}s"}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"{peer} driver exited {proc.returncode} without a result"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------- inside the peers' venv


def say(message: str) -> None:
    print(f"  [peers] {message}", file=sys.stderr, flush=True)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so a second one cannot leave orphans."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def poll_until(check: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.perf_counter() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout:.0f}s")
        time.sleep(interval)  # poll


class Daemon:
    """A peer daemon in its own session; ``close`` kills it and everything it spawned."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> set[int]:
        """Child pids straight from /proc: the daemon is not asked, so not woken."""
        pids: set[int] = set()
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                pids.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
        return pids

    def close(self) -> None:
        """Teardown is not measured: freeze the daemon, kill it, then kill its children.

        SIGSTOP first, so it cannot spawn a child after the list of children is taken; the
        children are held as psutil objects, which refuse to signal a pid reused since.
        """
        if self.proc is None:
            return
        import psutil

        with signals_held():
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGSTOP)
            try:
                spawned = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                spawned = []
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            for child in spawned:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            _, left = psutil.wait_procs(spawned, timeout=STOP_TIMEOUT)
            if left:
                say(f"could not kill {[p.pid for p in left]} of {Path(self.argv[0]).name}")
            self.proc = None


class Circus:
    """circusd with one watcher ``bench`` of ``sleep 3600``; circus.client and its pub/sub."""

    name = "circus"
    probes = ("proc", "events")
    reap_period = CIRCUS_CHECK_DELAY

    def __init__(self, work: Path, sleep: str, poll: float) -> None:
        self.work = work
        self.sleep = sleep
        self.poll = poll
        self.endpoint = f"ipc://{work}/ctl.sock"
        self.pub_endpoint = f"ipc://{work}/pub.sock"
        self.daemon: Daemon | None = None
        self.client: Any = None
        self.sub: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("circus")

    def start(self, numprocesses: int, running: bool) -> None:
        """circusd with ``numprocesses`` running, or with its watcher stopped at 0."""
        import zmq
        from circus.client import CircusClient

        count = numprocesses if running else 0
        ini = self.work / "circus.ini"
        ini.write_text(
            "[circus]\n"
            f"endpoint = {self.endpoint}\n"
            f"pubsub_endpoint = {self.pub_endpoint}\n"
            "statsd = false\n"
            f"check_delay = {CIRCUS_CHECK_DELAY}\n"
            "[watcher:bench]\n"
            f"cmd = {self.sleep}\n"
            "args = 3600\n"
            f"numprocesses = {count}\n"
        )
        circusd = str(Path(sys.executable).with_name("circusd"))
        self.daemon = Daemon([circusd, "--log-output", str(self.work / "circusd.log"), str(ini)],
                             self.work / "circusd.out")
        self.daemon.start()
        self.client = CircusClient(endpoint=self.endpoint, timeout=COMMAND_TIMEOUT)
        poll_until(lambda: self._ready(count), START_TIMEOUT, 0.02, "circusd ready")
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"watcher.bench.")
        self.sub.connect(self.pub_endpoint)
        self._handshake()

    def _ready(self, count: int) -> bool:
        if self.daemon is None or not self.daemon.alive():
            raise RuntimeError(f"circusd exited; see {self.work}/circusd.log")
        if not (self.work / "ctl.sock").exists():
            return False
        return len(self.pids()) >= count

    def _handshake(self) -> None:
        """Until circus's events reach us (pub/sub joins late): a harmless ``set`` each try."""
        deadline = time.perf_counter() + START_TIMEOUT
        while time.perf_counter() < deadline:
            self.call("set", name="bench", options={"warmup_delay": 0})
            if self.event("updated", time.perf_counter() + 0.1) is not None:
                self.drain()
                return
        raise TimeoutError("circus pub/sub events never arrived")

    def event(self, kind: str, deadline: float) -> dict[str, Any] | None:
        """The next ``watcher.bench.<kind>`` event before ``deadline``, or None."""
        import zmq

        topic = f"watcher.bench.{kind}".encode()
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not self.sub.poll(int(left * 1000) + 1, zmq.POLLIN):
                return None
            got, body = self.sub.recv_multipart()
            if got == topic:
                return json.loads(body)

    def drain(self) -> None:
        import zmq

        for _ in range(100_000):
            if not self.sub.poll(0, zmq.POLLIN):
                return
            self.sub.recv_multipart()

    def call(self, command: str, **props: Any) -> dict[str, Any]:
        reply = self.client.call({"command": command, "properties": props})
        if reply.get("status") != "ok":
            raise RuntimeError(f"circus {command}: {reply.get('reason', reply)}")
        return reply

    def pids(self) -> list[int]:
        return list(self.call("list", name="bench")["pids"])

    def scale(self, n: int, timeout: float) -> dict[str, float]:
        """A watcher at 0 is stopped and circus spawns nothing for it: set N, then start it."""
        deadline = time.perf_counter() + timeout
        spawned: set[int] = set()
        started = time.perf_counter()
        self.call("set", name="bench", options={"numprocesses": n})
        self.call("start", name="bench")
        answered = time.perf_counter() - started
        while len(spawned) < n:
            event = self.event("spawn", deadline)
            if event is None:
                raise TimeoutError(f"{len(spawned)} of {n} circus spawn events in {timeout:.0f}s")
            spawned.add(event["process_pid"])
        elapsed = time.perf_counter() - started
        listed = len(self.pids())
        if listed < n:
            raise RuntimeError(f"circus sent {n} spawn events but lists {listed} processes")
        return {"seconds": elapsed, "command": answered}

    def victim(self, slot: int) -> tuple[Any, int]:
        self.drain()
        pids = sorted(self.pids())
        return None, pids[slot % len(pids)]

    def wait_replaced(self, probe: str, key: Any, old: int, before: set[int]) -> None:
        deadline = time.perf_counter() + SAMPLE_TIMEOUT
        while True:
            event = self.event("spawn", deadline)
            if event is None:
                raise TimeoutError(f"no circus spawn event within {SAMPLE_TIMEOUT:.0f}s")
            if event["process_pid"] not in before:
                return

    def settled(self, key: Any, old: int) -> bool:
        pids = self.pids()
        return len(pids) >= CRASH_POOL and old not in pids

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close(0)
            self.sub = None
        if self.client is not None:
            self.client.stop()
            self.client = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


class Supervisor:
    """supervisord with one program ``bench`` of ``numprocs`` sleeps, driven over XML-RPC."""

    name = "supervisor"
    probes = ("proc", "api")
    reap_period = SUPERVISOR_TICK

    def __init__(self, work: Path, sleep: str, poll: float) -> None:
        self.work = work
        self.sleep = sleep
        self.poll = poll
        self.sock = work / "supervisor.sock"
        self.daemon: Daemon | None = None
        self.rpc: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("supervisor")

    def start(self, numprocesses: int, running: bool) -> None:
        """supervisord with a program of ``numprocesses``, started (autostart) or not."""
        (self.work / "logs").mkdir(exist_ok=True)
        conf = self.work / "supervisord.conf"
        conf.write_text(
            f"[unix_http_server]\nfile = {self.sock}\n"
            "[supervisord]\n"
            f"logfile = {self.work}/supervisord.log\n"
            f"pidfile = {self.work}/supervisord.pid\n"
            f"childlogdir = {self.work}/logs\n"
            "nodaemon = true\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            "[program:bench]\n"
            f"command = {self.sleep} 3600\n"
            "process_name = %(program_name)s_%(process_num)d\n"
            f"numprocs = {numprocesses}\n"
            f"autostart = {'true' if running else 'false'}\n"
            "autorestart = true\n"
            "startsecs = 0\n"
        )
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        self.daemon = Daemon([supervisord, "-c", str(conf)], self.work / "supervisord.out")
        self.daemon.start()
        want = numprocesses if running else 0
        poll_until(lambda: self._ready(want), START_TIMEOUT, 0.02, "supervisord ready")

    def _ready(self, running: int) -> bool:
        """A new proxy per try: the transport keeps a failed connection and never retries it."""
        if self.daemon is None or not self.daemon.alive():
            raise RuntimeError(f"supervisord exited; see {self.work}/supervisord.log")
        if not self.sock.exists():
            return False
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            if self.rpc.supervisor.getState()["statename"] != "RUNNING":
                return False
            return self.running() >= running
        except (OSError, http.client.HTTPException, xmlrpc.client.Error):
            return False

    def running(self) -> int:
        infos = self.rpc.supervisor.getAllProcessInfo()
        return sum(1 for info in infos if info["statename"] == "RUNNING")

    def scale(self, n: int, timeout: float) -> dict[str, float]:
        """``wait=True``: supervisor replies once every process of the group is RUNNING."""
        started = time.perf_counter()
        replies = self.rpc.supervisor.startProcessGroup("bench", True)
        elapsed = time.perf_counter() - started
        failed = [r for r in replies if r["status"] != SUPERVISOR_SUCCESS]
        if len(replies) < n or failed:
            raise RuntimeError(f"supervisor started {len(replies) - len(failed)} of {n}: "
                               f"{failed[:1]}")
        running = self.running()
        if running < n:
            raise RuntimeError(f"supervisor reported {n} started but {running} RUNNING")
        return {"seconds": elapsed, "command": elapsed}

    def victim(self, slot: int) -> tuple[Any, int]:
        name = f"bench:bench_{slot % CRASH_POOL}"
        return name, int(self.rpc.supervisor.getProcessInfo(name)["pid"])

    def _pid(self, key: Any) -> int:
        return int(self.rpc.supervisor.getProcessInfo(key)["pid"])

    def wait_replaced(self, probe: str, key: Any, old: int, before: set[int]) -> None:
        poll_until(lambda: self._pid(key) not in (0, old), SAMPLE_TIMEOUT, self.poll,
                   f"a new pid for {key}")

    def settled(self, key: Any, old: int) -> bool:
        return self._pid(key) not in (0, old)

    def close(self) -> None:
        self.rpc = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


PEERS: dict[str, type[Circus] | type[Supervisor]] = {"circus": Circus, "supervisor": Supervisor}


def crash(peer: Circus | Supervisor, probe: str, samples: int, seconds: float) -> list[float]:
    """Latencies (ms) from SIGKILL of one instance to its replacement existing."""
    assert peer.daemon is not None
    daemon = peer.daemon
    phase = random.Random(f"{peer.name}/{probe}")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    for sample in range(samples):
        if time.perf_counter() + peer.reap_period > deadline:
            break
        key, old = peer.victim(sample)
        before = daemon.children()
        # The query above woke the daemon: kill at a random moment of its reap period.
        time.sleep(phase.uniform(0, peer.reap_period))
        started = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        if probe == "proc":
            new_child = lambda: daemon.children() - before  # noqa: E731
            poll_until(new_child, SAMPLE_TIMEOUT, 0.0005, "a new child after SIGKILL")
        else:
            peer.wait_replaced(probe, key, old, before)
        latencies.append((time.perf_counter() - started) * 1000)
        poll_until(lambda: peer.settled(key, old), SAMPLE_TIMEOUT, 0.01, "the replacement listed")
    return latencies


def drive(name: str, sizes: list[int], rounds: int, samples: int, seconds: float,
          poll: float) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    sleep = shutil.which("sleep") or "/bin/sleep"
    cls = PEERS[name]
    result: dict[str, Any] = {"peer": name, "version": cls.version(), "scale": {}, "crash": {}}
    for round_no in range(rounds):
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix=f"{name}-{n}-", dir=WORK) as tmp:
                peer = cls(Path(tmp), sleep, poll)
                try:
                    peer.start(n, running=False)
                    outcome = peer.scale(n, 60 + n * 0.5)
                    say(f"round {round_no + 1}/{rounds}  {name} 0 -> {n} running in "
                        f"{outcome['seconds']:.3f}s ({n / outcome['seconds']:.0f}/s; "
                        f"command answered after {outcome['command']:.3f}s)")
                except Exception as exc:  # one size failing must not lose the others
                    outcome = {"error": f"{type(exc).__name__}: {exc}"}
                    say(f"{name}: scale to {n} failed: {outcome['error']}")
                finally:
                    peer.close()
            result["scale"].setdefault(str(n), []).append(outcome)
    if samples > 0:
        with tempfile.TemporaryDirectory(prefix=f"{name}-crash-", dir=WORK) as tmp:
            peer = cls(Path(tmp), sleep, poll)
            try:
                peer.start(CRASH_POOL, running=True)
                for probe in cls.probes:
                    try:
                        values = crash(peer, probe, samples, seconds)
                        result["crash"][probe] = {"samples": values}
                        say(f"{name}: crash ({probe}) {len(values)} samples")
                    except Exception as exc:
                        result["crash"][probe] = {"error": f"{type(exc).__name__}: {exc}"}
                        say(f"{name}: crash ({probe}) failed: {exc}")
            except Exception as exc:
                result["crash"]["error"] = f"{type(exc).__name__}: {exc}"
                say(f"{name}: crash pool failed: {exc}")
            finally:
                peer.close()
    return result


def become_subreaper() -> None:
    """Adopt the daemon's children if it dies first, so they are reaped here, not orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--crash-samples", type=int, default=30)
    parser.add_argument("--crash-seconds", type=float, default=45.0)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    args = parser.parse_args()
    socket.setdefaulttimeout(COMMAND_TIMEOUT)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    become_subreaper()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    try:
        result = drive(args.peer, sizes, args.rounds, args.crash_samples, args.crash_seconds,
                       args.poll_ms / 1000)
    except KeyboardInterrupt:
        raise SystemExit(130)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
