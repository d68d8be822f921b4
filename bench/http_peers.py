"""circus and supervisor listing N processes, for ``bench/http.py``, each through its own API.

Run by ``bench/http.py`` with the python of ``bench/.venv-peers`` (built by ``peers.py``):

    http_peers.py circus|supervisor --sizes 200,1000 --calls N --gap-ms G --sleep PATH

prints one JSON line: ``{"peer", "version", "lists": {size: [ms per call]}, "errors": {size: why}}``.

For each size, a fresh daemon with one program of N ``sleep 3600`` (started at once, never
restarted): supervisor ``getAllProcessInfo`` over its unix socket (XML-RPC), circus ``list``
of the watcher over its ZeroMQ endpoint. The calls start once all N children have exec'd
(read from /proc, the daemon is not asked) and the daemon says all N run; they are paced
``--gap-ms`` apart so they do not become the load. Every daemon and its children are killed by
pid (``peers.Daemon``), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from peers import Daemon, poll_until, say  # noqa: E402

START_TIMEOUT = 120.0


def exec_count(daemon: Daemon, sleep: str) -> int:
    """Children of ``daemon`` that have exec'd ``sleep``."""
    count = 0
    for pid in daemon.children():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == sleep.encode():
                count += 1
        except OSError:
            continue
    return count


class Supervisor:
    call = "getAllProcessInfo"

    def __init__(self, work: Path, sleep: str) -> None:
        self.work, self.sleep = work, sleep
        self.sock = work / "supervisor.sock"
        self.daemon: Daemon | None = None
        self.rpc: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("supervisor")

    def start(self, n: int) -> None:
        conf = self.work / "supervisord.conf"
        conf.write_text(
            f"[unix_http_server]\nfile = {self.sock}\n"
            "[supervisord]\n"
            f"logfile = {self.work}/supervisord.log\n"
            f"pidfile = {self.work}/supervisord.pid\n"
            f"childlogdir = {self.work}\n"
            "nodaemon = true\n"
            "minfds = 1024\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            "[program:idle]\n"
            f"command = {self.sleep} 3600\n"
            "process_name = %(program_name)s_%(process_num)d\n"
            f"numprocs = {n}\n"
            "autostart = true\n"
            "autorestart = false\n"
            "startsecs = 0\n"
            "stdout_logfile = NONE\n"
            "stderr_logfile = NONE\n"
        )
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        self.daemon = Daemon([supervisord, "-c", str(conf)], self.work / "supervisord.out")
        self.daemon.start()
        poll_until(lambda: exec_count(self.daemon, self.sleep) >= n, START_TIMEOUT, 0.1, f"{n} sleeps")
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        poll_until(lambda: sum(p["statename"] == "RUNNING" for p in self._list()) == n,
                   START_TIMEOUT, 0.2, f"{n} RUNNING")

    def _list(self) -> list[dict[str, Any]]:
        try:
            return self.rpc.supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return []

    def listing(self) -> int:
        return len(self.rpc.supervisor.getAllProcessInfo())

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


class Circus:
    call = "list"

    def __init__(self, work: Path, sleep: str) -> None:
        self.work, self.sleep = work, sleep
        self.endpoint = f"ipc://{work}/ctl.sock"
        self.daemon: Daemon | None = None
        self.client: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("circus")

    def start(self, n: int) -> None:
        from circus.client import CircusClient

        ini = self.work / "circus.ini"
        ini.write_text(
            "[circus]\n"
            f"endpoint = {self.endpoint}\n"
            f"pubsub_endpoint = ipc://{self.work}/pub.sock\n"
            "statsd = false\n"
            "[watcher:idle]\n"
            f"cmd = {self.sleep}\n"
            "args = 3600\n"
            f"numprocesses = {n}\n"
        )
        circusd = str(Path(sys.executable).with_name("circusd"))
        self.daemon = Daemon([circusd, "--log-output", str(self.work / "circusd.log"), str(ini)],
                             self.work / "circusd.out")
        self.daemon.start()
        poll_until(lambda: exec_count(self.daemon, self.sleep) >= n, START_TIMEOUT, 0.1, f"{n} sleeps")
        self.client = CircusClient(endpoint=self.endpoint, timeout=peers.COMMAND_TIMEOUT)
        poll_until(lambda: self.listing() == n, START_TIMEOUT, 0.2, f"{n} listed")

    def listing(self) -> int:
        reply = self.client.call({"command": "list", "properties": {"name": "idle"}})
        return len(reply.get("pids", [])) if reply.get("status") == "ok" else -1

    def close(self) -> None:
        if self.client is not None:
            self.client.stop()
            self.client = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


PEERS: dict[str, Any] = {"circus": Circus, "supervisor": Supervisor}


def measure(cls: Any, n: int, calls: int, gap: float, sleep: str, work: Path) -> list[float]:
    peer = cls(work, sleep)
    try:
        peer.start(n)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            listed = peer.listing()
            latencies.append((time.perf_counter() - started) * 1000)
            if listed != n:
                raise RuntimeError(f"{cls.call} listed {listed}, expected {n}")
            time.sleep(gap)  # pace: the calls must not become the load
        return latencies
    finally:
        peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--sleep", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    peers.become_subreaper()
    cls = PEERS[args.peer]
    result: dict[str, Any] = {"peer": args.peer, "version": cls.version(), "call": cls.call,
                              "lists": {}, "errors": {}}
    peers.WORK.mkdir(exist_ok=True)
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            with tempfile.TemporaryDirectory(prefix=f"{args.peer}-list-", dir=peers.WORK) as tmp:
                try:
                    result["lists"][str(size)] = measure(cls, size, args.calls, args.gap_ms / 1000,
                                                         args.sleep, Path(tmp))
                    say(f"{args.peer} {cls.call} of {size}: done")
                except Exception as exc:
                    result["errors"][str(size)] = f"{type(exc).__name__}: {exc}"
                    say(f"{args.peer} {size}: {result['errors'][str(size)]}")
    except KeyboardInterrupt:
        raise SystemExit(130)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
