"""Controller link benchmark: N simulated agents heartbeating at 1 Hz against one controller,
beside a bare ROUTER/DEALER loop carrying the same heartbeats, in the same run.

For each N (100 and 1,000 by default) and each server (**gaffer**: a ``Controller`` in its own
process; **bare**: a pyzmq ROUTER that decodes nothing and echoes every message, the least a
server on this socket can do), ``bench/simagent.py`` fleets start N simulated agents over real
TCP (a few processes of up to ``--per-fleet`` DEALERs each, so the simulator is not the
bottleneck). Each agent says hello (``agent_id`` and a few leftover instances), waits for its
welcome, then heartbeats every second. For gaffer a template of ``--instances`` per agent is
then applied (100,000 instances at N=1,000): every agent acks its assignment and reports its
instances running, so the controller holds the full cluster while it is measured.

Measured, after a settle period:

1. over ``--windows`` windows of ``--window`` seconds: the server's CPU share (whole process
   and its loop thread, from /proc via psutil), heartbeats offered by the fleets and messages
   handled by the server per second (gaffer: ``status`` -> ``link.received``), and CPU
   microseconds per message in + out. The lowest CPU share of the windows is kept: noise on a
   shared machine only adds CPU time (cache misses, preemption), it never removes any.
2. the round-trip latency of requests under that load, p50/p99 over ``--rtt-calls`` calls each,
   paced ``--rtt-gap-ms`` apart (so the requests do not become the load): gaffer ``ping`` (the
   link alone) and ``nodes`` (the table of N nodes), bare an echoed request frame sent through
   the same ``Channel`` the client uses.
3. health: every node up, nothing dropped, no bad message, no refusal.

Results go to the ``controller-link`` section of bench/RESULTS.md. Every loop is bounded,
every process is stopped by pid, also on Ctrl-C.

    .venv/bin/python bench/controller_link.py [--sizes 100,1000] [--quick] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gaffer  # noqa: E402
import results  # noqa: E402
import simagent  # noqa: E402
from gaffer.client import AsyncClient  # noqa: E402
from gaffer.common import protocol  # noqa: E402
from gaffer.common.transport import Channel, new_socket  # noqa: E402
from simagent import Child, close_all, cpu_seconds, fleet_stats, start_fleets, wait_fleets  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"
TEMPLATE = "simt"
HELLO_INSTANCES = 5
TARGET_CPU_SHARE = 1.0
TARGET_HANDLED = 0.99
RTT_TIMEOUT = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Window:
    seconds: float
    cpu: float
    cpu_main: float
    offered: int
    handled: int
    sent: int

    @property
    def share(self) -> float:
        return self.cpu / self.seconds

    @property
    def share_main(self) -> float:
        return self.cpu_main / self.seconds

    @property
    def us_per_message(self) -> float:
        messages = self.handled + self.sent
        return self.cpu / messages * 1e6 if messages else math.nan


@dataclass
class Outcome:
    who: str
    n: int
    instances: int = 0
    windows: list[Window] = field(default_factory=list)
    rtt: dict[str, list[float]] = field(default_factory=dict)
    health: list[str] = field(default_factory=list)
    setup_seconds: float = 0.0
    fleet_cpu_share: float = 0.0
    profile: str = ""
    error: str = ""

    @property
    def best(self) -> Window | None:
        return min(self.windows, key=lambda w: w.share) if self.windows else None


# --------------------------------------------------------------------- one server


class Server:
    """The server under test and the way to read its counters."""

    def __init__(self, who: str, child: Child) -> None:
        self.who = who
        self.child = child
        self.endpoint: str = child.hello["endpoint"]
        self.client = AsyncClient(self.endpoint, timeout=30.0) if who == "gaffer" else None

    async def counters(self) -> tuple[int, int]:
        """(messages received, messages sent) so far; the query itself is taken out."""
        if self.client is not None:
            link = (await self.client.call("status"))["link"]
            return link["received"] - 1, link["sent"]
        stats = await self.child.ask("stats")
        return stats["received"], stats["sent"]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        await self.child.close()


async def start_server(who: str, work: Path) -> Server:
    if who == "gaffer":
        argv = ["--data-dir", str(work / "controller"), "--log-level", "info", "--probe-ms", "0"]
        child = await Child.start("controller", argv, work / "controller.log")
    else:
        child = await Child.start("bare", [], work / "bare.log")
    return Server(who, child)


async def populate(server: Server, n: int, per_agent: int, fleets: list[Child]) -> None:
    """Apply the template and wait until every agent acked it and reported it running."""
    assert server.client is not None
    total = n * per_agent
    template = {"name": TEMPLATE, "cmd": "sleep", "args": ["3600"], "startsecs": 0,
                "numprocesses": total}
    since = time.monotonic()
    await server.client.call("apply", templates=[template])
    await wait_fleets(fleets, lambda s: s["held"] == total and s["acked_since"] == n,
                      60 + n * 0.05, what=f"{total} instances acked", since=since)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await server.client.call("status"))["instances"]["running"] != total:
        if loop.time() > deadline:
            raise TimeoutError(f"the controller never saw {total} instances running")
        await asyncio.sleep(0.1)  # poll


async def measure_windows(server: Server, fleets: list[Child], args: argparse.Namespace) -> list[Window]:
    windows = []
    for _ in range(args.windows):
        t0, (cpu0, main0), (in0, out0) = time.monotonic(), cpu_seconds(server.child.pid), await server.counters()
        offered0 = (await fleet_stats(fleets))["heartbeats"]
        await asyncio.sleep(args.window)  # the measurement window: the load runs by itself
        offered1 = (await fleet_stats(fleets))["heartbeats"]
        t1, (cpu1, main1), (in1, out1) = time.monotonic(), cpu_seconds(server.child.pid), await server.counters()
        windows.append(Window(t1 - t0, cpu1 - cpu0, main1 - main0, offered1 - offered0,
                              in1 - in0, out1 - out0))
    return windows


async def measure_rtt(server: Server, args: argparse.Namespace) -> dict[str, list[float]]:
    gap = args.rtt_gap_ms / 1000
    if server.client is not None:
        found: dict[str, list[float]] = {"ping": [], "nodes": []}
        for _ in range(args.rtt_calls):
            for op in found:
                started = time.perf_counter()
                await server.client.call(op, timeout=RTT_TIMEOUT)
                found[op].append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(gap)  # pacing: requests must not become the load
        return found
    return {"echo": await bare_rtt(server.endpoint, args.rtt_calls, gap)}


async def bare_rtt(endpoint: str, calls: int, gap: float) -> list[float]:
    """An encoded request frame echoed by the bare ROUTER, through gaffer's own Channel."""
    ctx = zmq.asyncio.Context()
    channel = Channel(new_socket(ctx, zmq.DEALER))
    channel.sock.connect(endpoint)
    frame = protocol.encode("request", 1, {"id": 1, "op": "ping", "args": {}})
    found = []
    try:
        for _ in range(calls):
            started = time.perf_counter()
            channel.send([frame])
            if not await channel.recv_batch(timeout=RTT_TIMEOUT):
                raise TimeoutError("the bare ROUTER did not echo within 10s")
            found.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(gap)  # pacing, as for gaffer
    finally:
        channel.close()
        ctx.destroy(linger=0)
    return found


