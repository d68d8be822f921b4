"""Output benchmark: what capturing a flood costs the agent, and whether `ps` stays fast.

Measured in one run on one machine, beside the floor and the peers:

1. **CPU per MB captured.** A flooder (``flood.py``, written under bench/.work/output) writes
   ``--mb`` MiB of output at full speed and exits; two shapes: ``short`` (``y\\n``, what
   ``yes`` prints: the worst case per byte) and ``log`` (100-byte lines). Who reads it:
   - **bare**: a Python process that spawns the flooder and does nothing but wait on the
     pipe with epoll and read what is there (up to 256 KiB a wake-up) until EOF: the floor
     for any event-loop reader of that pipe (blocking reads cost about 3x: a wake-up per write);
   - **gaffer**: a real ``gaffer-agent`` (with its ``gaffer-controller``) running the flooder
     as a template, in three variants: plain (ring buffer only), **+follower** (a subscriber
     to its ``output.`` topic at the controller, as ``gafferctl logs -f``), **+log** (the
     template's ``log`` files, default size and backups). The flooder waits on its stdin for
     ``go`` (sent with the ``write`` request once the follower is seen to receive), so the
     agent's CPU time (psutil, user + system) is taken from go to the ``proc.<t>.exit``
     event, which the agent publishes only after draining the pipe;
   - **circus** and **supervisor** (``bench/output_peers.py`` in ``bench/.venv-peers``),
     each writing the flood to a log file (supervisor's default; circus's ``FileStream``):
     their daemon's CPU time from start to the program's exit.
   Best (lowest CPU) of ``--rounds``: noise only ever adds CPU time.
2. **ps while a flood is followed.** Controller and agent up; ``--ps-calls`` ``ps`` requests
   through ``AsyncClient`` (what ``gafferctl ps`` sends), ``--ps-gap-ms`` apart, in three
   conditions: idle; a template running ``yes``; the same with a real ``gafferctl logs -f``
   following it (its output to a file, lines and ``[N lines skipped]`` markers counted).
   p50/p99/max, the daemons' RSS before and after, and a few whole ``gafferctl ps`` runs
   (process start included). The peers' status calls under the same ``yes`` flood beside it.

Results go to the ``output`` section of bench/RESULTS.md. Every loop is bounded in count and
time; every process is stopped by pid, also on Ctrl-C.

    .venv/bin/python bench/output.py [--mb 256] [--rounds 3] [--skip-peers] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import psutil
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gaffer  # noqa: E402
import peers  # noqa: E402
import results  # noqa: E402
from gaffer.client import AsyncClient, ReceivedEvent  # noqa: E402
from gaffer.common.template import parse_template  # noqa: E402

WORK = HERE / ".work" / "output"
BIN = Path(sys.executable).parent
SHAPES = ("short", "log")
VARIANTS = ("plain", "follower", "log")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
PS_TARGET_MS = 100.0
PEERS = ("circus", "supervisor")

LINES = {
    "short": b"y\n",
    "log": b"2026-01-01T00:00:00.000Z INFO request handled in 3 ms " + b"x" * 45 + b"\n",
}
FLOOD = r'''"""Writes MiB of output (whole lines) at full speed: flood.py SHAPE MIB wait|now (MIB <= 0:
forever). With "wait" it prints "ready" every 50 ms until a line arrives on stdin."""
import os, select, sys
LINES = __LINES__
shape, mib, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if mode == "wait":
    while not select.select([0], [], [], 0.05)[0]:
        os.write(1, b"ready\n")
    os.read(0, 64)
line = LINES[shape]
block = line * (65536 // len(line))
if mib <= 0:
    while True:
        os.write(1, block)
left = int(mib * 1048576) // len(line) * len(line)
while left > 0:
    left -= os.write(1, block if left >= len(block) else block[:left])
'''

BARE = r'''"""bare_reader.py ARGV...: spawn ARGV, read its stdout to EOF, print bytes and CPU seconds.
Waits for the pipe with epoll, then reads what is there, up to 256 KiB: the least any
event-loop reader does (blocking reads cost about three times as much: a wake-up per write)."""
import json, os, resource, select, subprocess, sys, time
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
fd = proc.stdout.fileno()
os.set_blocking(fd, False)
poller = select.epoll()
poller.register(fd, select.EPOLLIN)
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
total, eof = 0, False
while not eof:
    poller.poll()
    got = 0
    while got < 262144:
        try:
            data = os.read(fd, 262144 - got)
        except BlockingIOError:
            break
        if not data:
            eof = True
            break
        got += len(data)
    total += got
proc.wait()
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"bytes": total, "cpu": cpu, "seconds": time.perf_counter() - started}))
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def write_scripts() -> tuple[Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    flood, bare = WORK / "flood.py", WORK / "bare_reader.py"
    flood.write_text(FLOOD.replace("__LINES__", repr(LINES)))
    bare.write_text(BARE)
    return flood, bare


# --------------------------------------------------------------------- processes


class Spawned:
    """A process in its own session; ``close`` ends it and its group, by pid."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.pid = proc.pid

    @classmethod
    async def start(cls, name: str, argv: list[str], out: Path, err: Path | None = None,
                    stdout: Any = None) -> "Spawned":
        with open(out, "ab") as sink, open(err or out, "ab") as errors:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout or sink, stderr=errors,
                start_new_session=True,
            )
        return cls(proc, name)

    async def close(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """``sig``, then SIGKILL of its group and of every descendant it had (an agent's
        instances lead sessions of their own), each held as a psutil object so a reused pid
        is never signalled."""
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
                await asyncio.wait_for(self.proc.wait(), timeout)
            except ProcessLookupError:
                pass
            except TimeoutError:
                log(f"{self.name} (pid {self.pid}) did not stop in {timeout:.0f}s: SIGKILL")
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.returncode is None:
            await asyncio.wait_for(self.proc.wait(), 10)
        for child in descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


class Gaffer:
    """A gaffer-controller and one gaffer-agent (``bench``) on loopback, for one bench run."""

    def __init__(self, work: Path) -> None:
        self.work = work
        port, pub = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.pub = f"tcp://127.0.0.1:{pub}"
        self.controller: Spawned | None = None
        self.agent: Spawned | None = None
        self.client = AsyncClient(self.endpoint, timeout=10.0)
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        self.controller = await Spawned.start("gaffer-controller", [
            str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--pub", self.pub,
            "--data-dir", str(self.work / "controller"), "--insecure", "--log-level", "warning",
        ], self.work / "controller.log")
        self.agent = await Spawned.start("gaffer-agent", [
            str(BIN / "gaffer-agent"), "--controller", self.endpoint, "--name", "bench",
            "--state-dir", str(self.work / "agent"), "--insecure", "--stop-processes",
            "--log-level", os.environ.get("BENCH_AGENT_LOG", "warning"),
        ], self.work / "agent.log")
        await self._until(self._node_up, "the agent to join")
        self._reader = asyncio.get_running_loop().create_task(self._read_events())
        await self.flood("probe", [sys.executable, "-c", "pass"], wait_exit=True, timeout=START_TIMEOUT)

    async def _node_up(self) -> bool:
        try:
            return any(n["state"] == "up" for n in await self.client.call("nodes"))
        except Exception:
            return False

    async def _until(self, check: Any, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting {timeout:.0f}s for {what}")
            await asyncio.sleep(0.05)  # poll

    async def _read_events(self) -> None:
        async for event in self.client.events(["proc."], endpoint=self.pub):
            if isinstance(event, ReceivedEvent):
                await self._events.put((event.topic, event.data))

    async def event(self, topic: str, timeout: float) -> dict[str, Any]:
        """The next event on ``topic`` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                got, data = await self._events.get()
                if got == topic:
                    return data

    async def flood(
        self, name: str, argv: list[str], *, stdin: bool = False, log_dir: Path | None = None,
        wait_exit: bool = False, timeout: float = 600.0,
    ) -> None:
        """Apply a one-instance template running ``argv``, never restarted; wait for its spawn
        (or exit). The first one also proves this bench's event subscription is live."""
        spec: dict[str, Any] = {
            "cmd": argv[0], "args": argv[1:], "numprocesses": 1, "restart": "never",
            "startsecs": 0, "flapping": False, "redirect_input": stdin,
        }
        if log_dir is not None:
            spec["log"] = {"dir": str(log_dir)}
        template = parse_template(spec, name=name)
        deadline = time.monotonic() + timeout
        while True:
            await self.client.call("apply", templates=[template.to_dict()])
            try:
                await self.event(f"proc.{name}.{'exit' if wait_exit else 'spawn'}", min(2.0, timeout))
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                await self.client.call("delete", name=name)

    async def delete(self, name: str) -> None:
        await self.client.call("delete", name=name)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.close()
        if self.agent is not None:
            await self.agent.close()
        if self.controller is not None:
            await self.controller.close()


# --------------------------------------------------------------------- CPU per MB


@dataclass
class Run:
    mb: float
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    follow: dict[str, dict[str, int]] = field(default_factory=dict)
    ps: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    cli: list[float] = field(default_factory=list)
    follower: dict[str, int] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, who: str, shape: str, cpu: float, seconds: float) -> None:
        self.cpu.setdefault((who, shape), []).append(cpu)
        self.seconds.setdefault((who, shape), []).append(seconds)


async def bare_round(run: Run, flood: Path, bare: Path, shape: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(bare), sys.executable, str(flood), shape, str(run.mb), "now",
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    got = json.loads(out)
    run.add("bare", shape, got["cpu"], got["seconds"])


def flood_lines(shape: str, mb: float) -> int:
    return int(mb * 1048576) // len(LINES[shape])


async def follower(cluster: Gaffer, prefix: str, expect: int, out: Path) -> Spawned:
    return await Spawned.start(
        "follower",
        [sys.executable, str(Path(__file__).resolve()), "follow", cluster.endpoint, cluster.pub, prefix, str(expect)],
        out, stdout=asyncio.subprocess.PIPE,
    )


async def gaffer_round(run: Run, cluster: Gaffer, flood: Path, shape: str, variant: str, index: int) -> None:
    name = f"flood-{index}"
    log_dir = cluster.work / f"logs-{index}" if variant == "log" else None
    watcher = None
    if variant == "follower":
        watcher = await follower(cluster, f"output.{name}.", flood_lines(shape, run.mb),
                                 cluster.work / "follower.log")
    try:
        argv = [sys.executable, str(flood), shape, str(run.mb), "wait"]
        await cluster.flood(name, argv, stdin=True, log_dir=log_dir)
        if watcher is not None:
            assert watcher.proc.stdout is not None
            line = await asyncio.wait_for(watcher.proc.stdout.readline(), START_TIMEOUT)
            if b"seen" not in line:
                raise RuntimeError(f"the follower said {line!r}, not 'seen'")
        assert cluster.agent is not None
        before, started = cpu_of(cluster.agent.pid), time.perf_counter()
        await cluster.client.call("write", id=f"{name}.1", data="go\n")
        await cluster.event(f"proc.{name}.exit", 600)
        run.add(f"gaffer+{variant}" if variant != "plain" else "gaffer", shape,
                cpu_of(cluster.agent.pid) - before, time.perf_counter() - started)
        if watcher is not None:
            assert watcher.proc.stdout is not None
            try:
                line = await asyncio.wait_for(watcher.proc.stdout.readline(), 10)
            except TimeoutError:
                watcher.proc.send_signal(signal.SIGTERM)
                line = await asyncio.wait_for(watcher.proc.stdout.readline(), START_TIMEOUT)
            run.follow[shape] = {**json.loads(line), "expected": flood_lines(shape, run.mb)}
    finally:
        if watcher is not None:
            await watcher.close()
        await cluster.delete(name)
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)


async def measure_cpu(run: Run, rounds: int, work: Path) -> None:
    flood, bare = write_scripts()
    cluster = Gaffer(work)
    try:
        await cluster.start()
        index = 0
        for round_no in range(rounds):
            for shape in SHAPES:
                await bare_round(run, flood, bare, shape)
                for variant in VARIANTS:
                    index += 1
                    await gaffer_round(run, cluster, flood, shape, variant, index)
                log(f"round {round_no + 1}/{rounds} {shape}: " + ", ".join(
                    f"{who} {cpu[-1] / run.mb * 1000:.2f} ms/MiB"
                    for (who, s), cpu in run.cpu.items() if s == shape))
    finally:
        await cluster.close()


# --------------------------------------------------------------------- ps under a flood


async def ps_calls(cluster: Gaffer, calls: int, gap: float) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        await cluster.client.call("ps")
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(gap)  # pace: the requests must not become the load
    return latencies


def daemons_rss(cluster: Gaffer) -> dict[str, float]:
    assert cluster.controller is not None and cluster.agent is not None
    return {"controller": rss_mb(cluster.controller.pid), "agent": rss_mb(cluster.agent.pid)}


async def measure_ps(run: Run, calls: int, gap: float, cli_runs: int, work: Path) -> None:
    cluster = Gaffer(work)
    ctl = None
    try:
        await cluster.start()
        await ps_calls(cluster, 5, gap)
        for condition in ("idle", "flood", "flood+follower"):
            if condition == "flood":
                await cluster.flood("flood", [shutil.which("yes") or "/usr/bin/yes"])
                await ps_calls(cluster, 1, gap)  # the first ps after a spawn samples it (~0.1 s)
            if condition == "flood+follower":
                ctl = await Spawned.start("gafferctl logs -f", [
                    str(BIN / "gafferctl"), "--controller", cluster.endpoint, "logs", "flood.1", "-f",
                ], work / "follow.out", work / "follow.err")
                await wait_for_file(work / "follow.err", b"skipped", START_TIMEOUT)
            before = daemons_rss(cluster)
            run.ps[condition] = await ps_calls(cluster, calls, gap)
            run.rss[condition] = {k: (before[k], v) for k, v in daemons_rss(cluster).items()}
            log(f"ps {condition}: p50 {percentile(run.ps[condition], 50):.1f} ms, "
                f"p99 {percentile(run.ps[condition], 99):.1f} ms")
        for _ in range(cli_runs):
            started = time.perf_counter()
            done = await asyncio.create_subprocess_exec(
                str(BIN / "gafferctl"), "--controller", cluster.endpoint, "ps",
                stdout=asyncio.subprocess.DEVNULL,
            )
            await asyncio.wait_for(done.wait(), 60)
            run.cli.append((time.perf_counter() - started) * 1000)
        assert ctl is not None
        await ctl.close(signal.SIGINT)
        run.follower = follow_counts(work / "follow.out", work / "follow.err")
    finally:
        if ctl is not None:
            await ctl.close()
        await cluster.close()


async def wait_for_file(path: Path, needle: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_bytes()[-4096:]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} not in {path} within {timeout:.0f}s")
        await asyncio.sleep(0.05)  # poll


def follow_counts(out: Path, err: Path) -> dict[str, int]:
    with open(out, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    markers = [ln for ln in err.read_text().splitlines() if ln.endswith(" lines skipped]")]
    skipped = sum(int(ln.rsplit("[", 1)[1].split()[0]) for ln in markers)
    return {"lines": lines, "markers": len(markers), "skipped": skipped}


# --------------------------------------------------------------------- the follower


async def follow_main(endpoint: str, pub: str, prefix: str, expect: int) -> None:
    """``output.py follow PUB PREFIX EXPECT``: count what a follower receives; says ``seen``
    once a line arrived; prints the counts as JSON once the flood's EXPECT lines are all
    accounted for (received, or counted in skip markers), or on SIGTERM. The flooder's
    "ready" lines are not flood lines: they come before it, and are counted apart."""
    loop = asyncio.get_running_loop()
    counts = {"events": 0, "lines": 0, "ready": 0, "markers": 0, "skipped": 0}
    client = AsyncClient(endpoint)  # the controller's, for the replays that fill gaps
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    said = False
    stream: AsyncIterator = client.events([prefix], endpoint=pub)
    try:
        async for event in stream:
            if not isinstance(event, ReceivedEvent):
                continue
            counts["events"] += 1
            if "skipped" in event.data:
                counts["markers"] += 1
                counts["skipped"] += event.data["skipped"]
            else:
                text = event.data["text"]
                ready = text.count("ready")
                counts["ready"] += ready
                counts["lines"] += text.count("\n") + 1 - ready
                if not said:
                    print("seen", flush=True)
                    said = True
            if counts["lines"] + counts["skipped"] >= expect:
                break
    except asyncio.CancelledError:
        pass
    finally:
        await stream.aclose()
        await client.close()
    print(json.dumps(counts), flush=True)


# --------------------------------------------------------------------- peers


def measure_peers(run: Run, args: argparse.Namespace) -> None:
    python, why = peers.ensure_venv(log)
    flood, _ = write_scripts()
    for name in PEERS:
        if python is None:
            run.peers[name] = {"error": why}
            continue
        log(f"{name}: measuring (own daemon, own venv)")
        argv = [
            str(python), str(HERE / "output_peers.py"), name, "--flooder", sys.executable,
            "--flood", str(flood), "--mb", str(run.mb), "--rounds", str(args.rounds),
            "--expect", ",".join(f"{s}:{flood_lines(s, run.mb) * len(LINES[s])}" for s in SHAPES),
            "--status-calls", str(args.ps_calls), "--status-gap-ms", str(args.ps_gap_ms),
        ]
        run.peers[name] = peers_run(argv, 300 + args.rounds * 400)
        if "error" in run.peers[name]:
            log(f"{name}: n/a ({run.peers[name]['error']})")


def peers_run(argv: list[str], timeout: float) -> dict[str, Any]:
    import subprocess

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f}s"}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": f"exited {proc.returncode} without a result"}


