"""The body of ``bench/http.py`` (issue 11's HTTP and listing benchmark); see its docstring.

Kept apart because ``bench/http.py`` must stand in for the standard library's ``http`` package
whenever a bench script imports ``http.client`` (see there). Rows are added as ``Case``s in
``CASES``.
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
from typing import Any, Awaitable, Callable

import uvloop
import zmq
import zmq.asyncio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gaffer  # noqa: E402
import peers  # noqa: E402
import results  # noqa: E402
import httpcases  # noqa: E402
from output import Spawned, cpu_of, free_port, peers_run  # noqa: E402
from gaffer.agent.statcadence import IDLE_EVERY  # noqa: E402
from gaffer.client import AsyncClient  # noqa: E402
from gaffer.client.wire import request_frame  # noqa: E402

DESCRIPTION = "HTTP and listing benchmark (issue 11): listing N instances, beside circus and supervisor."
WORK = HERE / ".work" / "http"
BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0
TARGETS_MS = {200: 5.0, 10_000: 50.0}
"""The issue's targets for ``ps`` of N instances (p50, the controller's side)."""
PEER_NAMES = ("supervisor", "circus")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Row:
    """One line of the table: who, what call, on how many processes, the latencies (ms)."""

    who: str
    call: str
    size: int
    ms: list[float] = field(default_factory=list)
    note: str = ""
    rate: float | None = None
    """A throughput (events/s, requests/s), for the rows that measure one."""
    unit: str = ""


@dataclass
class Run:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    push_cost: dict[int, float] = field(default_factory=dict)
    """Per size, the agent's CPU seconds per second while idle (its stats push included)."""


# --------------------------------------------------------------------- gaffer