async def check_health(server: Server, n: int, fleets: list[Child], outcome: Outcome) -> None:
    stats = await fleet_stats(fleets)
    problems = []
    if stats["refused"]:
        problems.append(f"fleets were refused {stats['refusals']}")
    if stats["send_dropped"]:
        problems.append(f"fleets dropped {stats['send_dropped']} sends")
    if server.client is not None:
        status = await server.client.call("status")
        nodes = status["nodes"]
        if nodes["up"] != n:
            problems.append(f"nodes {nodes} (want {n} up)")
        link = status["link"]
        if link["send_dropped"] or link["bad_messages"]["total"] or link["replays"]:
            problems.append(f"link dropped {link['send_dropped']}, bad "
                            f"{link['bad_messages']['total']}, replays {link['replays']}")
    else:
        bare = await server.child.ask("stats")
        if bare["send_dropped"]:
            problems.append(f"bare dropped {bare['send_dropped']} echoes")
    outcome.health = problems


async def measure(who: str, n: int, args: argparse.Namespace, run: str) -> Outcome:
    outcome = Outcome(who, n, instances=n * args.instances if who == "gaffer" else 0)
    work = Path(tempfile.mkdtemp(prefix=f"link-{who}-{n}-", dir=WORK))
    server: Server | None = None
    fleets: list[Child] = []
    started = time.monotonic()
    try:
        server = await start_server(who, work)
        fleets = await start_fleets(server.endpoint, n, args.per_fleet, work, bare=who == "bare",
                                    run=run, hello_instances=HELLO_INSTANCES)
        await wait_fleets(fleets, lambda s: s["welcomed"] == n, 60 + n * 0.05,
                          what=f"{n} agents welcomed")
        if who == "gaffer":
            await populate(server, n, args.instances, fleets)
        outcome.setup_seconds = time.monotonic() - started
        log(f"{who} N={n}: {n} agents up"
            + (f", {outcome.instances:,} instances running" if outcome.instances else "")
            + f" after {outcome.setup_seconds:.1f}s; settling {args.settle:g}s")
        await asyncio.sleep(args.settle)  # heartbeat phases spread, setup traffic drained
        fleet_cpu0 = (await fleet_stats(fleets))["cpu"]
        clock0 = time.monotonic()
        outcome.windows = await measure_windows(server, fleets, args)
        outcome.fleet_cpu_share = ((await fleet_stats(fleets))["cpu"] - fleet_cpu0) / (
            time.monotonic() - clock0)
        if args.profile and who == "gaffer" and n == max(args.sizes):
            await server.child.ask("profile-start")
            await asyncio.sleep(args.window)  # one more window, profiled, not counted
            reply = await server.child.ask("profile-stop", path=str(args.profile), lines=25)
            outcome.profile = reply["top"]
        best = outcome.best
        assert best is not None
        log(f"{who} N={n}: cpu {best.share:.1%} of a core (loop thread {best.share_main:.1%}), "
            f"{best.handled / best.seconds:,.0f} msgs/s in; fleets {outcome.fleet_cpu_share:.1%}")
        outcome.rtt = await measure_rtt(server, args)
        await check_health(server, n, fleets, outcome)
        for problem in outcome.health:
            log(f"{who} N={n}: {problem}")
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        log(f"{who} N={n}: failed: {outcome.error} (logs in {work})")
    finally:
        await close_all(fleets)
        if server is not None:
            await server.close()
        if not args.keep_work and not outcome.error:
            shutil.rmtree(work, ignore_errors=True)
    return outcome