# --------------------------------------------------------------------- the report


def ms_per_mib(run: Run, who: str, shape: str) -> float | None:
    values = run.cpu.get((who, shape))
    if not values:
        peer = run.peers.get(who, {}).get("cpu", {}).get(shape)
        values = peer if peer else None
    return min(values) / run.mb * 1000 if values else None


def mib_per_s(run: Run, who: str, shape: str) -> str:
    values = run.seconds.get((who, shape)) or run.peers.get(who, {}).get("seconds", {}).get(shape)
    return f"{run.mb / min(values):,.0f}" if values else "n/a"


def cpu_section(run: Run, rounds: int) -> list[str]:
    everyone = ("bare", "gaffer", "gaffer+follower", "gaffer+log", *PEERS)
    rows = []
    for shape in SHAPES:
        bare = ms_per_mib(run, "bare", shape)
        for who in everyone:
            mine = ms_per_mib(run, who, shape)
            rows.append([
                shape, who, f"{mine:.2f}" if mine is not None else "n/a",
                f"{mine / bare:.1f}x" if mine and bare else "n/a", mib_per_s(run, who, shape),
            ])
    follow = [
        f"- the +follower of `{shape}` (limit 2,000 lines/s, 256 KiB/s per stream) received "
        f"{c['lines']:,} lines and {c['markers']} skip markers counting {c['skipped']:,}: "
        + ("every one of the flood's " if c["lines"] + c["skipped"] == c["expected"] else "NOT the ")
        + f"{c['expected']:,} lines accounted for"
        for shape, c in run.follow.items()
    ]
    return [
        "### CPU per MiB captured (ms of CPU, lower is better)",
        "",
        f"A flooder writes {run.mb:g} MiB at full speed and exits; `short` lines are `y\\n` "
        "(what `yes` writes), `log` lines are 100 bytes. Lowest CPU of "
        f"{rounds} rounds. MiB/s is the wall-clock rate the flood was captured at (the "
        "flooder shares the 2 CPUs with the reader).",
        "",
        results.table(["lines", "reader", "CPU ms/MiB", "x bare", "MiB/s"], rows, align="llrrr"),
        "",
        "- bare: a Python process doing nothing but waiting on the pipe with epoll and reading "
        "what is there, up to 256 KiB a wake-up (gaffer's read pattern, without the rest).",
        "- gaffer: `gaffer-agent` CPU (user + system) from the flooder's start to the exit event "
        "(published after the pipe is drained): ring buffer only; +follower: a subscriber to "
        "the instance's `output.` topic at the controller; +log: the template's `log` files "
        "(defaults: 10 MiB, 5 backups; each line gets a timestamp, so `short` lines take 15x "
        "their size on disk).",
        "- circus: `stdout_stream.class = FileStream`; supervisor: its default `stdout_logfile` "
        "(AUTO, 50 MB, 10 backups); the daemon's CPU from the program's start to its exit.",
        *follow,
    ]


