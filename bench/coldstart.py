"""Cold start: a real daemon from its own command line to N ``sleep 3600`` children running.

``bench/spawn.py``'s ``cold`` case. Each contender is started the way a user starts it, with a
file holding one program of N ``sleep 3600`` and nothing else: ``gaffer start FILE`` (the
project venv's console script), ``circusd FILE`` and ``supervisord -c FILE`` (``nodaemon``; both
from the peers' venv, ``bench/peers.py``). The clock starts just before the command is spawned
and stops when the N-th child of the daemon has exec'd the sleep: the bench reads
``/proc/<daemon>/task/*/children`` every ``POLL`` seconds and each new child's ``cmdline`` (a
forked child shows its parent's until it execs), so the daemon is never asked anything.

Everything a contender imports is byte-compiled first: pip compiles the peers at install time,
an editable install of gaffer is not (and ``PYTHONDONTWRITEBYTECODE`` would keep it so), and
compiling ~250 modules is not what a user's second start costs.

Afterwards the daemon is frozen (SIGSTOP: it can neither spawn nor reap), every child gets a
pidfd (a pid that cannot be reused while its parent is stopped), the daemon is killed, then the
children through their pidfds, and the bench waits until every pidfd says its process is gone.
"""

from __future__ import annotations

import compileall
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "cold"
POLL = 0.005
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CONTENDERS = ("gaffer", "circus", "supervisor")


@dataclass(frozen=True)
class Outcome:
    """One cold start: seconds to N children exec'd (None on error), the first one, and the
    daemon's own CPU time (user + system) by then."""

    seconds: float | None
    first: float | None = None
    cpu: float | None = None
    error: str | None = None


def sleep_path() -> str:
    return shutil.which("sleep") or "/bin/sleep"


def gaffer_command(work: Path, n: int) -> list[str]:
    """``gaffer start`` of a TOML file with one template (the defaults otherwise: output
    captured, flapping on, descendants tracked)."""
    path = work / "cold.toml"
    path.write_text(f'[sleeper]\ncmd = "{sleep_path()}"\nargs = ["3600"]\nnumprocesses = {n}\n')
    gaffer = Path(sys.executable).with_name("gaffer")
    return [str(gaffer), "start", "--no-color", "--data-dir", str(work / "data"), str(path)]


def circus_command(work: Path, n: int, peers_python: Path) -> list[str]:
    """``circusd`` of an ini with one watcher of ``n`` (its defaults otherwise)."""
    path = work / "circus.ini"
    path.write_text(
        "[circus]\n"
        f"endpoint = ipc://{work}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{work}/pub.sock\n"
        "statsd = false\n"
        "[watcher:bench]\n"
        f"cmd = {sleep_path()}\n"
        "args = 3600\n"
        f"numprocesses = {n}\n"
    )
    return [str(peers_python.with_name("circusd")), str(path)]


def supervisor_command(work: Path, n: int, peers_python: Path) -> list[str]:
    """``supervisord`` in the foreground with one program of ``numprocs = n``, autostarted,
    ``startsecs = 0`` (the spawn bench's settings)."""
    (work / "logs").mkdir(exist_ok=True)
    path = work / "supervisord.conf"
    path.write_text(
        f"[unix_http_server]\nfile = {work}/supervisor.sock\n"
        "[supervisord]\n"
        f"logfile = {work}/supervisord.log\n"
        f"pidfile = {work}/supervisord.pid\n"
        f"childlogdir = {work}/logs\n"
        "nodaemon = true\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        "[program:bench]\n"
        f"command = {sleep_path()} 3600\n"
        "process_name = %(program_name)s_%(process_num)d\n"
        f"numprocs = {n}\n"
        "autostart = true\n"
        "autorestart = true\n"
        "startsecs = 0\n"
    )
    return [str(peers_python.with_name("supervisord")), "-c", str(path)]


