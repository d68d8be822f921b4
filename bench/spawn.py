"""Spawn benchmark: gaffer's local Manager against the bare limit, circus and supervisor.

Everything is measured in one run on one machine, because machines are noisy and only ratios
mean something:

1. scale 0 -> N running of one template of ``sleep 3600`` (startsecs 0, flapping off), timed
   from the scale call until N ``proc.<template>.running`` events have arrived; gaffer twice,
   without output capture and with its default capture (stdout+stderr into pipes);
   **bare**: the physical limit on this loop, a tight uvloop loop of ``os.posix_spawn`` (its
   own session, stdio on /dev/null) + ``pidfd_open`` + ``add_reader``; circus and supervisor doing the same through their own
   control APIs, in their own venv (``bench/peers.py``).
2. crash to replacement: SIGKILL one of 10 running instances and time until its replacement
   exists (gaffer: the ``proc.<t>.spawn`` event with a new pid; bare: the respawn from the
   pidfd callback; peers: see ``bench/peers.py``), p50 and p99 over K samples; gaffer also
   with its default flapping policy (``gaffer+flapping``: counted per instance, so a pool
   large enough that no instance is killed ``attempts`` times is never suspended).
3. cold start (``cold``, ``bench/coldstart.py``): the real ``gaffer start FILE``, ``circusd``
   and ``supervisord``, each from its own command line to ``--cold-size`` ``sleep 3600``
   children exec'd (seen in /proc), ``--cold-rounds`` times; median and spread.
4. a table with the ratios, printed and written to the ``spawn`` section of bench/RESULTS.md.

Each scale is measured ``--rounds`` times (gaffer and bare interleaved, in a rotating order)
and the best round is kept: on a shared machine noise only ever adds time, so the fastest
round is the closest to what the code costs; the spread is printed beside it. Every process
is cleaned up by pid, also on Ctrl-C.

    .venv/bin/python bench/spawn.py [--sizes 100,500,1000] [--crash-samples 200]
                                    [--skip-peers] [--quick] [--profile FILE] [--limits]
                                    [--cold-size 1000] [--cold-rounds 5] [--only-cold]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import io
import math
import os
import pstats
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import coldstart  # noqa: E402
import gaffer  # noqa: E402
import peers  # noqa: E402
import results  # noqa: E402
from gaffer.agent.manager import Manager  # noqa: E402
from gaffer.agent.tracking import Tracker  # noqa: E402
from gaffer.common.bus import EventBus, Subscription  # noqa: E402
from gaffer.common.template import Flapping, Template, parse_template  # noqa: E402

SLEEP = shutil.which("sleep") or "/bin/sleep"
ARGV = (SLEEP, "3600")
TEMPLATE = "sleeper"
CRASH_POOL = 10
SAMPLE_TIMEOUT = 5.0
STOP_TIMEOUT = 60.0
TARGET_RATIO = 0.70
TARGET_P99_MS = 5.0
TARGET_COLD = 5.0
PEERS = ("circus", "supervisor")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 instances hold up to 3,000 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def sleeper(
    capture: bool, count: int = 0, limits: dict[str, Any] | None = None, flapping: bool = False
) -> Template:
    """``limits``: template fields (rlimits, umask, nice) that take the process off the fast path;
    ``flapping``: the default crash-loop policy instead of none."""
    data: dict[str, Any] = {
        **(limits or {}),
        "cmd": SLEEP,
        "args": ["3600"],
        "numprocesses": count,
        "startsecs": 0,
        "flapping": flapping,
        "graceful_timeout": 5,
    }
    if not capture:
        data["redirect_output"] = []
    return parse_template(data, name=TEMPLATE)


# --------------------------------------------------------------------- gaffer


async def collect(sub: Subscription, count: int, timeout: float) -> None:
    """Wait for ``count`` distinct instance ids on ``sub``."""
    seen: set[str] = set()
    async with asyncio.timeout(timeout):
        while len(seen) < count:
            seen.add((await sub.get()).data["id"])


async def close_manager(manager: Manager) -> None:
    """Graceful shutdown; if that hangs, KILL every process group the Manager still holds."""
    try:
        await asyncio.wait_for(manager.shutdown(), STOP_TIMEOUT)
        return
    except TimeoutError:
        log(f"gaffer: shutdown took over {STOP_TIMEOUT:.0f}s, sending KILL")
    for template in manager.templates():
        manager.kill(template.name, "KILL", group=True)
    quiet = lambda: not any(i["pid"] for i in manager.instances())  # noqa: E731
    await manager.wait_until(quiet, timeout=10)


def new_manager(tracked: bool) -> Manager:
    """A Manager; ``tracked``: with the descendant tracking an agent and ``gaffer start`` use by
    default (a cgroup per instance where the host allows it, else subreaper scans)."""
    if not tracked:
        return Manager(node="bench", bus=EventBus())
    tracker = Tracker.for_host("bench", "bench-agent", "auto")
    return Manager(node="bench", bus=EventBus(), tracker=tracker)


async def close_tracked(manager: Manager) -> None:
    await close_manager(manager)
    if manager.tracker is not None:
        await manager.tracker.aclose(finish=True)


async def gaffer_scale(n: int, capture: bool, tracked: bool = False,
                       limits: dict[str, Any] | None = None) -> float:
    manager = new_manager(tracked)
    try:
        manager.add(sleeper(capture, limits=limits))
        with manager.bus.subscribe(f"proc.{TEMPLATE}.running") as sub:
            started = time.perf_counter()
            manager.scale(TEMPLATE, n)
            await collect(sub, n, 30 + n * 0.05)
            return time.perf_counter() - started
    finally:
        await close_tracked(manager)


def flapping_pool(samples: int) -> int:
    """Instances enough that round-robin kills hit none ``attempts`` times (default policy):
    each instance counts its own exits, and none of these samples may be a suspension."""
    return max(CRASH_POOL, math.ceil(samples / (Flapping().attempts - 1)))


async def gaffer_crash(
    samples: int, capture: bool = True, tracked: bool = False, flapping: bool = False
) -> list[float]:
    """SIGKILL instances round-robin; ms until the spawn event of the same id with a new pid."""
    manager = new_manager(tracked)
    latencies: list[float] = []
    pool = flapping_pool(samples) if flapping else CRASH_POOL
    try:
        with manager.bus.subscribe(f"proc.{TEMPLATE}.spawn") as sub:
            manager.add(sleeper(capture, pool, flapping=flapping))
            await collect(sub, pool, 30)
            deadline = time.perf_counter() + 30 + samples * 0.1
            for sample in range(samples):
                if time.perf_counter() > deadline:
                    break
                target = f"{TEMPLATE}.{sample % pool + 1}"
                old = next(i["pid"] for i in manager.instances(TEMPLATE) if i["id"] == target)
                started = time.perf_counter()
                manager.kill(target, "KILL")
                async with asyncio.timeout(SAMPLE_TIMEOUT):
                    while True:
                        event = await sub.get()
                        if event.data["id"] == target and event.data["pid"] != old:
                            break
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await close_tracked(manager)
    return latencies


# --------------------------------------------------------------------- bare

BARE_STDIO = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]


class BarePool:
    """The least a manager can do: posix_spawn (the cheapest way Python has to start a child;
    gaffer uses it too where it can), a pidfd on the loop, waitpid; respawn if asked."""

    def __init__(self, loop: asyncio.AbstractEventLoop, respawn: bool = False) -> None:
        self.loop = loop
        self.respawn = respawn
        self.children: dict[int, tuple[int, int]] = {}
        self.waiters: dict[int, asyncio.Future[int]] = {}
        self._empty: asyncio.Future[None] | None = None

    def spawn(self, slot: int) -> int:
        pid = os.posix_spawn(ARGV[0], ARGV, os.environ, file_actions=BARE_STDIO, setsid=True)
        pidfd = os.pidfd_open(pid)
        self.loop.add_reader(pidfd, self._exited, slot)
        self.children[slot] = (pid, pidfd)
        return pid

    def pid(self, slot: int) -> int:
        return self.children[slot][0]

    def _exited(self, slot: int) -> None:
        pid, pidfd = self.children.pop(slot)
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        os.waitpid(pid, 0)
        if self.respawn:
            pid = self.spawn(slot)
            waiter = self.waiters.pop(slot, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(pid)
        elif not self.children and self._empty is not None and not self._empty.done():
            self._empty.set_result(None)

    async def close(self) -> None:
        """KILL every child through its pidfd (no pid reuse possible) and wait for all exits."""
        self.respawn = False
        if not self.children:
            return
        self._empty = self.loop.create_future()
        for _pid, pidfd in list(self.children.values()):
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await asyncio.wait_for(self._empty, STOP_TIMEOUT)


async def bare_scale(n: int) -> float:
    pool = BarePool(asyncio.get_running_loop())
    try:
        started = time.perf_counter()
        for slot in range(n):
            pool.spawn(slot)
        return time.perf_counter() - started
    finally:
        await pool.close()


async def bare_crash(samples: int) -> list[float]:
    loop = asyncio.get_running_loop()
    pool = BarePool(loop, respawn=True)
    latencies: list[float] = []
    try:
        for slot in range(CRASH_POOL):
            pool.spawn(slot)
        deadline = time.perf_counter() + 30 + samples * 0.1
        for sample in range(samples):
            if time.perf_counter() > deadline:
                break
            slot = sample % CRASH_POOL
            waiter = pool.waiters[slot] = loop.create_future()
            started = time.perf_counter()
            os.kill(pool.pid(slot), signal.SIGKILL)
            await asyncio.wait_for(waiter, SAMPLE_TIMEOUT)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return latencies


# --------------------------------------------------------------------- running it


@dataclass
class Run:
    sizes: list[int]
    scale: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # who -> n -> secs
    crash: dict[str, list[float]] = field(default_factory=dict)  # who -> ms
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    cold: dict[str, list[coldstart.Outcome]] = field(default_factory=dict)
    cold_size: int = 0

    def add_scale(self, who: str, n: int, seconds: float) -> None:
        self.scale.setdefault(who, {}).setdefault(n, []).append(seconds)


LOCAL = {
    "bare": lambda n: bare_scale(n),
    "gaffer": lambda n: gaffer_scale(n, capture=False),
    "gaffer+cap": lambda n: gaffer_scale(n, capture=True),
    "gaffer+tracked": lambda n: gaffer_scale(n, capture=True, tracked=True),
}
LIMITED = {
    "gaffer+umask": lambda n: gaffer_scale(n, capture=False, limits={"umask": "022"}),
    "gaffer+limits": lambda n: gaffer_scale(
        n, capture=False, limits={"rlimits": {"nofile": 1024, "core": 0}, "nice": 1}),
}
"""With ``--limits``: a umask alone (Popen's umask=), rlimits and nice (the execwrap helper)."""


async def measure_local(run: Run, rounds: int, crash_samples: int, limits: bool = False) -> None:
    contenders = {**LOCAL, **(LIMITED if limits else {})}
    order = list(contenders)
    for round_no in range(rounds):
        for n in run.sizes:
            for who in order:
                seconds = await contenders[who](n)
                run.add_scale(who, n, seconds)
                log(f"round {round_no + 1}/{rounds}  {who:<11} 0 -> {n:>5} running in "
                    f"{seconds:7.3f}s  ({n / seconds:8.0f}/s)")
        order = order[1:] + order[:1]
    if crash_samples > 0:
        run.crash["bare"] = await bare_crash(crash_samples)
        log(f"bare crash: {len(run.crash['bare'])} samples")
        run.crash["gaffer"] = await gaffer_crash(crash_samples)
        log(f"gaffer crash: {len(run.crash['gaffer'])} samples")
        run.crash["gaffer+tracked"] = await gaffer_crash(crash_samples, tracked=True)
        log(f"gaffer+tracked crash: {len(run.crash['gaffer+tracked'])} samples")
        run.crash["gaffer+flapping"] = await gaffer_crash(crash_samples, flapping=True)
        log(f"gaffer+flapping crash: {len(run.crash['gaffer+flapping'])} samples")


async def profile_gaffer(n: int, path: Path) -> str:
    """cProfile of one gaffer scale to ``n`` (with capture); the top of it by own time."""
    profiler = cProfile.Profile()
    manager = Manager(node="bench", bus=EventBus())
    try:
        manager.add(sleeper(True))
        with manager.bus.subscribe(f"proc.{TEMPLATE}.running") as sub:
            profiler.enable()
            manager.scale(TEMPLATE, n)
            await collect(sub, n, 30 + n * 0.05)
            profiler.disable()
    finally:
        profiler.disable()
        await close_manager(manager)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def measure_cold(run: Run, args: argparse.Namespace) -> None:
    """The ``cold`` case: real daemons from their command lines (``bench/coldstart.py``)."""
    python = None
    if not args.skip_peers:
        python, why = peers.ensure_venv(log)
        if python is None:
            log(f"cold: circus and supervisor n/a ({why})")
    run.cold_size = args.cold_size
    run.cold = coldstart.measure(args.cold_size, args.cold_rounds, python, log)


def measure_peers(run: Run, args: argparse.Namespace) -> None:
    python, why = peers.ensure_venv(log)
    for name in PEERS:
        if python is None:
            run.peers[name] = {"error": why}
            continue
        log(f"{name}: measuring (own daemon, own venv)")
        peer_args = [
            "--sizes", ",".join(map(str, run.sizes)),
            "--rounds", str(args.rounds),
            "--crash-samples", str(args.peer_crash_samples),
            "--crash-seconds", str(args.peer_crash_seconds),
            "--poll-ms", str(args.poll_ms),
        ]
        budget = args.rounds * sum(150 + n for n in run.sizes) + 2 * args.peer_crash_seconds + 300
        run.peers[name] = peers.run(python, name, peer_args, budget)
        if "error" in run.peers[name]:
            log(f"{name}: n/a ({run.peers[name]['error']})")


# --------------------------------------------------------------------- the report


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def scale_seconds(run: Run, who: str, n: int) -> list[float]:
    if who in LOCAL or who in LIMITED:
        return run.scale.get(who, {}).get(n, [])
    outcomes = run.peers.get(who, {}).get("scale", {}).get(str(n), [])
    return [o["seconds"] for o in outcomes if "seconds" in o]


def rate(run: Run, who: str, n: int) -> float | None:
    """Instances per second in the best round."""
    seconds = scale_seconds(run, who, n)
    return n / min(seconds) if seconds else None


def spread(run: Run, who: str, n: int) -> str:
    seconds = scale_seconds(run, who, n)
    if not seconds:
        return f"{who} n/a"
    return f"{who} {n / max(seconds):,.0f}-{n / min(seconds):,.0f}"


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}/s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def peer_crash(run: Run, who: str, probe: str) -> list[float] | None:
    entry = run.peers.get(who, {}).get("crash", {}).get(probe, {})
    return entry.get("samples") or None