async def measure_all(args: argparse.Namespace) -> list[Outcome]:
    run = f"{os.getpid() % 100000}"
    outcomes = []
    for n in args.sizes:
        for who in ("bare", "gaffer"):
            if who == "bare" and args.skip_bare:
                continue
            outcomes.append(await measure(who, n, args, run))
    return outcomes


# --------------------------------------------------------------------- the report


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def find(outcomes: list[Outcome], who: str, n: int) -> Outcome | None:
    return next((o for o in outcomes if o.who == who and o.n == n), None)


def load_rows(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        w = o.best
        if w is None:
            rows.append([str(o.n), o.who, *["n/a"] * 7])
            continue
        rows.append([
            f"{o.n:,}", o.who, f"{o.instances:,}", f"{w.share:.1%}", f"{w.share_main:.1%}",
            f"{w.offered / w.seconds:,.0f}", f"{w.handled / w.seconds:,.0f}",
            f"{w.sent / w.seconds:,.0f}", f"{w.us_per_message:.1f}",
        ])
    return rows


def ratio_lines(outcomes: list[Outcome], sizes: list[int]) -> list[str]:
    lines = []
    for n in sizes:
        mine, bare = find(outcomes, "gaffer", n), find(outcomes, "bare", n)
        if mine is None or bare is None or mine.best is None or bare.best is None:
            continue
        m, b = mine.best, bare.best
        lines.append(
            f"- N={n:,}: gaffer uses {m.share / b.share:.1f}x the CPU of bare for the same "
            f"heartbeats ({m.us_per_message / b.us_per_message:.1f}x per message handled)"
        )
    return lines


def rtt_rows(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        for op, values in o.rtt.items():
            if values:
                rows.append([f"{o.n:,}", o.who, op, str(len(values)),
                             f"{percentile(values, 50):.2f}", f"{percentile(values, 99):.2f}",
                             f"{max(values):.2f}"])
    return rows


def rtt_ratio_lines(outcomes: list[Outcome], sizes: list[int]) -> list[str]:
    lines = []
    for n in sizes:
        mine, bare = find(outcomes, "gaffer", n), find(outcomes, "bare", n)
        echo = bare.rtt.get("echo") if bare else None
        if not mine or not echo:
            continue
        parts = []
        for op in ("ping", "nodes"):
            values = mine.rtt.get(op)
            if values:
                parts.append(f"`{op}` p50 {percentile(values, 50) / percentile(echo, 50):.1f}x, "
                             f"p99 {percentile(values, 99) / percentile(echo, 99):.1f}x")
        lines.append(f"- N={n:,}, against the bare echo: " + "; ".join(parts))
    return lines


def verdicts(outcomes: list[Outcome], sizes: list[int]) -> list[str]:
    n = max(sizes)
    mine = find(outcomes, "gaffer", n)
    if mine is None or mine.best is None:
        return [f"- gaffer at N={n}: not measured ({mine.error if mine else 'skipped'})"]
    w = mine.best
    handled = w.handled / max(1, w.offered)
    fits = w.share < TARGET_CPU_SHARE and handled >= TARGET_HANDLED and not mine.health
    lines = [
        f"- {n:,} agents, {mine.instances:,} instances, heartbeats at 1 Hz on one core: the "
        f"controller used {w.share:.1%} of one core (loop thread {w.share_main:.1%}), handled "
        f"{handled:.1%} of the heartbeats offered, every node stayed up: "
        f"**{'met' if fits else 'NOT met'}**"
        + ("" if not mine.health else f" ({'; '.join(mine.health)})"),
        f"- headroom: at this CPU share one core would carry about "
        f"{n / w.share:,.0f} agents at 1 Hz (linear extrapolation, not measured)",
    ]
    return lines


def header(args: argparse.Namespace, started: datetime.datetime) -> list[str]:
    info = results.machine()
    import msgpack
    return [
        "## Controller link",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/controller_link.py"
        f"{' --quick' if args.quick else ''}`: {info['cpus']} CPUs ({info['cpu']}), "
        f"{info['kernel']}, {info['python']}, load average at start {info['load']}.",
        f"Versions: gaffer {gaffer.__version__} on uvloop {uvloop.__version__}, pyzmq "
        f"{zmq.__version__} (libzmq {zmq.zmq_version()}), msgpack "
        f"{'.'.join(map(str, msgpack.version))}.",
    ]


def report(outcomes: list[Outcome], args: argparse.Namespace, started: datetime.datetime) -> str:
    load = results.table(
        ["N agents", "server", "instances", "CPU (process)", "CPU (loop thread)",
         "heartbeats offered/s", "msgs handled/s", "msgs sent/s", "CPU us/msg"],
        load_rows(outcomes), align="llrrrrrrr",
    )
    rtt = results.table(["N agents", "server", "request", "calls", "p50 ms", "p99 ms", "max ms"],
                        rtt_rows(outcomes), align="lllrrrr")
    errors = [f"- {o.who} N={o.n}: {o.error}" for o in outcomes if o.error]
    return "\n".join([
        *header(args, started),
        "",
        "### Heartbeat load (CPU share is of one core; lower is better)",
        "",
        f"Simulated agents (`bench/simagent.py`, {args.per_fleet} per fleet process) over TCP "
        f"on loopback, each welcomed after a hello carrying its `agent_id` and "
        f"{HELLO_INSTANCES} leftover instances, then heartbeating every 1 s (phases spread). "
        f"For gaffer, a template of {args.instances} instances per agent was applied first: "
        "every agent acked its assignment and reported its instances running, so the "
        "controller holds the whole table while measured. Lowest CPU share of "
        f"{args.windows} windows of {args.window:g} s (noise only adds CPU time), after "
        f"{args.settle:g} s of settling.",
        "",
        load,
        "",
        "- bare: a pyzmq ROUTER in a blocking poll loop that decodes nothing and echoes every "
        "message to its sender (so it sends one message per heartbeat).",
        "- gaffer: a `Controller` in its own process, on uvloop; messages handled from "
        "`status` -> `link.received`, sent from `link.sent` (the controller's `beat` goes "
        "to every node each half interval, so it sends two messages per heartbeat).",
        "- CPU us/msg: process CPU time over messages received + sent: the fair comparison "
        "when the two servers send different numbers of messages.",
        *ratio_lines(outcomes, args.sizes),
        "",
        "### Request round trip under that load (ms, lower is better)",
        "",
        f"{args.rtt_calls} calls of each request, one at a time, {args.rtt_gap_ms:g} ms apart, "
        "from a client in the bench process while the heartbeats go on. gaffer: "
        "`AsyncClient.call` (encode, send, decode the reply); `ping` is the link alone, "
        "`nodes` returns the table of every node. bare: a pre-encoded request frame sent "
        "through gaffer's `Channel` and its echo awaited, nothing decoded.",
        "",
        rtt,
        "",
        *rtt_ratio_lines(outcomes, args.sizes),
        "",
        "### Target",
        "",
        *verdicts(outcomes, args.sizes),
        *(["", "### Not measured", "", *errors] if errors else []),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--sizes", default="100,1000", help="comma-separated agent counts (default %(default)s)")
    add("--instances", type=int, default=100,
        help="instances per agent, applied for gaffer (default %(default)s)")
    add("--per-fleet", type=int, default=500,
        help="simulated agents per fleet process (default %(default)s)")
    add("--window", type=float, default=10.0, help="seconds per window (default %(default)s)")
    add("--windows", type=int, default=3, help="windows, lowest CPU kept (default %(default)s)")
    add("--settle", type=float, default=3.0, help="seconds before measuring (default %(default)s)")
    add("--rtt-calls", type=int, default=200, help="calls per request (default %(default)s)")
    add("--rtt-gap-ms", type=float, default=20.0, help="pause between calls (default %(default)s)")
    add("--skip-bare", action="store_true", help="measure gaffer only")
    add("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    add("--keep-work", action="store_true", help="keep logs and data under bench/.work")
    add("--profile", type=Path, metavar="FILE",
        help="cProfile the controller over one extra window at the largest N; print its top")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1 or args.instances < 0 or args.per_fleet < 1:
        parser.error("--sizes must be >= 1, --instances >= 0, --per-fleet >= 1")
    if args.quick:
        args.sizes = [20, 100]
        args.instances = min(args.instances, 10)
        args.window, args.windows, args.settle = 3.0, 1, 1.0
        args.rtt_calls = min(args.rtt_calls, 30)
        args.no_write = True
    if args.windows < 1 or args.window <= 0 or args.rtt_calls < 1:
        parser.error("--windows, --window and --rtt-calls must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    simagent.raise_nofile()
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        outcomes = uvloop.run(measure_all(args))
    except KeyboardInterrupt:
        log("interrupted: every process started so far has been stopped")
        return 130
    markdown = report(outcomes, args, started)
    print(markdown)
    for o in outcomes:
        if o.profile:
            log(f"cProfile of the controller, gaffer N={o.n}, by own time:\n{o.profile}")
    if not args.no_write:
        log(f"written to {results.write_section('controller-link', markdown)}")
    return 0 if not any(o.error for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
