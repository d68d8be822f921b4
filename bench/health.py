"""What readiness checks cost an agent: CPU and loop lag with 1,000 checked instances.

One agent-like process (a ``Manager`` on uvloop, as ``gaffer-agent`` runs it) keeps ``--count``
(1,000) ``sleep 3600`` instances, each with a check every ``--interval`` (5 s), all against one
shared local HTTP server (a separate process, a threaded ``http.server``) so the instances
themselves stay cheap. Once every instance is ready (or running, without checks), its CPU
(utime + stime of all its threads, from ``/proc/self/stat``) is read over ``--window`` seconds,
as a percentage of one core, while a timer every 10 ms records how late the loop runs it (the
loop lag: p50, p99, max). Modes, each in a fresh process: ``none`` (no check: the floor of
watching the instances), ``tcp``, ``http`` and, with ``--exec``, ``exec`` (``true``, a process
per check: the expensive comparison). Target (issue 12): http checks cost a few percent of one
core.

    .venv/bin/python bench/health.py                       # 1,000, 5 s, 20 s window, writes RESULTS.md
    .venv/bin/python bench/health.py --count 100 --window 6 --no-write
    .venv/bin/python bench/health.py --exec                # adds exec checks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import results

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 4096  # 1,000 checks may connect at once
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""
TARGET_PERCENT = 5.0


def own_ticks() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


async def lag_sampler(samples: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        planned = loop.time() + every
        await asyncio.sleep(every)
        samples.append(max(0.0, loop.time() - planned))


def health_of(mode: str, port: int, interval: float) -> dict | None:
    timeout = min(2.0, interval)
    if mode == "http":
        return {"type": "http", "url": f"http://127.0.0.1:{port}/healthz", "interval": interval, "timeout": timeout}
    if mode == "tcp":
        return {"type": "tcp", "port": port, "interval": interval, "timeout": timeout}
    if mode == "exec":
        return {"type": "exec", "command": "true", "interval": interval, "timeout": timeout}
    return None


async def agent(mode: str, count: int, interval: float, port: int, window: float) -> dict:
    """Run as the measured process: the figures as a dict."""
    from gaffer.agent.manager import Manager
    from gaffer.common.template import parse_template

    manager = Manager(node="bench")
    data = {"cmd": "sleep", "args": ["3600"], "numprocesses": count, "startsecs": 0, "redirect_output": []}
    check = health_of(mode, port, interval)
    if check is not None:
        data["health"] = check
    manager.add(parse_template(data, name="hc"))
    state = "running" if check is None else "ready"
    started = time.monotonic()
    try:
        await manager.wait_until(
            lambda: sum(1 for row in manager.instances("hc") if row["state"] == state) == count, timeout=120)
        ready_after = time.monotonic() - started
        await asyncio.sleep(interval)  # settle: one round of checks after the start-up burst
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(lag_sampler(samples, stop))
        runs_before = manager._act.readiness.checks.runs
        ticks, t0 = own_ticks(), time.monotonic()
        await asyncio.sleep(window)  # the measured window
        elapsed = time.monotonic() - t0
        cpu = (own_ticks() - ticks) / CLK_TCK / elapsed * 100
        runs = manager._act.readiness.checks.runs - runs_before
        stop.set()
        await sampler
    finally:
        await manager.shutdown()
        await manager.aclose()
    samples.sort()
    return {
        "mode": mode, "count": count, "cpu": cpu, "checks_per_s": runs / elapsed, "ready_after": ready_after,
        "lag_p50": statistics.median(samples) * 1000, "lag_p99": samples[int(len(samples) * 0.99)] * 1000,
        "lag_max": samples[-1] * 1000,
    }


def run_agent(mode: str, args: argparse.Namespace, port: int) -> dict:
    command = [sys.executable, __file__, "--agent", mode, "--count", str(args.count), "--interval",
               str(args.interval), "--window", str(args.window), "--port", str(port)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = child.communicate(timeout=args.window + args.interval + 300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if child.returncode != 0:
        raise SystemExit(f"the {mode} run failed (exit {child.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def report(rows: list[dict], args: argparse.Namespace, load: str) -> str:
    info = results.machine()
    lines = [
        "## Health checks", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/health.py`: {info['cpus']} CPUs "
        f"({info['cpu']}), {info['kernel']}, {info['python']}, load average at start {load}.",
        f"{args.count} `sleep 3600` instances in one Manager on uvloop (as an agent runs them), a check "
        f"every {args.interval:g} s each against one shared local HTTP server (or its port), measured "
        f"over {args.window:g} s once all were ready.", "",
        "| checks | instances | checks/s | agent CPU (% of one core) | loop lag p50 | p99 | max |",
        "| ------ | --------: | -------: | ------------------------: | -----------: | --: | --: |",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['count']} | {r['checks_per_s']:.0f} | {r['cpu']:.1f}% | "
                     f"{r['lag_p50']:.1f} ms | {r['lag_p99']:.1f} ms | {r['lag_max']:.1f} ms |")
    lines += [
        "", "- CPU: utime + stime of every thread of the measured process over the window (10 ms ticks), "
        "the shared HTTP server not included. Loop lag: how late a 10 ms timer fires.",
        "- `none`: the same instances without checks, the floor. `exec` runs `true` per check.",
        "- The machine is shared with other work (see the load average): the figures are noisy.",
    ]
    http = next((r for r in rows if r["mode"] == "http"), None)
    if http is not None:
        met = "met" if http["cpu"] <= TARGET_PERCENT else "not met"
        lines += ["", "### Target", "",
                  f"- http checks: {http['cpu']:.1f}% of one core (target <= {TARGET_PERCENT:g}%): **{met}**"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--exec", action="store_true", help="also measure exec checks")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.count <= 5000 or not 0.1 <= args.interval <= 60 or not 1 <= args.window <= 600:
        parser.error("--count 1..5000, --interval 0.1..60, --window 1..600")
    if args.agent:
        import uvloop

        print(json.dumps(uvloop.run(agent(args.agent, args.count, args.interval, args.port, args.window))))
        return
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = int(server.stdout.readline())
        modes = ["none", "tcp", "http"] + (["exec"] if args.exec else [])
        rows = []
        for mode in modes:
            rows.append(run_agent(mode, args, port))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    text = report(rows, args, load)
    print(text)
    if not args.no_write:
        print(f"wrote {results.write_section('health', text)}")


if __name__ == "__main__":
    main()