CRASH_ROWS = ("bare", "gaffer", "gaffer+tracked", "gaffer+flapping", "circus/proc", "circus/events",
              "supervisor/proc", "supervisor/api")


def crash_rows(run: Run, poll_ms: float) -> list[list[str]]:
    how = {
        "bare": "respawned in the pidfd callback (a future)",
        "gaffer": "`proc.<t>.spawn` event with a new pid",
        "gaffer+tracked": "the same, with the agent's default descendant tracking",
        "gaffer+flapping": "the same as gaffer, default flapping policy (see below)",
        "circus/proc": "new child in /proc (circus not asked)",
        "circus/events": "`spawn` event on circus's pub/sub",
        "supervisor/proc": "new child in /proc (supervisor not asked)",
        "supervisor/api": f"`getProcessInfo` every {poll_ms:g} ms (wakes it)",
    }
    rows = []
    for label in CRASH_ROWS:
        explain = how[label]
        if "/" in label:
            who, probe = label.split("/")
            values = peer_crash(run, who, probe)
            peer = run.peers.get(who, {})
            error = (peer.get("error") or peer.get("crash", {}).get("error")
                     or peer.get("crash", {}).get(probe, {}).get("error"))
        else:
            values = run.crash.get(label) or None
            error = None
        if values:
            rows.append([label, str(len(values)), f"{percentile(values, 50):.2f}",
                         f"{percentile(values, 99):.2f}", f"{max(values):.2f}", explain])
        else:
            rows.append([label, "0", "n/a", "n/a", "n/a", error or "not measured"])
    return rows


