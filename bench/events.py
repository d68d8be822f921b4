"""Events benchmark: the controller's event stream against a bare pyzmq PUB -> SUB, in one run.

1. **Fan-out.** A publisher sends COUNT events (``--payload`` bytes of data each) as fast as it
   can to 1, 10 and 100 subscribers, each in its own process, subscribed to every topic or to a
   narrow prefix (one topic family of ten, so it gets a tenth). **gaffer**: a real
   ``Controller`` publishing through its ``EventHub`` (``hub.publish``), read with the real
   ``Client.events(prefixes)``; **bare**: a pyzmq PUB with the same high-water mark sending a
   frame of the same size, read by a SUB that receives and unpacks each message. Per
   subscriber: events received over the time from the first publish to its last receipt; the
   median subscriber's rate, the slowest's, and what was lost. Best of ``--rounds``.
2. **Latency.** A real ``gaffer-controller`` and ``gaffer-agent``, the cluster otherwise idle,
   a template whose process sleeps ``--latency-sleep`` and exits (restarted at once): every
   ``proc.`` event it causes is timed from its ``ts`` (stamped by the agent as it happens) to
   its receipt by a ``Client.events`` subscriber. bare: the same two hops without gaffer,
   DEALER -> ROUTER relayed to PUB -> SUB, stamped by the sender at the same pace.
3. **Flood followed.** The same cluster runs ``yes``; a real ``gafferctl logs -f`` follows it:
   lines printed per second and lines reported skipped, the agent's CPU and RSS sampled every
   0.25 s (start / peak), and whole ``gafferctl ps`` runs meanwhile against the same before.
4. **A slow subscriber.** 10 subscribers to every topic, one reading 10 events/s, 9 flat out:
   the 9's rate against all 10 flat out (part 1, same run).

Every process (publishers, subscribers, daemons, commands) is bounded in time and stopped by
pid. Results: printed, and written to the ``events`` section of bench/RESULTS.md.

    .venv/bin/python bench/events.py [--subscribers 1,10,100] [--events 100000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import eventpeers  # noqa: E402
import results  # noqa: E402
import gaffer  # noqa: E402
from gaffer.client import Client  # noqa: E402
from gaffer.common.errors import GafferError  # noqa: E402
from gaffer.common.template import parse_template  # noqa: E402

WORK = HERE / ".work" / "events"
BIN = Path(sys.executable).parent
FAMILIES = 10
SLOW_PACE = 0.1
TARGET_RATE = 50_000
TARGET_RATIO = 0.70
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
SKIPPED = re.compile(r"(\d[\d,]*) lines skipped")
CTX = multiprocessing.get_context("forkserver")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def stop_process(proc: Any) -> None:
    """A multiprocessing child: joined if it ended, else SIGKILLed by pid and joined."""
    proc.join(0.5)
    if proc.is_alive():
        proc.kill()
        proc.join(10)


# --------------------------------------------------------------------- fan-out


@dataclass
class FanOut:
    who: str
    n: int
    narrow: bool
    events: int
    expect: int
    sent_seconds: float = 0.0
    rates: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    slow: list[int] = field(default_factory=list)
    problem: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def lost(self) -> int:
        return self.expect * len(self.counts) - sum(self.counts)


class Host:
    """A publisher process (gaffer or bare) spoken to over a pipe."""

    def __init__(self, who: str, work: Path) -> None:
        self.conn, child = CTX.Pipe()
        if who == "gaffer":
            target, args = eventpeers.gaffer_host, (child, loopback(), loopback(), str(work))
        else:
            target, args = eventpeers.bare_host, (child, loopback())
        self.proc = CTX.Process(target=target, args=args, daemon=True)
        self.proc.start()
        child.close()
        self.endpoint, self.pub = self.expect("ready", START_TIMEOUT)[1:]

    def expect(self, what: str, timeout: float) -> tuple[Any, ...]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"the publisher said nothing within {timeout:.0f}s (wanted {what!r})")
        got = self.conn.recv()
        if got[0] != what:
            raise RuntimeError(f"the publisher said {got!r}, wanted {what!r}")
        return got

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def close(self) -> None:
        try:
            self.send("quit")
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(STOP_TIMEOUT)
        stop_process(self.proc)
        self.conn.close()


class Subscribers:
    """N subscriber processes of one run and the queue they report on."""

    def __init__(self) -> None:
        self.reports = CTX.Queue()
        self.stop = CTX.Event()
        self.procs: dict[int, Any] = {}
        self.seen: dict[tuple[str, int], Any] = {}

    def start(self, spec: dict[str, Any]) -> None:
        proc = CTX.Process(target=eventpeers.subscriber, args=(spec, self.reports, self.stop), daemon=True)
        proc.start()
        self.procs[spec["index"]] = proc

    def wait(self, what: str, indexes: set[int], timeout: float) -> dict[int, Any]:
        """The ``what`` reports of ``indexes`` that arrive within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            missing = {i for i in indexes if (what, i) not in self.seen}
            if not missing or time.monotonic() > deadline:
                break
            try:
                report = self.reports.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if not any(self.procs[i].is_alive() for i in missing):
                    break
                continue
            self.seen[report[0], report[1]] = report[2] if len(report) > 2 else True
        return {i: self.seen[what, i] for i in indexes if (what, i) in self.seen}

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs.values():
            stop_process(proc)
        self.reports.close()