def ps_section(run: Run, calls: int, gap: float) -> list[str]:
    rows = []
    for condition, values in run.ps.items():
        rss = run.rss.get(condition, {})
        rows.append([
            f"gaffer, {condition}", str(len(values)), f"{percentile(values, 50):.1f}",
            f"{percentile(values, 99):.1f}", f"{max(values):.1f}",
            " / ".join(f"{a:.0f}->{b:.0f}" for a, b in (rss.get(n, (0, 0)) for n in ("controller", "agent"))),
        ])
    for name in PEERS:
        status = run.peers.get(name, {}).get("status")
        if status:
            rows.append([
                f"{name} `{status['call']}`, flood captured", str(len(status["ms"])),
                f"{percentile(status['ms'], 50):.1f}", f"{percentile(status['ms'], 99):.1f}",
                f"{max(status['ms']):.1f}", "",
            ])
    lines = [
        "### `ps` while a flood is followed (ms, lower is better)",
        "",
        f"{calls} `ps` requests through `AsyncClient`, {gap * 1000:.0f} ms apart: idle; while an "
        "instance runs `yes` (after one unmeasured call: the first `ps` after any spawn takes "
        "about 0.1 s to sample the new process, flood or not); and while a real `gafferctl logs "
        "-f` follows it. RSS in MB of controller / agent, before -> after the calls.",
        "",
        results.table(["condition", "calls", "p50", "p99", "max", "RSS MB ctl / agent"], rows,
                      align="lrrrrl"),
    ]
    if run.cli:
        lines += ["", f"- whole `gafferctl ps` runs (Python start included) under flood + follower: "
                      f"p50 {percentile(run.cli, 50):.0f} ms over {len(run.cli)} runs"]
    if run.follower:
        f = run.follower
        lines += [f"- the `gafferctl logs -f` follower printed {f['lines']:,} lines and "
                  f"{f['markers']} `[N lines skipped]` markers ({f['skipped']:,} lines skipped)"]
    return lines