def verdicts(run: Run) -> list[str]:
    n = max(run.sizes)
    lines = []
    bare = rate(run, "bare", n)
    for who in ("gaffer", "gaffer+cap", "gaffer+tracked"):
        mine = rate(run, who, n)
        if mine is not None and bare:
            ok = "met" if mine / bare >= TARGET_RATIO else "NOT met"
            lines.append(f"- {who} at N={n}: {mine / bare:.2f}x bare "
                         f"(target >= {TARGET_RATIO:.2f}): **{ok}**")
    for peer, mine_who in (("circus", "gaffer"), ("supervisor", "gaffer+cap")):
        theirs, mine = rate(run, peer, n), rate(run, mine_who, n)
        if theirs is None or mine is None:
            lines.append(f"- faster than {peer} at N={n}: n/a")
        else:
            ok = "yes" if mine > theirs else "**NO**"
            lines.append(f"- faster than {peer} at N={n}: {ok} ({mine / theirs:.2f}x)")
    for who in ("gaffer", "gaffer+tracked", "gaffer+flapping"):
        values = run.crash.get(who)
        if values:
            p99 = percentile(values, 99)
            ok = "met" if p99 < TARGET_P99_MS else "NOT met"
            lines.append(f"- {who} crash -> replacement p99 {p99:.2f} ms "
                         f"(target < {TARGET_P99_MS:.0f} ms): **{ok}**")
    return lines