class Cluster:
    """A gaffer-controller and one gaffer-agent on loopback, for one bench run."""

    def __init__(self, work: Path, stats_interval: float) -> None:
        self.work = work
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.stats_interval = stats_interval
        self.controller: Spawned | None = None
        self.agent: Spawned | None = None
        self.client = AsyncClient(self.endpoint, timeout=60.0)
        self.http_url = f"http://127.0.0.1:{free_port()}"
        self.token = ""
        self.problems: list[str] = []

    async def start(self) -> None:
        self.controller = await Spawned.start("gaffer-controller", [
            str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--pub", self.pub,
            "--data-dir", str(self.work / "controller"), "--insecure", "--log-level", "warning",
            "--http", self.http_url.removeprefix("http://"),
        ], self.work / "controller.log")
        self.agent = await Spawned.start("gaffer-agent", [
            str(BIN / "gaffer-agent"), "--controller", self.endpoint, "--name", "bench",
            "--state-dir", str(self.work / "agent"), "--insecure", "--stop-processes",
            "--stats-interval", str(self.stats_interval), "--log-level", "warning",
        ], self.work / "agent.log")
        await self.until(self._node_up, "the agent to join")
        self.token = (self.work / "controller" / "admin.token").read_text().strip()

    async def _node_up(self) -> bool:
        try:
            return any(n["state"] == "up" for n in await self.client.call("nodes"))
        except Exception:
            return False

    async def until(self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting {timeout:.0f}s for {what}")
            await asyncio.sleep(0.2)  # poll

    async def run(self, n: int) -> None:
        """N ``sleep 3600`` running, each with a pushed sample."""
        await self.client.call("apply", templates=[{
            "name": "idle", "cmd": shutil.which("sleep") or "/bin/sleep", "args": ["3600"],
            "numprocesses": n, "startsecs": 0, "redirect_output": [],
        }])

        async def sampled() -> bool:
            rows = await self.client.call("ps", name="idle")
            return len(rows) == n and all(r["state"] == "running" and r["age"] is not None for r in rows)

        await self.until(sampled, f"{n} instances running with a pushed sample")

    async def close(self) -> None:
        await self.client.close()
        if self.agent is not None:
            await self.agent.close()
        if self.controller is not None:
            await self.controller.close()


async def timed(call: Callable[[], Awaitable[Any]], calls: int, gap: float) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(gap)  # pace: the requests must not become the load
    return latencies


async def ps_client(cluster: Cluster, n: int, args: argparse.Namespace) -> list[Row]:
    async def call() -> None:
        rows = await cluster.client.call("ps")
        assert len(rows) == n, len(rows)

    rows = [Row("gaffer", "ps (Client, decoded)", n, await timed(call, args.calls, args.gap))]
    return rows + [await ps_sync_client(cluster, n, args), await ps_decode(cluster, n, args)]


async def ps_sync_client(cluster: Cluster, n: int, args: argparse.Namespace) -> Row:
    """The blocking ``Client.call("ps")`` (what ``gafferctl`` is built on), from this loop:
    nothing else runs in this process meanwhile."""
    from gaffer.client import Client

    with Client(cluster.endpoint, timeout=60.0) as client:
        async def call() -> None:
            rows = client.call("ps")
            assert len(rows) == n, len(rows)

        return Row("gaffer", "ps (sync Client, decoded)", n, await timed(call, args.calls, args.gap))


async def ps_decode(cluster: Cluster, n: int, args: argparse.Namespace) -> Row:
    """What reading the reply costs a client (``wire.reply_body``: unpacked and checked), timed
    in this process on a reply frame of the rows it got (the controller's frame is these
    bytes): the part of "Client" that is not the controller's nor the socket's."""
    from gaffer.client import wire
    from gaffer.common import protocol

    listing = await cluster.client.call("ps")
    frame = protocol.encode("reply", 1, {"id": 1, "ok": True, "result": listing, "error": None})
    latencies = []
    for _ in range(args.calls):
        started = time.perf_counter()
        body = wire.reply_body(frame)
        latencies.append((time.perf_counter() - started) * 1000)
        assert body is not None and len(body["result"]) == n
    return Row("gaffer", "ps reply decode only (Client)", n, latencies, f"{len(frame) / 1e6:.2f} MB")


async def ps_controller(cluster: Cluster, n: int, args: argparse.Namespace) -> list[Row]:
    """The request frame on a bare DEALER; timed to the reply frame's arrival, undecoded."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.endpoint)
    seq = 0

    async def call() -> None:
        nonlocal seq
        seq += 1
        await sock.send(request_frame(seq, seq, "ps", {}))
        frame = await asyncio.wait_for(sock.recv(copy=False), 60)
        assert len(frame.buffer) > n * 50, len(frame.buffer)

    try:
        await timed(call, 3, args.gap)  # the first request of a peer sets its role
        assert cluster.controller is not None
        pid = cluster.controller.pid
        idle_from, idle_cpu = time.perf_counter(), cpu_of(pid)
        await asyncio.sleep(1.0)  # the controller's own CPU rate meanwhile, to subtract
        idle_rate = (cpu_of(pid) - idle_cpu) / (time.perf_counter() - idle_from)
        busy_from, busy_cpu = time.perf_counter(), cpu_of(pid)
        ms = await timed(call, args.calls, args.gap)
        spent = cpu_of(pid) - busy_cpu - idle_rate * (time.perf_counter() - busy_from)
        note = f"controller CPU {max(0.0, spent) / args.calls * 1000:.1f} ms a call"
        return [Row("gaffer", "ps (controller side)", n, ms, note)]
    finally:
        sock.close(linger=0)
        ctx.term()


async def ps_fresh(cluster: Cluster, n: int, args: argparse.Namespace) -> list[Row]:
    async def call() -> None:
        await cluster.client.call("ps", fresh=True)

    calls = max(3, args.calls // 10)
    return [Row("gaffer", "ps --fresh (agents asked)", n, await timed(call, calls, args.gap), f"{calls} calls")]


Case = Callable[[Cluster, int, argparse.Namespace], Awaitable[list[Row]]]
CASES: list[Case] = [ps_controller, ps_client, ps_fresh, httpcases.instances, httpcases.fanout, httpcases.status]
"""What is measured on the running cluster at each size, in this order."""


def agent_cpu(cluster: Cluster, seconds: float) -> float:
    """The agent's CPU seconds per second over ``seconds`` of idling (its pushes included)."""
    import psutil

    assert cluster.agent is not None
    proc = psutil.Process(cluster.agent.pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(seconds)  # measuring an interval: the agent works on its own meanwhile
    return (sum(proc.cpu_times()[:2]) - before) / seconds


async def measure_gaffer(run: Run, args: argparse.Namespace, work: Path) -> None:
    cluster = Cluster(work, args.stats_interval)
    try:
        await cluster.start()
        for n in args.sizes:
            log(f"gaffer: {n} instances")
            await cluster.run(n)
            for case in [c for c in CASES if args.cases is None or c.__name__ in args.cases]:
                for row in await case(cluster, n, args):
                    run.rows.append(row)
                    log(f"  {row.call}: {summary(row)}")
            run.push_cost[n] = agent_cpu(cluster, 2 * args.stats_interval)
    finally:
        run.problems.extend(cluster.problems)
        await cluster.close()


def summary(row: Row) -> str:
    out = f"p50 {percentile(row.ms, 50):.2f} ms, p99 {percentile(row.ms, 99):.2f} ms" if row.ms else ""
    if row.rate is not None:
        out = f"{row.rate:,.0f} {row.unit}" + (f", {out}" if out else "")
    return out + (f" ({row.note})" if row.note else "")


# --------------------------------------------------------------------- peers


def measure_peers(run: Run, args: argparse.Namespace) -> None:
    python, why = peers.ensure_venv(log)
    for name in PEER_NAMES:
        if python is None:
            run.problems.append(f"- {name}: {why}")
            continue
        log(f"{name}: listing {args.peer_sizes}")
        argv = [
            str(python), str(HERE / "http_peers.py"), name, "--sizes", ",".join(map(str, args.peer_sizes)),
            "--calls", str(args.calls), "--gap-ms", str(args.gap * 1000),
            "--sleep", shutil.which("sleep") or "/bin/sleep",
        ]
        got = peers_run(argv, 600 + 600 * len(args.peer_sizes))  # start-up of 1,000 under load, and the calls
        if "error" in got:
            run.problems.append(f"- {name}: {got['error']}")
            continue
        for size, ms in got["lists"].items():
            run.rows.append(Row(f"{name} {got['version']}", got["call"], int(size), ms))
        for size, why in got["errors"].items():
            run.problems.append(f"- {name} at {size}: {why}")


# --------------------------------------------------------------------- report


def table(run: Run) -> str:
    ordered = sorted(run.rows, key=lambda r: (r.size, not r.who.startswith("gaffer"), r.who))
    return results.table(
        ["who", "call", "processes", "calls", "p50 ms", "p99 ms", "note"],
        [[r.who, r.call, f"{r.size:,}", len(r.ms), f"{percentile(r.ms, 50):.2f}", f"{percentile(r.ms, 99):.2f}", r.note]
         for r in ordered if r.ms and r.rate is None],
        align="llrrrrl",
    )


def rates_table(run: Run) -> str:
    return results.table(
        ["who", "call", "processes", "rate", "p50 ms", "p99 ms", "note"],
        [[r.who, r.call, f"{r.size:,}", f"{r.rate:,.0f} {r.unit}",
          f"{percentile(r.ms, 50):.2f}" if r.ms else "", f"{percentile(r.ms, 99):.2f}" if r.ms else "", r.note]
         for r in sorted(run.rows, key=lambda r: (r.call, r.size)) if r.rate is not None],
        align="llrrrrl",
    )


def verdicts(run: Run) -> list[str]:
    out = []
    for n, target in TARGETS_MS.items():
        for call in ("ps (controller side)", "ps (Client, decoded)", "ps (sync Client, decoded)",
                     "GET /v1/instances (HTTP, decoded)"):
            row = next((r for r in run.rows if r.who == "gaffer" and r.call == call and r.size == n), None)
            if row is None:
                continue
            p50 = percentile(row.ms, 50)
            met = "**met**" if p50 < target else "**not met**"
            what = "`GET /v1/instances`" if call.startswith("GET") else "`ps`"
            out.append(f"- {what} of {n:,}, {call}: p50 {p50:.2f} ms (target < {target:g} ms): {met}")
    for n, share in sorted(run.push_cost.items()):
        out.append(f"- agent CPU while idle with {n:,} instances, someone looking (its ps calls hold the stats_watch lease: stats pushed every interval; nobody looking, every {IDLE_EVERY} intervals): {share * 100:.1f}% of a core")
    return out


def report(run: Run, args: argparse.Namespace, started: datetime.datetime) -> str:
    info = results.machine()
    return "\n".join([
        "## HTTP and listing",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/http.py{' --quick' if args.quick else ''}`: "
        f"{info['cpus']} CPUs ({info['cpu']}), {info['kernel']}, {info['python']}, load average "
        f"at start {info['load']}. gaffer {gaffer.__version__}; stats pushed every {args.stats_interval:g} s.",
        "",
        "### Listing N `sleep 3600` (ms, lower is better)",
        "",
        table(run),
        "",
        "- gaffer: a real `gaffer-controller` and `gaffer-agent` on loopback TCP; `ps` answers from "
        "the stats the agent pushed. \"controller side\": the request on a bare DEALER, timed to the "
        "reply frame (not decoded); \"Client\": `AsyncClient.call(\"ps\")`, reply decoded and checked; \"sync Client\": `Client.call(\"ps\")`, the same; \"decode only\": `wire.reply_body` of that reply, in the bench's process.",
        f"- peers: a fresh daemon per size; at {', '.join(f'{n:,}' for n in args.peer_sizes)} processes "
        "only (starting 10,000 under a peer takes minutes on this machine).",
        f"- {args.calls} calls per row, {args.gap * 1000:g} ms apart; nearest-rank percentiles.",
        "- `GET /v1/instances`: aiohttp, one keep-alive connection, the JSON body read and decoded.",
        "",
        "### Throughput over HTTP (higher is better)",
        "",
        rates_table(run),
        "",
        f"- SSE: N aiohttp clients (one process, one loop) on `GET /v1/events?prefix=template.burst-`; "
        f"a burst of {args.burst:,} events: `apply`s of {httpcases.BURST_WIDTH} empty templates, each "
        f"changing their env ({httpcases.BURST_WIDTH} `updated` events per apply), from "
        f"{httpcases.BURST_CALLERS} concurrent ZMQ callers; every client must receive every event "
        "(counted, ids increasing). Rate: the median client's events over the time from the burst's "
        "first send to its last event; "
        "the burst's pace (publish pace) bounds it.",
        f"- `GET /v1/status`: {httpcases.STATUS_CLIENTS} aiohttp workers on one session "
        f"(keep-alive), back to back for {args.rps_seconds:g} s.",
        "",
        "### Targets",
        "",
        *verdicts(run),
        *(["", "### Not measured", "", *run.problems] if run.problems else []),
    ])


# --------------------------------------------------------------------- entry


def sizes(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or not all(1 <= v <= 100_000 for v in values):
        raise argparse.ArgumentTypeError("sizes are numbers in 1..100000, comma-separated")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add = parser.add_argument
    add("--sizes", type=sizes, default=[200, 10_000], help="gaffer instances (default 200,10000)")
    add("--peer-sizes", type=sizes, default=[200, 1_000], help="peer processes (default 200,1000)")
    add("--calls", type=int, default=200, help="listings per row (default %(default)s)")
    add("--gap-ms", type=float, default=10.0, help="between calls (default %(default)s)")
    add("--stats-interval", type=float, default=5.0, help="the agent's (default %(default)s)")
    add("--burst", type=int, default=5000, help="events per SSE fan-out burst (default %(default)s)")
    add("--rps-seconds", type=float, default=5.0, help="GET /v1/status run length (default %(default)s)")
    add("--cases", type=lambda text: set(text.split(",")), default=None,
        help=f"only these rows' cases (of {','.join(c.__name__ for c in CASES)})")
    add("--skip-peers", action="store_true", help="gaffer only")
    add("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.peer_sizes, args.calls, args.no_write = [200], [200], 20, True
        args.burst, args.rps_seconds = min(args.burst, 1000), 1.0
    if not 1 <= args.calls <= 10_000 or not 0 <= args.gap_ms <= 10_000 or not 0.5 <= args.stats_interval <= 60:
        parser.error("--calls in 1..10000, --gap-ms in 0..10000, --stats-interval in 0.5..60")
    if not 1 <= args.burst <= 100_000 or not 0.1 <= args.rps_seconds <= 60:
        parser.error("--burst in 1..100000, --rps-seconds in 0.1..60")
    args.gap = args.gap_ms / 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    run = Run()
    try:
        with tempfile.TemporaryDirectory(prefix="gaffer-", dir=WORK) as tmp:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(measure_gaffer(run, args, Path(tmp)))
        if not args.skip_peers:
            measure_peers(run, args)
    except KeyboardInterrupt:
        log("interrupted: every process started so far has been stopped")
        return 130
    markdown = report(run, args, started)
    print(markdown)
    if not args.no_write:
        log(f"written to {results.write_section('http', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