def compile_all(peers_python: Path | None, log: Callable[[str], None]) -> None:
    """Byte-compile gaffer and this venv's site-packages, and the peers' venv if there is one."""
    targets = [ROOT / "gaffer", Path(sysconfig.get_paths()["purelib"])]
    for target in targets:
        compileall.compile_dir(str(target), quiet=1, workers=1)
    if peers_python is not None:
        subprocess.run(
            [str(peers_python), "-m", "compileall", "-q", "-j", "1",
             str(peers_python.parent.parent / "lib")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )
    log("cold: byte-compiled gaffer and the contenders' packages")


# --------------------------------------------------------------------- watching /proc


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(p) for p in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def is_sleep(pid: int, argv0s: tuple[bytes, ...]) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            head = f.read(256)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return head.split(b"\0", 1)[0] in argv0s


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(argv: list[str], n: int, work: Path, timeout: float = START_TIMEOUT) -> Outcome:
    """Start ``argv`` in its own session, time it to ``n`` sleeping children, clean up."""
    argv0s = (sleep_path().encode(), b"sleep")
    out = open(work / "daemon.out", "wb")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=work,
                            start_new_session=True)
    seen: set[int] = set()
    first = None
    try:
        while len(seen) < n:
            for child in children(proc.pid) - seen:
                if is_sleep(child, argv0s):
                    seen.add(child)
                    first = first or time.perf_counter() - started
            if len(seen) >= n:
                break
            if proc.poll() is not None:
                return Outcome(None, error=f"{Path(argv[0]).name} exited {proc.returncode} "
                                           f"with {len(seen)} running; see {work}/daemon.out")
            if time.perf_counter() - started > timeout:
                return Outcome(None, error=f"{len(seen)} of {n} running after {timeout:.0f}s")
            time.sleep(POLL)
        seconds = time.perf_counter() - started
        return Outcome(seconds, first, cpu_seconds(proc.pid))
    finally:
        stop_all(proc)
        out.close()


def stop_all(proc: subprocess.Popen) -> None:
    """Freeze the daemon, hold a pidfd on each child, kill the daemon, then the children."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pidfds = []
        if proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
        for child in children(proc.pid):
            try:
                pidfds.append(os.pidfd_open(child))
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT)
        for fd in pidfds:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(pidfds)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def wait_gone(pidfds: list[int]) -> None:
    """A pidfd polls readable once its process has exited (orphans are reaped by init)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    left = list(pidfds)
    poller = select.poll()
    for fd in left:
        poller.register(fd, select.POLLIN)
    while left and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            poller.unregister(fd)
            left.remove(fd)
            os.close(fd)
    for fd in left:
        os.close(fd)


# --------------------------------------------------------------------- the case


def commands(n: int, peers_python: Path | None) -> dict[str, Callable[[Path], list[str]]]:
    made: dict[str, Callable[[Path], list[str]]] = {"gaffer": lambda w: gaffer_command(w, n)}
    if peers_python is not None:
        made["circus"] = lambda w: circus_command(w, n, peers_python)
        made["supervisor"] = lambda w: supervisor_command(w, n, peers_python)
    return made


def measure(n: int, rounds: int, peers_python: Path | None,
            log: Callable[[str], None]) -> dict[str, list[Outcome]]:
    """``rounds`` cold starts of each contender, interleaved in a rotating order."""
    compile_all(peers_python, log)
    made = commands(n, peers_python)
    order = list(made)
    results: dict[str, list[Outcome]] = {who: [] for who in made}
    for round_no in range(rounds):
        for who in order:
            work = WORK / who
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            outcome = run_once(made[who](work), n, work)
            results[who].append(outcome)
            shown = (f"{outcome.seconds:6.3f}s (first at {outcome.first:.3f}s, "
                     f"daemon CPU {outcome.cpu:.2f}s)" if outcome.seconds else outcome.error)
            log(f"cold round {round_no + 1}/{rounds}  {who:<10} 0 -> {n} running: {shown}")
        order = order[1:] + order[:1]
    return results
