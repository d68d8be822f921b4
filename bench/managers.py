"""Three process managers idling over N ``sleep`` children, for ``idle.py`` and ``cli_startup.py``.

``gaffer start`` (this venv), circusd and supervisord (``bench/.venv-peers``, built by
``peers.ensure_venv``), each from its config-file defaults but for what the bench needs
(sockets under bench/.work, no autorestart delay). Each runs in its own session and is read
only from ``/proc``: measuring never wakes it. ``Manager.close`` kills the daemon and every
child it started, by pid (held as psutil objects, which refuse a reused pid), also after an
error; a Manager is a context manager.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
PEERS_BIN = HERE / ".venv-peers" / "bin"
GAFFER_BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYCACHE = WORK / "pycache"


def bench_env() -> dict[str, str]:
    """This environment, with bytecode caching on (under bench/.work/pycache): what an installed
    gaffer has. With PYTHONDONTWRITEBYTECODE set (as here, for the tests) every run of an
    editable install compiles gaffer's modules from source again, about 20 ms of CPU that no
    user pays; the peers' wheels came with their .pyc, so the comparison would be unfair."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


class Manager:
    """One daemon with ``n`` sleeps; ``ctl`` is the argv of its own control command."""

    name = ""

    def __init__(self, work: Path, n: int) -> None:
        self.work = work
        self.n = n
        self.proc: subprocess.Popen | None = None
        self.ctl: list[str] = []
        self.env = bench_env()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "Manager":
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        argv = self.argv()
        with open(self.work / "daemon.out", "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, env=self.env, cwd=self.work)
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.children()) < self.n:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}; see {self.work}/daemon.out")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {len(self.children())} of {self.n} children in {START_TIMEOUT:.0f}s")
            time.sleep(0.05)  # poll /proc, never the daemon
        self.wait_ctl()
        return self

    def wait_ctl(self) -> None:
        """Until the control command answers (the socket may come after the children)."""
        deadline = time.monotonic() + START_TIMEOUT
        while subprocess.run(self.ctl, env=self.env, capture_output=True, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.ctl)} never succeeded")
            time.sleep(0.05)  # poll

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> set[int]:
        pids: set[int] = set()
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                pids.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
        return pids

    def daemons(self) -> list[int]:
        """The manager's own processes (not the managed sleeps): the daemon itself."""
        return [self.pid]

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            spawned = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            spawned = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        for child in spawned:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(spawned, timeout=STOP_TIMEOUT)
        self.proc = None

    def __enter__(self) -> "Manager":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Gaffer(Manager):
    """``gaffer start`` of one template (its defaults: output captured, descendants tracked)."""

    name = "gaffer"

    def argv(self) -> list[str]:
        spec = self.work / "gaffer.toml"
        spec.write_text(f'[sleeper]\ncmd = "sleep"\nargs = ["3600"]\nnumprocesses = {self.n}\nstartsecs = 0\n')
        self.env["GAFFER_RUNTIME_DIR"] = str(self.work / "run")
        self.env.pop("GAFFER_CONTROLLER", None)
        self.ctl = [str(GAFFER_BIN / "gafferctl"), "ps"]
        return [str(GAFFER_BIN / "gaffer"), "start", "--no-color", "--data-dir", str(self.work / "data"), str(spec)]


class Circus(Manager):
    """circusd with one watcher (no output capture: its default)."""

    name = "circus"

    def argv(self) -> list[str]:
        endpoint = f"ipc://{self.work}/ctl.sock"
        ini = self.work / "circus.ini"
        ini.write_text(
            f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = ipc://{self.work}/pub.sock\n"
            f"statsd = false\n[watcher:sleeper]\ncmd = sleep\nargs = 3600\nnumprocesses = {self.n}\n"
        )
        self.ctl = [str(PEERS_BIN / "circusctl"), "--endpoint", endpoint, "list"]
        return [str(PEERS_BIN / "circusd"), "--log-output", str(self.work / "circusd.log"), str(ini)]


class Supervisor(Manager):
    """supervisord with one program of ``numprocs`` (output to log files: its default)."""

    name = "supervisor"

    def argv(self) -> list[str]:
        (self.work / "logs").mkdir()
        conf = self.work / "supervisord.conf"
        conf.write_text(
            f"[unix_http_server]\nfile = {self.work}/supervisor.sock\n"
            f"[supervisord]\nlogfile = {self.work}/supervisord.log\npidfile = {self.work}/supervisord.pid\n"
            f"childlogdir = {self.work}/logs\nnodaemon = true\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[supervisorctl]\nserverurl = unix://{self.work}/supervisor.sock\n"
            "[program:sleeper]\ncommand = sleep 3600\nprocess_name = %(program_name)s_%(process_num)d\n"
            f"numprocs = {self.n}\nautostart = true\nstartsecs = 0\n"
        )
        self.ctl = [str(PEERS_BIN / "supervisorctl"), "-c", str(conf), "status"]
        return [str(PEERS_BIN / "supervisord"), "-c", str(conf)]


def peers_available(log: Callable[[str], None]) -> str:
    """'' when circus and supervisor are installed in bench/.venv-peers (built if needed), else why not."""
    sys.path.insert(0, str(HERE))
    import peers

    python, why = peers.ensure_venv(log)
    return "" if python is not None else why


def versions() -> dict[str, str]:
    import peers

    return {"circus": peers.PINS["circus"], "supervisor": peers.PINS["supervisor"]}


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def memory(pid: int) -> dict[str, int]:
    """RSS and PSS of ``pid`` in KiB (PSS: shared pages divided among the processes mapping them)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0])
    pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return {"rss": rss, "pss": pss}