SCALE_NOTES = [
    "- bare: `os.posix_spawn(setsid=True, stdio=/dev/null)` + `pidfd_open` + `add_reader` in "
    "a tight loop on uvloop: the limit for this machine and Python.",
    "- gaffer: `redirect_output = []`; gaffer+cap: the default, stdout and stderr into "
    "pipes read by the loop. Timed from `scale()` to the N-th `proc.<t>.running` event.",
    "- gaffer+tracked: gaffer+cap with the descendant tracking an agent and `gaffer start` "
    "use by default (a cgroup per instance where the host allows it, moved in just after a "
    "burst of spawns; else subreaper scans): what a user gets.",
    "- circus: a watcher at 0 is stopped, so `set numprocesses N` then `start`; timed to the "
    "N-th `spawn` event on its pub/sub (polling `list` costs circus a psutil call per "
    "process and slowed it several-fold), then checked with `list`; no output capture "
    "(its default).",
    "- supervisor: `numprocs = N`, `autostart = false`, `startsecs = 0`; timed over "
    "`startProcessGroup(wait=True)`, which answers once all are RUNNING, then checked "
    "with `getAllProcessInfo`; output captured to log files (its default).",
    "- gaffer+umask, gaffer+limits (with `--limits`): gaffer without capture, the template with "
    "`umask` alone (Popen's `umask=`), or with `rlimits` and `nice` (a second exec through "
    "`execwrap`, a Python start-up per child).",
    "- Like for like: gaffer/circus compares runs without capture, "
    "gaffer+cap/supervisor runs with capture.",
]
CRASH_INTRO = (
    f"{CRASH_POOL} instances running (gaffer with capture); SIGKILL one, round-robin; time "
    "until its replacement process exists. circus respawns on its `check_delay` timer "
    "(5 s, its config default), so its kills are spread at random over that period. "
    "supervisord respawns on the pass of its loop after the one that reaped, which waits "
    "up to 1 s unless something (a status request included) wakes it: the `/proc` rows "
    "are what an unobserved peer does, the `api` row what a polled one does. gaffer+flapping: "
    "the default flapping policy (5 exits in 30 s), counted per instance, over a pool of "
    "max(10, samples / 4) instances so that none is killed 5 times: every kill is replaced, "
    "none suspended."
)