def fanout_run(who: str, n: int, narrow: bool, events: int, size: int, work: Path, slow: int = 0) -> FanOut:
    """One run, or what went wrong with it (in ``problem``; the bench goes on)."""
    expect = len(range(3, events, FAMILIES)) if narrow else events
    run = FanOut(who, n, narrow, events, expect)
    try:
        return _fanout_run(run, size, work, slow)
    except (TimeoutError, RuntimeError, OSError, EOFError) as exc:
        run.problem = f"{type(exc).__name__}: {exc}"
        return run


def _fanout_run(run: FanOut, size: int, work: Path, slow: int) -> FanOut:
    """A fresh publisher, ``n`` subscribers (``slow`` of them reading 10 events/s)."""
    who, n, events, expect = run.who, run.n, run.events, run.expect
    narrow = run.narrow
    host, subs = Host(who, work), Subscribers()
    bound = 60.0 + events * n / 20_000
    try:
        for index in range(n):
            subs.start({
                "index": index, "kind": who, "endpoint": host.endpoint if who == "gaffer" else host.pub,
                "prefix": eventpeers.NARROW if narrow else "", "expect": expect,
                "pace": SLOW_PACE if index < slow else 0.0, "seconds": bound,
            })
        host.send("warm")
        ready = subs.wait("ready", set(range(n)), START_TIMEOUT + n * 0.2)
        if len(ready) < n:
            run.problem = f"{n - len(ready)} of {n} subscribers not ready in time"
            return run
        host.send("go", events, FAMILIES, size)
        _, started, ended = host.expect("sent", bound)
        run.sent_seconds = ended - started
        fast = set(range(slow, n))
        done = subs.wait("done", fast, bound)
        subs.stop.set()
        done.update(subs.wait("done", set(range(slow)), 30.0))
        for index in sorted(done):
            got = done[index]
            if index < slow:
                run.slow.append(got["read"])
                continue
            run.counts.append(got["count"])
            if got["count"]:  # events of the stream a second (a narrow subscriber sees a tenth)
                run.rates.append(got["count"] * events / expect / max(got["last"] - started, 1e-9))
        missing = n - len(done)
        if missing:
            run.problem = f"{missing} of {n} subscribers did not report within {bound:.0f}s"
        return run
    finally:
        subs.close()
        host.close()


