"""circus and supervisor capturing the output bench's flood, each driven through its own API.

Run by ``bench/output.py`` with the python of ``bench/.venv-peers`` (built by ``peers.py``):

    output_peers.py circus|supervisor --flooder PY --flood FLOOD.PY --mb N --rounds R
                    --expect short:BYTES,log:BYTES --status-calls N --status-gap-ms G

prints one JSON line: ``{"peer", "version", "cpu": {shape: [seconds per round]},
"seconds": {...}, "status": {"call", "ms": [...]}}``.

**CPU.** For each shape and round, a fresh daemon with one program ``flood`` (not started, not
restarted) running ``PY FLOOD.PY SHAPE N now``, its stdout to a log file: supervisor's default
(``AUTO`` in ``childlogdir``, 50 MB, 10 backups), circus's ``FileStream``. The daemon's CPU
(user + system, psutil) is taken from the start command until the program has exited and its
log files hold every byte of the flood (watched on disk, so the daemon is not woken by it).

**Status.** A daemon capturing an endless ``yes`` (log files rotated) answers
``--status-calls`` status calls, ``--status-gap-ms`` apart: supervisor ``getAllProcessInfo``,
circus ``list``.

Every daemon and its children are killed by pid (``peers.Daemon``), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

SHAPES = ("short", "log")
CAPTURE_TIMEOUT = 600.0
START_TIMEOUT = 30.0


def cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def logged_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("flood*") if p.is_file())


class Supervisor:
    call = "getAllProcessInfo"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.logs = work / "logs"
        self.sock = work / "supervisor.sock"
        self.daemon: Daemon | None = None
        self.rpc: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("supervisor")

    def start(self, argv: list[str]) -> None:
        self.logs.mkdir()
        conf = self.work / "supervisord.conf"
        conf.write_text(
            f"[unix_http_server]\nfile = {self.sock}\n"
            "[supervisord]\n"
            f"logfile = {self.work}/supervisord.log\n"
            f"pidfile = {self.work}/supervisord.pid\n"
            f"childlogdir = {self.logs}\n"
            "nodaemon = true\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            "[program:flood]\n"
            f"command = {' '.join(argv)}\n"
            "autostart = false\n"
            "autorestart = false\n"
            "startsecs = 0\n"
        )
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        self.daemon = Daemon([supervisord, "-c", str(conf)], self.work / "supervisord.out")
        self.daemon.start()
        poll_until(self._ready, START_TIMEOUT, 0.02, "supervisord ready")

    def _ready(self) -> bool:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise RuntimeError(f"supervisord exited; see {self.work}")
        if not self.sock.exists():
            return False
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return self.rpc.supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def run_program(self) -> None:
        self.rpc.supervisor.startProcess("flood", False)

    def exited(self) -> bool:
        return self.rpc.supervisor.getProcessInfo("flood")["statename"] in ("EXITED", "STOPPED")

    def status(self) -> None:
        self.rpc.supervisor.getAllProcessInfo()

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


class Circus:
    call = "list"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.logs = work / "logs"
        self.endpoint = f"ipc://{work}/ctl.sock"
        self.daemon: Daemon | None = None
        self.client: Any = None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("circus")

    def start(self, argv: list[str]) -> None:
        from circus.client import CircusClient

        self.logs.mkdir()
        ini = self.work / "circus.ini"
        ini.write_text(
            "[circus]\n"
            f"endpoint = {self.endpoint}\n"
            f"pubsub_endpoint = ipc://{self.work}/pub.sock\n"
            "statsd = false\n"
            "[watcher:flood]\n"
            f"cmd = {argv[0]}\n"
            f"args = {' '.join(argv[1:])}\n"
            "numprocesses = 1\n"
            "autostart = false\n"
            "respawn = false\n"
            "stdout_stream.class = FileStream\n"
            f"stdout_stream.filename = {self.logs}/flood.log\n"
            "stdout_stream.max_bytes = 52428800\n"
            "stdout_stream.backup_count = 10\n"
        )
        circusd = str(Path(sys.executable).with_name("circusd"))
        self.daemon = Daemon([circusd, "--log-output", str(self.work / "circusd.log"), str(ini)],
                             self.work / "circusd.out")
        self.daemon.start()
        self.client = CircusClient(endpoint=self.endpoint, timeout=peers.COMMAND_TIMEOUT)
        poll_until(self._ready, START_TIMEOUT, 0.02, "circusd ready")

    def _ready(self) -> bool:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise RuntimeError(f"circusd exited; see {self.work}/circusd.log")
        if not (self.work / "ctl.sock").exists():
            return False
        return "status" in self.client.call({"command": "status", "properties": {"name": "flood"}})

    def _call(self, command: str, **props: Any) -> dict[str, Any] | None:
        reply = self.client.call({"command": command, "properties": props})
        return reply if reply.get("status") == "ok" else None

    def run_program(self) -> None:
        if self._call("start", name="flood") is None:
            raise RuntimeError("circus refused to start the flood watcher")

    def exited(self) -> bool:
        assert self.daemon is not None
        return not self.daemon.children()

    def status(self) -> None:
        self._call("list", name="flood")

    def close(self) -> None:
        if self.client is not None:
            self.client.stop()
            self.client = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


PEERS: dict[str, Any] = {"circus": Circus, "supervisor": Supervisor}


def cpu_round(cls: Any, argv: list[str], total: int, work: Path) -> tuple[float, float]:
    peer = cls(work)
    try:
        peer.start(argv)
        assert peer.daemon is not None
        before, started = cpu_of(peer.daemon.pid), time.perf_counter()
        peer.run_program()
        poll_until(lambda: logged_bytes(peer.logs) >= total, CAPTURE_TIMEOUT, 0.02,
                   f"{total} bytes in the log files")
        seconds = time.perf_counter() - started
        poll_until(peer.exited, START_TIMEOUT, 0.02, "the flooder's exit")
        return cpu_of(peer.daemon.pid) - before, seconds
    finally:
        peer.close()


def status_round(cls: Any, flooder: str, calls: int, gap: float, work: Path) -> list[float]:
    peer = cls(work)
    try:
        peer.start([shutil.which("yes") or "/usr/bin/yes"])
        peer.run_program()
        poll_until(lambda: logged_bytes(peer.logs) > 1 << 20, START_TIMEOUT, 0.02, "the flood")
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            peer.status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(gap)  # pace: the calls must not become the load
        return latencies
    finally:
        peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--flooder", required=True)
    parser.add_argument("--flood", required=True)
    parser.add_argument("--mb", type=float, required=True)
    parser.add_argument("--expect", required=True, help="bytes each shape writes: short:N,log:M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--status-calls", type=int, default=200)
    parser.add_argument("--status-gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    peers.become_subreaper()
    cls = PEERS[args.peer]
    result: dict[str, Any] = {"peer": args.peer, "version": cls.version(), "cpu": {}, "seconds": {}}
    expect = {shape: int(n) for shape, n in (item.split(":") for item in args.expect.split(","))}
    peers.WORK.mkdir(exist_ok=True)
    try:
        for round_no in range(args.rounds):
            for shape in SHAPES:
                argv = [args.flooder, args.flood, shape, str(args.mb), "now"]
                with tempfile.TemporaryDirectory(prefix=f"{args.peer}-out-", dir=peers.WORK) as tmp:
                    try:
                        cpu, seconds = cpu_round(cls, argv, expect[shape], Path(tmp))
                    except Exception as exc:
                        say(f"{args.peer} {shape}: {type(exc).__name__}: {exc}")
                        continue
                result["cpu"].setdefault(shape, []).append(cpu)
                result["seconds"].setdefault(shape, []).append(seconds)
                say(f"round {round_no + 1} {args.peer} {shape}: {cpu / args.mb * 1000:.2f} ms/MiB")
        with tempfile.TemporaryDirectory(prefix=f"{args.peer}-status-", dir=peers.WORK) as tmp:
            try:
                ms = status_round(cls, args.flooder, args.status_calls, args.status_gap_ms / 1000, Path(tmp))
                result["status"] = {"call": cls.call, "ms": ms}
            except Exception as exc:
                say(f"{args.peer} status: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        raise SystemExit(130)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