def header(run: Run, args: argparse.Namespace, started: datetime.datetime) -> list[str]:
    info = results.machine()
    versions = [f"gaffer {gaffer.__version__} on uvloop {uvloop.__version__}"]
    for name in PEERS:
        peer = run.peers.get(name, {})
        versions.append(f"{name} {peer['version']}" if "version" in peer else f"{name} n/a")
    return [
        "## Spawn",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/spawn.py"
        f"{' --quick' if args.quick else ''}`: {info['cpus']} CPUs ({info['cpu']}), "
        f"{info['kernel']}, {info['python']}, load average at start {info['load']}.",
        f"Versions: {', '.join(versions)}. RLIMIT_NOFILE {args.nofile[0]}.",
    ]


def scale_section(run: Run, rounds: int) -> list[str]:
    everyone = (*LOCAL, *(who for who in LIMITED if who in run.scale), *PEERS)
    rows = []
    for n in run.sizes:
        r = {who: rate(run, who, n) for who in everyone}
        rows.append([
            str(n), *(fmt_rate(r[who]) for who in everyone),
            fmt_ratio(r["gaffer"], r["bare"]), fmt_ratio(r["gaffer+cap"], r["bare"]),
            fmt_ratio(r["gaffer"], r["circus"]), fmt_ratio(r["gaffer+cap"], r["supervisor"]),
        ])
    headers = ["N", *everyone, "gaffer/bare", "gaffer+cap/bare", "gaffer/circus",
               "gaffer+cap/supervisor"]
    top = max(run.sizes)
    return [
        "### Scale 0 -> N running (instances per second, higher is better)",
        "",
        f"Best of {rounds} rounds (noise on a shared machine only adds time); circus and "
        "supervisor from a daemon started fresh for each N and round.",
        "",
        results.table(headers, rows),
        "",
        f"Spread over the rounds at N={top} (instances/s, slowest-fastest): "
        + ", ".join(spread(run, who, top) for who in everyone) + ".",
        "",
        *SCALE_NOTES,
    ]