def verdicts(run: Run) -> list[str]:
    out = []
    followed = run.ps.get("flood+follower")
    if followed:
        p99 = percentile(followed, 99)
        met = "**met**" if p99 < PS_TARGET_MS else "**not met**"
        out.append(f"- `ps` p99 while a `yes` flood is followed: {p99:.1f} ms (target < "
                   f"{PS_TARGET_MS:.0f} ms): {met}")
    for shape in SHAPES:
        mine, bare = ms_per_mib(run, "gaffer", shape), ms_per_mib(run, "bare", shape)
        if mine and bare:
            out.append(f"- capturing `{shape}` lines costs gaffer {mine / bare:.1f}x the bare reader's CPU")
    return out


def report(run: Run, args: argparse.Namespace, started: datetime.datetime) -> str:
    info = results.machine()
    versions = [f"gaffer {gaffer.__version__} on uvloop {uvloop.__version__}"]
    versions += [f"{n} {run.peers[n]['version']}" if "version" in run.peers.get(n, {}) else f"{n} n/a"
                 for n in PEERS]
    problems = run.problems + [f"- {n}: {p['error']}" for n, p in run.peers.items() if "error" in p]
    if args.skip_peers:
        problems.append("- peers skipped (--skip-peers)")
    return "\n".join([
        "## Output",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/output.py{' --quick' if args.quick else ''}`: "
        f"{info['cpus']} CPUs ({info['cpu']}), {info['kernel']}, {info['python']}, load average "
        f"at start {info['load']}.",
        f"Versions: {', '.join(versions)}.",
        "",
        *cpu_section(run, args.rounds),
        "",
        *ps_section(run, args.ps_calls, args.ps_gap_ms / 1000),
        "",
        "### Targets",
        "",
        *verdicts(run),
        *(["", "### Not measured", "", *problems] if problems else []),
    ])


# --------------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--mb", type=float, default=256.0, help="MiB per flood (default %(default)s)")
    add("--rounds", type=int, default=3, help="best of (default %(default)s)")
    add("--ps-calls", type=int, default=200, help="ps calls per condition (default %(default)s)")
    add("--ps-gap-ms", type=float, default=20.0, help="between ps calls (default %(default)s)")
    add("--cli-runs", type=int, default=10, help="whole gafferctl ps runs (default %(default)s)")
    add("--skip-peers", action="store_true", help="gaffer and bare only")
    add("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.rounds, args.ps_calls, args.cli_runs, args.no_write = 16.0, 1, 30, 2, True
    if not (0 < args.mb <= 4096) or args.rounds < 1 or not (1 <= args.ps_calls <= 10_000):
        parser.error("--mb must be in (0, 4096], --rounds >= 1, --ps-calls in 1..10000")
    return args


async def measure(run: Run, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cpu-", dir=WORK) as tmp:
        await measure_cpu(run, args.rounds, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="ps-", dir=WORK) as tmp:
        await measure_ps(run, args.ps_calls, args.ps_gap_ms / 1000, args.cli_runs, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["follow"]:
        uvloop.run(follow_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    run = Run(mb=args.mb)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measure(run, args))
        if not args.skip_peers:
            measure_peers(run, args)
    except KeyboardInterrupt:
        log("interrupted: every process started so far has been stopped")
        return 130
    markdown = report(run, args, started)
    print(markdown)
    if not args.no_write:
        log(f"written to {results.write_section('output', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