def measure_fanout(args: argparse.Namespace, work: Path) -> dict[tuple[str, int, bool], FanOut]:
    best: dict[tuple[str, int, bool], FanOut] = {}
    order = ["bare", "gaffer"]
    for round_no in range(args.rounds):
        for n in args.subscribers:
            events = max(FAMILIES, min(args.events, args.deliveries // n))
            for narrow in (False, True):
                for who in order:
                    run = fanout_run(who, n, narrow, events, args.payload, work)
                    key = (who, n, narrow)
                    log(f"round {round_no + 1}/{args.rounds}  {who:<6} N={n:<3} "
                        f"{'narrow' if narrow else 'all':<6} {events:>7} events: median "
                        f"{run.median:10,.0f}/s, lost {run.lost} {run.problem}")
                    if key not in best or run.median > best[key].median:
                        best[key] = run
            order.reverse()
    return best


def measure_slow(args: argparse.Namespace, work: Path) -> tuple[FanOut, FanOut]:
    """Ten subscribers to every topic, all flat out, then with one reading 10 events/s;
    interleaved, best of ``--rounds`` each."""
    n = 10
    events = max(FAMILIES, min(args.events, args.deliveries // n))
    best: dict[int, FanOut] = {}
    for round_no in range(args.rounds):
        for slow in (0, 1) if round_no % 2 == 0 else (1, 0):
            run = fanout_run("gaffer", n, False, events, args.payload, work, slow=slow)
            log(f"slow={slow}: {n - slow} flat out, median {run.median:,.0f}/s, the slow one "
                f"read {run.slow} {run.problem}")
            if slow not in best or run.median > best[slow].median:
                best[slow] = run
    return best[0], best[1]


# --------------------------------------------------------------------- a real cluster


class Daemon:
    """A command in its own session, stopped by pid: ``sig``, then SIGKILL of its group and of
    every descendant it had (an agent's instances lead sessions of their own), each held as a
    psutil object so a reused pid is never signalled."""

    def __init__(self, name: str, argv: list[str], out: Path, err: Path | None = None) -> None:
        self.name = name
        with open(out, "ab") as sink, open(err or out, "ab") as errors:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=errors,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def close(self, sig: int = signal.SIGTERM) -> None:
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not stop in {STOP_TIMEOUT:.0f}s: SIGKILL")
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        for child in descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


class Cluster:
    """A gaffer-controller and one gaffer-agent (node ``bench``) on loopback."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.endpoint, self.pub = loopback(), loopback()
        self.daemons: list[Daemon] = []
        self.client = Client(self.endpoint, timeout=10.0)

    def start(self) -> None:
        self.controller = self._daemon("gaffer-controller", [
            "--bind", self.endpoint, "--pub", self.pub, "--data-dir", str(self.work / "controller"),
            "--insecure", "--log-level", "error",
        ])
        self.agent = self._daemon("gaffer-agent", [
            "--controller", self.endpoint, "--name", "bench", "--state-dir", str(self.work / "agent"),
            "--insecure", "--stop-processes", "--log-level", "error",
        ])
        self.until(lambda: any(n["state"] == "up" for n in self.client.call("nodes")), "the agent to join")

    def _daemon(self, name: str, args: list[str]) -> Daemon:
        daemon = Daemon(name, [str(BIN / name), *args], self.work / f"{name}.log")
        self.daemons.append(daemon)
        return daemon

    def until(self, check: Any, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting {timeout:.0f}s for {what}")
            time.sleep(0.05)  # poll

    def apply(self, name: str, argv: list[str], restart: str) -> None:
        spec = {"cmd": argv[0], "args": argv[1:], "numprocesses": 1, "restart": restart,
                "startsecs": 0, "flapping": False}
        self.client.call("apply", templates=[parse_template(spec, name=name).to_dict()])

    def running(self, name: str) -> bool:
        return any(row.get("state") == "running" for row in self.client.listing("ps", name=name))

    def delete(self, name: str) -> None:
        """Delete a template if it is there (its processes stop); a failure is only logged."""
        try:
            self.client.call("delete", name=name)
        except Exception as exc:
            log(f"delete {name}: {exc}")

    def close(self) -> None:
        self.client.close()
        for daemon in reversed(self.daemons):
            daemon.close()


def measure_latency(cluster: Cluster, samples: int, sleep: float) -> list[float]:
    """ms from each ``proc.lat.*`` event's ts (the agent's clock, as it happened) to receipt."""
    subs = Subscribers()
    try:
        subs.start({"index": 0, "kind": "gaffer", "endpoint": cluster.endpoint, "prefix": "proc.lat.",
                    "latency": samples, "seconds": 60.0 + samples * sleep})
        subs.wait("ready", {0}, START_TIMEOUT)
        time.sleep(0.3)  # the SUB socket subscribes asynchronously: let it settle, as any client does
        cluster.apply("lat", [shutil.which("sleep") or "/bin/sleep", f"{sleep:g}"], "always")
        done = subs.wait("done", {0}, 60.0 + samples * sleep)
        return done.get(0, {}).get("ms", [])[5:]
    finally:
        subs.close()
        cluster.delete("lat")


def measure_bare_latency(samples: int, gap: float) -> list[float]:
    """The same two hops bare: DEALER -> relay ROUTER, relay PUB -> SUB, one message per ``gap``."""
    conn, child = CTX.Pipe()
    relay = CTX.Process(target=eventpeers.relay, args=(child, loopback(), loopback()), daemon=True)
    relay.start()
    child.close()
    subs = Subscribers()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        if not conn.poll(START_TIMEOUT):
            raise TimeoutError("the relay did not start")
        _, bind, pub = conn.recv()
        subs.start({"index": 0, "kind": "bare", "endpoint": pub, "prefix": "bench.lat",
                    "latency": samples, "seconds": 60.0 + samples * gap})
        subs.wait("ready", {0}, START_TIMEOUT)
        dealer.connect(bind)
        time.sleep(0.3)  # as for gaffer: the subscription settles
        data = eventpeers.payload(100)
        deadline = time.monotonic() + 60.0 + samples * gap
        for seq in range(samples + 10):
            if time.monotonic() > deadline:
                break
            dealer.send(eventpeers.frame("proc.lat.exit", data, seq + 1))
            time.sleep(gap)  # the pace of the gaffer case's events
        done = subs.wait("done", {0}, 10.0)
        return done.get(0, {}).get("ms", [])[5:]
    finally:
        dealer.close(0)
        ctx.term()
        subs.close()
        conn.send(("quit",))
        stop_process(relay)
        conn.close()


@dataclass
class Flood:
    seconds: float = 0.0
    printed: int = 0
    skipped: int = 0
    markers: int = 0
    cpu: list[float] = field(default_factory=list)  # agent CPU % of one core, per sample
    before: int = 0  # how many samples were taken before the flood began
    rss: list[float] = field(default_factory=list)  # agent RSS MB, per sample
    ctl_rss: list[float] = field(default_factory=list)
    ps_idle: list[float] = field(default_factory=list)
    ps_flood: list[float] = field(default_factory=list)
    problem: str = ""


class Sampler(threading.Thread):
    """CPU % and RSS of the agent (and the controller's RSS) every ``period``, until stopped."""

    def __init__(self, agent: int, controller: int, flood: Flood, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.agent, self.controller = psutil.Process(agent), psutil.Process(controller)
        self.flood, self.period = flood, period
        self.done = threading.Event()

    def run(self) -> None:
        self.agent.cpu_percent()
        while not self.done.wait(self.period):
            try:
                self.flood.cpu.append(self.agent.cpu_percent())
                self.flood.rss.append(self.agent.memory_info().rss / 2**20)
                self.flood.ctl_rss.append(self.controller.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                return


def gafferctl_ps(cluster: Cluster, runs: int) -> list[float]:
    """ms of whole ``gafferctl ps`` runs (start, request, print, exit), one after another."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(BIN / "gafferctl"), "--controller", cluster.endpoint, "ps"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        times.append((time.perf_counter() - started) * 1000)
    return times


def follow_counts(out: Path, err: Path) -> tuple[int, int, int]:
    """(lines printed, lines said skipped, skip markers) in what ``gafferctl logs -f`` wrote."""
    printed = skipped = markers = 0
    for path in (out, err):
        with open(path, "rb") as f:
            for raw in f:
                found = SKIPPED.search(raw.decode(errors="replace"))
                if found:
                    markers += 1
                    skipped += int(found.group(1).replace(",", ""))
                elif path == out:
                    printed += 1
    return printed, skipped, markers


def measure_flood(cluster: Cluster, window: float, ps_runs: int, work: Path) -> Flood:
    """``yes`` followed by a real ``gafferctl logs -f`` for ``window`` seconds; the agent sampled
    meanwhile; ``gafferctl ps`` runs before and during."""
    flood = Flood(ps_idle=gafferctl_ps(cluster, ps_runs))
    out, err = work / "follow.out", work / "follow.err"
    sampler = Sampler(cluster.agent.pid, cluster.controller.pid, flood)
    sampler.start()
    time.sleep(1.0)  # samples of the agent before the flood: its start
    flood.before = len(flood.cpu)
    cluster.apply("yes", [shutil.which("yes") or "/usr/bin/yes"], "never")
    follower: Daemon | None = None
    try:
        cluster.until(lambda: cluster.running("yes"), "yes to run")
        follower = Daemon("gafferctl logs -f", [
            str(BIN / "gafferctl"), "--controller", cluster.endpoint, "logs", "yes", "-f", "-n", "1",
        ], out, err)
        cluster.until(lambda: out.stat().st_size > 0, "the follower's first line")
        before, started = follow_counts(out, err), time.monotonic()
        flood.ps_flood = gafferctl_ps(cluster, ps_runs)
        time.sleep(max(0.0, window - (time.monotonic() - started)))  # the measured window
        after, flood.seconds = follow_counts(out, err), time.monotonic() - started
        flood.printed, flood.skipped, flood.markers = (a - b for a, b in zip(after, before))
    except TimeoutError as exc:
        flood.problem = str(exc)
    finally:
        sampler.done.set()
        if follower is not None:
            follower.close(signal.SIGINT)
        cluster.delete("yes")
    return flood


PACED = r'''"""paced.py RATE SECONDS DELAY: after DELAY s, write RATE*SECONDS numbered lines (L0, L1, ...)
at RATE lines a second, in 10 ms ticks; then stay (the instance lives until deleted)."""
import os, sys, time
rate, seconds, delay = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
total, per = int(rate * seconds), max(1, int(rate * 0.01))
start, i = time.monotonic(), 0
while i < total:
    n = min(per, total - i)
    os.write(1, "".join(f"L{j}\n" for j in range(i, i + n)).encode())
    i += n
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
time.sleep(3600)
'''
PACED_LINE = re.compile(r"\bL(\d+)$")
PACED_DELAY = 1.5


@dataclass
class Paced:
    rate: int
    written: int
    received: int = 0
    skipped: int = 0
    markers: int = 0


def paced_counts(out: Path, err: Path, total: int) -> tuple[int, int, int]:
    """(distinct numbered lines printed, lines said skipped, markers) by ``gafferctl logs -f``."""
    seen: set[int] = set()
    skipped = markers = 0
    for path in (out, err):
        for text in path.read_text(errors="replace").splitlines():
            found = SKIPPED.search(text)
            if found:
                markers += 1
                skipped += int(found.group(1).replace(",", ""))
                continue
            number = PACED_LINE.search(text)
            if number and int(number.group(1)) < total:
                seen.add(int(number.group(1)))
    return len(seen), skipped, markers


def measure_paced(cluster: Cluster, rates: list[int], seconds: float, work: Path) -> list[Paced]:
    """For each rate, a process writing numbered lines at it, followed by ``gafferctl logs -f``
    from before the first line: did every line arrive?"""
    script = work / "paced.py"
    script.write_text(PACED)
    found = []
    for index, pace in enumerate(rates):
        name, total = f"paced{index}", int(pace * seconds)
        out, err = work / f"{name}.out", work / f"{name}.err"
        cluster.apply(name, [sys.executable, str(script), str(pace), f"{seconds:g}", f"{PACED_DELAY:g}"], "never")
        follower = Daemon(f"gafferctl logs {name} -f", [
            str(BIN / "gafferctl"), "--controller", cluster.endpoint, "logs", name, "-f", "-n", "1",
        ], out, err)
        result = Paced(pace, total)
        try:
            time.sleep(PACED_DELAY + seconds)  # the writer's own schedule
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                result.received, result.skipped, result.markers = paced_counts(out, err, total)
                if result.received + result.skipped >= total:
                    break
                time.sleep(0.2)  # poll the follower's output
        finally:
            follower.close(signal.SIGINT)
            cluster.delete(name)
        log(f"paced {pace:,} lines/s: {result.received:,} of {total:,} printed, {result.skipped:,} said skipped")
        found.append(result)
    return found


# --------------------------------------------------------------------- the report


@dataclass
class Run:
    fanout: dict[tuple[str, int, bool], FanOut] = field(default_factory=dict)
    slow: tuple[FanOut, FanOut] | None = None
    latency: dict[str, list[float]] = field(default_factory=dict)
    flood: Flood | None = None
    paced: list[Paced] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def rate(value: float) -> str:
    return f"{value:,.0f}/s" if value else "n/a"


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}x" if mine and theirs else "n/a"


def published(run: FanOut) -> str:
    return f"{run.events / run.sent_seconds:,.0f}" if run.sent_seconds else "n/a"


def fanout_section(run: Run, args: argparse.Namespace) -> list[str]:
    rows = []
    for n in args.subscribers:
        for narrow in (False, True):
            bare, mine = run.fanout.get(("bare", n, narrow)), run.fanout.get(("gaffer", n, narrow))
            if bare is None or mine is None:
                continue
            rows.append([
                n, "narrow (1/10)" if narrow else "all", f"{mine.events:,}", rate(bare.median),
                rate(mine.median), rate(min(mine.rates, default=0)), ratio(mine.median, bare.median),
                f"{bare.lost:,} / {mine.lost:,}", f"{published(bare)} / {published(mine)}",
            ])
            run.problems += [f"- {r.who} N={n} {'narrow' if narrow else 'all'}: {r.problem}"
                             for r in (bare, mine) if r.problem]
    return [
        "### Fan-out (events of the stream a second per subscriber, higher is better)",
        "",
        f"A publisher sends the events as fast as it can (data {args.payload} bytes, a "
        f"{len(eventpeers.frame(eventpeers.topics(10)[3], eventpeers.payload(args.payload)))}-byte "
        "frame) to N subscribers, each its own process; rate = events of the stream a subscriber "
        "received over the time from the first publish to its last receipt (narrow: it receives "
        f"a tenth, and the rate counts the stream it filtered). Median subscriber; best of "
        f"{args.rounds} rounds, bare and gaffer interleaved.",
        "",
        results.table(["N", "topics", "events", "bare", "gaffer", "gaffer slowest", "gaffer/bare",
                       "lost bare / gaffer", "published/s bare / gaffer"], rows, align="rlrrrrrrr"),
        "",
        "- gaffer: a `Controller` in its own process publishing through `hub.publish` (number, "
        "hold, pack into each subscription's batch; XPUB send per 128 events or loop turn), "
        "yielding to its loop every 1,000 events; subscribers read with "
        "`Client.events(prefixes)` (the real client, blocking).",
        "- bare: a pyzmq PUB with the hub's high-water mark sending a prepared frame of the same "
        "size and topics in a tight loop; a SUB with the client's high-water mark that receives "
        "and unpacks each message.",
        "- published/s: the publisher's own rate over its send loop; where it is close to the "
        "subscribers' rate, the publisher is what limits (it shares the cores with N readers).",
    ]


def latency_section(run: Run, args: argparse.Namespace) -> list[str]:
    rows = [[who, len(ms), f"{percentile(ms, 50):.2f}", f"{percentile(ms, 99):.2f}", f"{max(ms):.2f}"]
            for who, ms in run.latency.items() if ms]
    lines = [
        "### Agent event -> subscriber (ms, lower is better)",
        "",
        f"A template whose process runs `sleep {args.latency_sleep:g}` and exits, restarted at once "
        "(no flapping, startsecs 0), the cluster otherwise idle: each `proc.` event it causes "
        "timed from its `ts` (stamped by the agent as it happens) to its receipt by a "
        "`Client.events` subscriber in another process. bare: DEALER -> ROUTER relayed to PUB -> "
        "SUB (the same two hops), stamped by the sender, at the same pace.",
        "",
        results.table(["path", "samples", "p50", "p99", "max"], rows),
    ]
    bare, mine = run.latency.get("bare"), run.latency.get("gaffer")
    if bare and mine:
        lines += ["", f"- gaffer / bare: p50 {percentile(mine, 50) / percentile(bare, 50):.1f}x, "
                      f"p99 {percentile(mine, 99) / percentile(bare, 99):.1f}x"]
    return lines


def flood_section(run: Run, args: argparse.Namespace) -> list[str]:
    f = run.flood
    if f is None or not f.seconds:
        if f is not None and f.problem:
            run.problems.append(f"- flood: {f.problem}")
        return []
    rows = [
        ["lines printed by `gafferctl logs -f`", f"{f.printed / f.seconds:,.0f}/s", f"{f.printed:,} in {f.seconds:.1f} s"],
        ["lines reported skipped", f"{f.skipped / f.seconds:,.0f}/s", f"{f.markers} markers"],
        ["agent CPU (% of a core)", f"{statistics.mean(f.cpu[:f.before] or [0]):.0f}% before",
         f"{statistics.mean(f.cpu[f.before:] or [0]):.0f}% mean during, {max(f.cpu):.0f}% peak"],
        ["agent RSS MB", f"{f.rss[0]:.1f} start", f"{max(f.rss):.1f} peak, {f.rss[-1]:.1f} end"],
        ["controller RSS MB", f"{f.ctl_rss[0]:.1f} start", f"{max(f.ctl_rss):.1f} peak, {f.ctl_rss[-1]:.1f} end"],
        ["`gafferctl ps`, idle (ms)", f"{percentile(f.ps_idle, 50):.0f} p50", f"{max(f.ps_idle):.0f} max"],
        ["`gafferctl ps`, flood followed (ms)", f"{percentile(f.ps_flood, 50):.0f} p50", f"{max(f.ps_flood):.0f} max"],
    ]
    return [
        "### A `yes` flood followed by `gafferctl logs -f`",
        "",
        f"`yes` as a template on the agent; a real `gafferctl logs yes -f` follows it (output to a "
        f"file) for {f.seconds:.0f} s; the agent sampled every 0.25 s from 1 s before the flood; "
        f"{len(f.ps_flood)} whole `gafferctl ps` runs (process start included) during the window "
        "against as many before the flood.",
        "",
        results.table(["what", "value", ""], rows, align="lrl"),
    ]


def paced_section(run: Run, args: argparse.Namespace) -> list[str]:
    if not run.paced:
        return []
    rows = [[f"{p.rate:,}", f"{p.written:,}", f"{p.received:,}", f"{p.skipped:,}", p.markers,
             "yes" if p.received == p.written else "no"] for p in run.paced]
    return [
        "### A follower that keeps up (lines a second written, followed by `gafferctl logs -f`)",
        "",
        f"A process writes numbered lines at a set rate for {args.paced_seconds:g} s, "
        f"starting {PACED_DELAY:g} s after it is applied; a real `gafferctl logs NAME -f` follows "
        "it from the start. Printed: distinct numbered lines it printed; skipped: what its "
        "`lines skipped` markers said.",
        "",
        results.table(["lines/s", "written", "printed", "skipped", "markers", "every line"], rows),
    ]


def slow_section(run: Run, rounds: int) -> list[str]:
    if run.slow is None:
        return []
    flat, slow = run.slow
    run.problems += [f"- slow subscriber: {r.problem}" for r in (flat, slow) if r.problem]
    rows = [
        ["10 flat out", 10, rate(flat.median), rate(min(flat.rates, default=0)), f"{flat.lost:,}", ""],
        ["9 flat out + 1 at 10 events/s", 9, rate(slow.median), rate(min(slow.rates, default=0)),
         f"{slow.lost:,}", f"{sum(slow.slow):,}"],
    ]
    return [
        "### One slow subscriber among ten (gaffer, all topics)",
        "",
        f"{flat.events:,} events published as in the fan-out, to ten subscribers to every topic: "
        "all flat out, then one of them sleeping 0.1 s after each event it reads (until the "
        f"others are done) while nine read flat out. Interleaved, best of {rounds} rounds each.",
        "",
        results.table(["case", "fast", "median", "slowest", "lost (fast)", "slow one read"], rows,
                      align="lrrrrr"),
        "",
        f"- the nine keep {ratio(slow.median, flat.median)} of the all-flat-out rate (median)",
    ]


def verdicts(run: Run) -> list[str]:
    out = []
    mine, bare = run.fanout.get(("gaffer", 10, False)), run.fanout.get(("bare", 10, False))
    if mine is not None:
        met = "met" if mine.median >= TARGET_RATE else "not met"
        out.append(f"- gaffer to 10 subscribers, all topics: {rate(mine.median)} (target >= "
                   f"{TARGET_RATE:,}/s): **{met}**")
        if bare is not None and bare.median:
            share = mine.median / bare.median
            met = "met" if share >= TARGET_RATIO else "not met"
            out.append(f"- gaffer / bare to 10 subscribers: {share:.2f}x (target >= "
                       f"{TARGET_RATIO:.2f}): **{met}**; bare itself reached {rate(bare.median)}")
    if run.slow is not None and run.slow[0].median:
        flat, slow = run.slow
        out.append(f"- a subscriber reading 10 events/s leaves the other nine "
                   f"{slow.median / flat.median:.2f}x of the all-flat-out rate (same run, interleaved)")
    whole = [p.rate for p in run.paced if p.received == p.written]
    if run.paced:
        out.append(f"- a follower got every line up to {max(whole):,} lines/s" if whole else
                   f"- a follower missed lines at every rate tried (from {run.paced[0].rate:,} lines/s)")
    f = run.flood
    if f is not None and f.rss:
        out.append(f"- agent RSS while `yes` is followed: {f.rss[0]:.1f} MB -> peak {max(f.rss):.1f} MB "
                   f"(+{max(f.rss) - f.rss[0]:.1f} MB over {len(f.rss) * 0.25:.0f} s)")
    return out


def report(run: Run, args: argparse.Namespace, started: datetime.datetime, info: dict[str, str]) -> str:
    body = [
        *fanout_section(run, args), "",
        *slow_section(run, args.rounds), "",
        *latency_section(run, args), "",
        *flood_section(run, args), "",
        *paced_section(run, args), "",
    ]
    return "\n".join([
        "## Events",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/events.py{' --quick' if args.quick else ''}`: "
        f"{info['cpus']} CPUs ({info['cpu']}), {info['kernel']}, {info['python']}, load average "
        f"at start {info['load']}, at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        f"Versions: gaffer {gaffer.__version__}, pyzmq {zmq.__version__} (libzmq "
        f"{zmq.zmq_version()}). The machine was shared with other work: figures are noisy.",
        "",
        *body,
        "### Targets",
        "",
        *verdicts(run),
        *(["", "### Not measured", "", *run.problems] if run.problems else []),
    ])


# --------------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--subscribers", default="1,10,100", help="comma-separated N (default %(default)s)")
    add("--events", type=int, default=100_000, help="events per fan-out run (default %(default)s)")
    add("--deliveries", type=int, default=2_000_000,
        help="at most events x N per run: fewer events for many subscribers (default %(default)s)")
    add("--payload", type=int, default=100, help="bytes of data per event (default %(default)s)")
    add("--rounds", type=int, default=2, help="fan-out rounds, best kept (default %(default)s)")
    add("--latency-samples", type=int, default=500, help="(default %(default)s)")
    add("--latency-sleep", type=float, default=0.05,
        help="seconds the latency template's process lives (default %(default)s)")
    add("--flood-seconds", type=float, default=10.0, help="the followed window (default %(default)s)")
    add("--ps-runs", type=int, default=10, help="gafferctl ps runs, before and during (default %(default)s)")
    add("--paced-rates", default="1000,10000,50000",
        help="lines/s of the paced writer a follower must keep up with (default %(default)s)")
    add("--paced-seconds", type=float, default=3.0, help="each paced writer's time (default %(default)s)")
    add("--skip", default="", help="comma-separated parts to leave out: fanout,slow,latency,flood,paced")
    add("--quick", action="store_true", help="a few-second smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    try:
        args.subscribers = sorted({int(s) for s in args.subscribers.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--subscribers: expected comma-separated integers, got {args.subscribers!r}")
    try:
        args.paced_rates = [int(s) for s in args.paced_rates.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--paced-rates: expected comma-separated integers, got {args.paced_rates!r}")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - {"fanout", "slow", "latency", "flood", "paced"}:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(args.skip))}")
    if args.quick:
        args.subscribers, args.events, args.deliveries, args.rounds = [1, 10], 5_000, 50_000, 1
        args.latency_samples, args.flood_seconds, args.ps_runs, args.no_write = 30, 2.0, 2, True
        args.paced_rates, args.paced_seconds = [1000, 10_000], 1.0
    if not args.subscribers or not 1 <= min(args.subscribers) <= max(args.subscribers) <= 500:
        parser.error("--subscribers: each N in 1..500")
    if not (FAMILIES <= args.events <= 10_000_000 and 16 <= args.payload <= 1_000_000 and args.rounds >= 1):
        parser.error("--events in 10..10,000,000, --payload in 16..1,000,000, --rounds >= 1")
    if any(not 1 <= r <= 10_000_000 for r in args.paced_rates) or not 0.1 <= args.paced_seconds <= 600:
        parser.error("--paced-rates: each in 1..10,000,000 lines/s; --paced-seconds in 0.1..600")
    if args.latency_samples < 10 or not 0.001 <= args.latency_sleep <= 10 or args.ps_runs < 1:
        parser.error("--latency-samples >= 10, --latency-sleep in 0.001..10 s, --ps-runs >= 1")
    return args


def measure(run: Run, args: argparse.Namespace, work: Path) -> None:
    if "fanout" not in args.skip:
        run.fanout = measure_fanout(args, work / "fanout")
    if "slow" not in args.skip:
        run.slow = measure_slow(args, work / "slow")
    if not {"latency", "flood", "paced"} - args.skip:
        return
    cluster = Cluster(work / "cluster")
    try:
        measure_cluster(run, args, cluster, work)
    except (TimeoutError, RuntimeError, OSError, GafferError) as exc:
        run.problems.append(f"- the cluster parts stopped: {type(exc).__name__}: {exc}")
    finally:
        cluster.close()


def measure_cluster(run: Run, args: argparse.Namespace, cluster: Cluster, work: Path) -> None:
    """The parts that need a real controller and agent: latency, the followed flood, paced."""
    cluster.start()
    if "latency" not in args.skip:
        run.latency["gaffer"] = measure_latency(cluster, args.latency_samples, args.latency_sleep)
        run.latency["bare"] = measure_bare_latency(args.latency_samples, args.latency_sleep / 3)
        log(f"latency: p50 gaffer {percentile(run.latency['gaffer'] or [0], 50):.2f} ms, "
            f"bare {percentile(run.latency['bare'] or [0], 50):.2f} ms")
    if "flood" not in args.skip:
        run.flood = measure_flood(cluster, args.flood_seconds, args.ps_runs, work / "cluster")
        log(f"flood: {run.flood.printed:,} lines printed in {run.flood.seconds:.1f} s {run.flood.problem}")
    if "paced" not in args.skip and args.paced_rates:
        run.paced = measure_paced(cluster, args.paced_rates, args.paced_seconds, work / "cluster")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    WORK.mkdir(parents=True, exist_ok=True)
    CTX.set_forkserver_preload(["eventpeers"])
    started, info = datetime.datetime.now(datetime.timezone.utc), results.machine()
    run = Run()
    try:
        with tempfile.TemporaryDirectory(prefix="run-", dir=WORK) as tmp:
            for part in ("fanout", "slow", "cluster"):
                (Path(tmp) / part).mkdir()
            measure(run, args, Path(tmp))
    except KeyboardInterrupt:
        log("interrupted: every process started so far has been stopped")
        return 130
    markdown = report(run, args, started, info)
    print(markdown)
    if not args.no_write:
        log(f"written to {results.write_section('events', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