def crash_section(run: Run, poll_ms: float) -> list[str]:
    ratios = []
    mine, bare = run.crash.get("gaffer"), run.crash.get("bare")
    if mine and bare:
        ratios.append(f"gaffer / bare: p50 {percentile(mine, 50) / percentile(bare, 50):.2f}x, "
                      f"p99 {percentile(mine, 99) / percentile(bare, 99):.2f}x")
    for other in (label for label in CRASH_ROWS if "/" in label):
        theirs = peer_crash(run, *other.split("/"))
        if mine and theirs:
            p50 = percentile(theirs, 50) / percentile(mine, 50)
            p99 = percentile(theirs, 99) / percentile(mine, 99)
            ratios.append(f"{other} takes {times(p50)} gaffer's p50, {times(p99)} its p99")
    table = results.table(
        ["who", "samples", "p50 ms", "p99 ms", "max ms", "replacement seen as"],
        crash_rows(run, poll_ms), align="lrrrrl",
    )
    return [
        "### Crash -> replacement running (ms, lower is better)",
        "",
        CRASH_INTRO,
        "",
        table,
        "",
        *(f"- {line}" for line in ratios),
    ]


def cold_seconds(run: Run, who: str) -> list[float]:
    return [o.seconds for o in run.cold.get(who, []) if o.seconds is not None]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


COLD_NOTES = [
    "- Timed from just before the command is spawned until the N-th child of the daemon has "
    "exec'd `sleep` (its `/proc/<pid>/cmdline`), read from `/proc/<daemon>/task/*/children` "
    f"every {coldstart.POLL * 1000:g} ms: the daemon is never asked. \"first\": the first "
    "child exec'd (start-up before any spawn). CPU: the daemon's user + system time by then.",
    "- gaffer: `gaffer start FILE` (embedded controller and agent, the defaults: output "
    "captured, flapping on, descendants tracked, the console printing to a file); "
    "circus: `circusd FILE` (a watcher of N, its defaults); supervisor: `supervisord -c FILE` "
    "(`nodaemon`, `numprocs = N`, `autostart`, `startsecs = 0`).",
    "- Everything is byte-compiled first (pip compiles the peers when it installs them).",
    "- Rounds interleaved in a rotating order; the ratio is of medians.",
]


def cold_section(run: Run, args: argparse.Namespace, started: datetime.datetime) -> str:
    info = results.machine()
    n = run.cold_size
    rows = []
    for who in coldstart.CONTENDERS:
        secs = cold_seconds(run, who)
        outcomes = [o for o in run.cold.get(who, []) if o.seconds is not None]
        errors = [o.error for o in run.cold.get(who, []) if o.error]
        if not secs:
            rows.append([who, "0", "n/a", "n/a", "n/a", "n/a", "n/a", errors[0] if errors else
                         "not measured"])
            continue
        rows.append([
            who, str(len(secs)), f"{median(secs):.3f}", f"{min(secs):.3f}-{max(secs):.3f}",
            f"{n / median(secs):,.0f}/s",
            f"{median([o.first for o in outcomes if o.first is not None]):.3f}",
            f"{median([o.cpu for o in outcomes if o.cpu is not None]):.2f}",
            "; ".join(errors) if errors else "",
        ])
    lines = [
        "## Cold start",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/spawn.py` (its `cold` case, "
        f"`bench/coldstart.py`): {info['cpus']} CPUs ({info['cpu']}), {info['kernel']}, "
        f"{info['python']}, load average at start {info['load']}.",
        "",
        f"### `gaffer start`, `circusd`, `supervisord`: 0 -> {n:,} `sleep 3600` running "
        "(seconds, lower is better)",
        "",
        results.table(
            ["who", "rounds", "median s", "spread s", "rate", "first s", "daemon CPU s",
             "errors"],
            rows, align="lrrrrrrl",
        ),
        "",
        *COLD_NOTES,
        "",
        "### Target",
        "",
    ]
    mine = cold_seconds(run, "gaffer")
    for peer in ("circus", "supervisor"):
        theirs = cold_seconds(run, peer)
        if not mine or not theirs:
            lines.append(f"- gaffer against {peer}: n/a")
            continue
        ratio = median(theirs) / median(mine)
        best = min(theirs) / min(mine)
        ok = "met" if ratio >= TARGET_COLD else "NOT met"
        cpu = [o.cpu for o in run.cold.get(peer, []) if o.cpu is not None]
        my_cpu = [o.cpu for o in run.cold.get("gaffer", []) if o.cpu is not None]
        used = f"; its daemon used {median(cpu) / median(my_cpu):.1f}x gaffer's CPU" if (
            cpu and my_cpu and median(my_cpu) > 0) else ""
        lines.append(f"- {peer} takes {ratio:.2f}x gaffer's time (medians; best rounds "
                     f"{best:.2f}x{used}; target >= {TARGET_COLD:g}x): **{ok}**")
    return "\n".join(lines)


def problems(run: Run, skipped: bool) -> list[str]:
    found = [f"- {name}: {peer['error']}" for name, peer in run.peers.items() if "error" in peer]
    for name, peer in run.peers.items():
        for n, outcomes in peer.get("scale", {}).items():
            found += [f"- {name} scale to {n}: {o['error']}" for o in outcomes if "error" in o]
    if skipped:
        found.append("- peers skipped (--skip-peers)")
    return ["", "### Not measured", "", *found] if found else []


def report(run: Run, args: argparse.Namespace, started: datetime.datetime) -> str:
    return "\n".join([
        *header(run, args, started),
        "",
        *scale_section(run, args.rounds),
        "",
        *crash_section(run, args.poll_ms),
        "",
        "### Targets",
        "",
        *verdicts(run),
        *problems(run, args.skip_peers),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--sizes", default="100,500,1000", help="comma-separated N (default %(default)s)")
    add("--crash-samples", type=int, default=200, help="gaffer and bare (default %(default)s)")
    add("--peer-crash-samples", type=int, default=30,
        help="per peer and probe (default %(default)s)")
    add("--peer-crash-seconds", type=float, default=45.0,
        help="time bound per peer and probe (default %(default)s)")
    add("--rounds", type=int, default=3, help="scale rounds, best kept (default %(default)s)")
    add("--poll-ms", type=float, default=5.0,
        help="peer status poll interval (default %(default)s)")
    add("--skip-peers", action="store_true", help="measure gaffer and bare only")
    add("--limits", action="store_true",
        help="also scale templates with a umask (gaffer+umask) and with rlimits + nice (gaffer+limits)")
    add("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    add("--profile", type=Path, metavar="FILE",
        help="also cProfile one gaffer scale to the largest N into FILE and print its top")
    add("--cold-size", type=int, default=1000,
        help="children of the cold case (default %(default)s)")
    add("--cold-rounds", type=int, default=5,
        help="cold starts per contender (default %(default)s)")
    add("--skip-cold", action="store_true", help="leave out the cold case")
    add("--only-cold", action="store_true", help="run the cold case only")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: every size must be >= 1")
    if args.quick:
        args.sizes = [20, 50]
        args.crash_samples = min(args.crash_samples, 20)
        args.peer_crash_samples = min(args.peer_crash_samples, 3)
        args.peer_crash_seconds = min(args.peer_crash_seconds, 15.0)
        args.rounds = 1
        args.cold_size = min(args.cold_size, 50)
        args.cold_rounds = 1
        args.no_write = True
    if args.rounds < 1 or args.crash_samples < 0 or args.peer_crash_samples < 0:
        parser.error("--rounds must be >= 1 and the sample counts >= 0")
    if args.cold_size < 1 or args.cold_rounds < 1:
        parser.error("--cold-size and --cold-rounds must be >= 1")
    if args.skip_cold and args.only_cold:
        parser.error("--skip-cold and --only-cold exclude each other")
    return args


def interrupt_on_signals() -> None:
    """Ctrl-C, also when started in the background (which ignores SIGINT), and SIGTERM act
    alike: asyncio cancels the running measurement and every ``finally`` stops what it
    spawned; a peer driver gets SIGTERM and does the same."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    args.nofile = raise_nofile()
    need = 3 * max(*args.sizes, args.cold_size) + 64
    if args.nofile[0] < need:
        log(f"warning: RLIMIT_NOFILE {args.nofile[0]} < {need}: the largest size may fail")
    started = datetime.datetime.now(datetime.timezone.utc)
    run = Run(sizes=args.sizes)
    try:
        if not args.only_cold:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(measure_local(run, args.rounds, args.crash_samples, args.limits))
                if args.profile:
                    log(runner.run(profile_gaffer(max(args.sizes), args.profile)))
            if not args.skip_peers:
                measure_peers(run, args)
        if not args.skip_cold:
            measure_cold(run, args)
    except KeyboardInterrupt:
        log("interrupted: every process spawned so far has been stopped")
        return 130
    sections = []
    if not args.only_cold:
        sections.append(("spawn", report(run, args, started)))
    if not args.skip_cold:
        sections.append(("cold-start", cold_section(run, args, started)))
    for name, markdown in sections:
        print(markdown + "\n")
        if not args.no_write:
            log(f"written to {results.write_section(name, markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
