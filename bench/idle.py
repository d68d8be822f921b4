"""What a process manager costs while nothing happens: CPU, wake-ups and memory over N sleeps.

``gaffer start``, circusd and supervisord (``managers.py``) each start ``--children`` (200)
``sleep 3600`` from their defaults, settle ``--settle`` seconds, and are then read from
``/proc`` only, never asked anything, over ``--window`` seconds: CPU (utime + stime of all the
daemon's threads, clock ticks of 10 ms, so a 20 s window resolves 0.05 %), voluntary context
switches of all its threads per second (its wake-ups), RSS and PSS (shared pages divided among
the processes that map them) at the end. The sleeps themselves are not counted. Then the fd
keeper an agent runs beside it, started as the agent starts it, empty and holding the pipes of
``--children`` instances, and a bare interpreter of the same venv waiting on stdin, for scale. Targets (issue 9, item 12): ``gaffer start`` at or
under supervisor's CPU and memory, the keeper under 10 MB.

    .venv/bin/python bench/idle.py                # 200 children, 20 s windows, writes RESULTS.md
    .venv/bin/python bench/idle.py --quick        # 20 children, 5 s windows, prints only
    .venv/bin/python bench/idle.py --skip-peers
    .venv/bin/python bench/idle.py --keeper-only     # the keeper rows only, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import managers
import psutil
import results

from gaffer.agent.keeper.client import KeeperClient
from gaffer.agent.statcadence import IDLE_EVERY

KEEPER_TARGET_KB = 10 * 1024


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def idle(manager: managers.Manager, settle: float, window: float) -> dict[str, float]:
    """The manager's CPU %, wake-ups per second and memory over one quiet window."""
    with manager:
        time.sleep(settle)  # the bench measures idleness: it waits on purpose
        pid = manager.pid
        ticks, woke, started = managers.cpu_ticks(pid), switches(pid), time.monotonic()
        time.sleep(window)  # the measured window
        elapsed = time.monotonic() - started
        cpu = (managers.cpu_ticks(pid) - ticks) / managers.CLK_TCK / elapsed * 100
        wakeups = (switches(pid) - woke) / elapsed
        memory = managers.memory(pid)
        children = len(manager.children())
    return {"cpu": cpu, "wakeups": wakeups, "children": children, **memory}


def lone_process(argv: list[str], ready: str | None, settle: float) -> dict[str, float]:
    """Memory of one process once it printed ``ready`` on stderr (or after ``settle``)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if ready is not None:
            line = proc.stderr.readline() if proc.stderr else ""
            if ready not in line:
                raise RuntimeError(f"{' '.join(argv[:4])}: expected {ready!r}, got {line!r}")
        else:
            time.sleep(settle)  # a bare interpreter prints nothing: give it its start-up
        return {"cpu": float("nan"), "wakeups": float("nan"), "children": 0, **managers.memory(proc.pid)}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def keeper_holding(path: Path, count: int, settle: float) -> dict[str, float]:
    """Memory of a keeper started as an agent starts it (``KeeperClient.connect``), once it holds
    the out and err read ends of ``count`` instances and the agent is still connected: the
    keeper's real idle state beside an agent of ``count`` captured sleeps."""

    async def measure() -> dict[str, float]:
        client = await KeeperClient.connect(path, idle_timeout=600)
        keeper = psutil.Process(client.keeper_pid)
        pipes: list[int] = []
        try:
            answers = []
            for index in range(count):
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                pipes += [out_r, out_w, err_r, err_w]
                answers.append(client.deposit(f"sleep.{index}", {"out": out_r, "err": err_r}))
            await asyncio.gather(*answers)
            await asyncio.sleep(settle)  # the bench measures idleness: it waits on purpose
            return {"cpu": float("nan"), "wakeups": float("nan"), "children": count,
                    **managers.memory(keeper.pid)}
        finally:
            client.close()
            keeper.send_signal(signal.SIGTERM)
            keeper.wait(timeout=30)
            for fd in pipes:
                os.close(fd)

    return asyncio.run(measure())


def ratio(ours: float, theirs: float) -> str:
    """``ours / theirs`` as ``1.23x``; n/a when theirs is 0 (no tick in the window)."""
    return f"{ours / theirs:.2f}x" if theirs else ("1.00x" if not ours else "n/a (theirs 0)")


def mb(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace, peers: str) -> str:
    info = results.machine()
    table_rows = []
    for who, got in rows.items():
        cpu = "-" if got["cpu"] != got["cpu"] else f"{got['cpu']:.2f}%"
        wake = "-" if got["wakeups"] != got["wakeups"] else f"{got['wakeups']:.1f}"
        table_rows.append((who, got["children"], cpu, wake, mb(got["rss"]), mb(got["pss"])))
    lines = [
        "## Idle",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/idle.py`: {info['cpus']} CPUs "
        f"({info['cpu']}), {info['kernel']}, {info['python']}, load average at start {info['load']}.",
        f"Peers: {peers}. {args.children} `sleep 3600` children each, {args.settle:g} s to settle, "
        f"then a {args.window:g} s window read from /proc only.",
        "",
        results.table(["who", "children", "CPU", "wake-ups/s", "RSS MB", "PSS MB"], table_rows),
        "",
        "- CPU: utime + stime of every thread of the daemon over the window (10 ms ticks); wake-ups: "
        "voluntary context switches of all its threads per second. The sleeps are not counted.",
        "- RSS counts every resident page the process maps, shared libraries whole; PSS divides each "
        "shared page among the processes mapping it (what the process adds to the host).",
        "- gaffer start: its defaults (output captured, descendants tracked, no keeper: the embedded "
        "agent holds its pipes itself). circus: no capture (its default); supervisor: log files (its default).",
        "- gaffer start is never asked anything here, so its stats are sampled every "
        f"{IDLE_EVERY} x 5 s (nobody looks: `statcadence.py`) and its HTTP stack is not loaded (no request yet); "
        "a window shorter than that may hold no sample.",
        "- keeper: the fd keeper every `gaffer-agent` runs beside it, started as the agent starts it "
        "(`KeeperClient.connect`: `python -S`, detached), the agent still connected, holding nothing "
        f"(empty) or the out and err read ends of {args.children} instances (held): its idle state beside "
        f"an agent of {args.children} captured sleeps. bare python: this venv's interpreter doing nothing "
        "(with `site` and the editable install's import finder).",
        "- The machine may be shared with other work (see the load average): CPU and wake-ups are then "
        "noisy; RSS does not depend on load, PSS does on how many other processes map the same libraries.",
        "",
        "### Targets",
        "",
    ]
    gaffer = rows.get("gaffer start")
    sup = rows.get("supervisor")
    if gaffer and sup:
        for key, what in (("cpu", "CPU"), ("rss", "RSS"), ("pss", "PSS")):
            met = gaffer[key] <= sup[key] * 1.005  # equal within a rounding of the ticks or pages
            lines.append(f"- gaffer start {what} / supervisor's: {ratio(gaffer[key], sup[key])} (target <= 1x): "
                         f"**{'met' if met else 'not met'}**")
    if gaffer and "circus" in rows:
        circus = rows["circus"]
        lines.append(f"- gaffer start / circus: CPU {ratio(gaffer['cpu'], circus['cpu'])}, "
                     f"RSS {ratio(gaffer['rss'], circus['rss'])}, PSS {ratio(gaffer['pss'], circus['pss'])}")
    keeper = rows.get(f"keeper, {args.children} held")
    if keeper:
        lines.append(f"- keeper holding {args.children} instances' pipes: RSS {mb(keeper['rss'])} MB (target < 10 MB): "
                     f"**{'met' if keeper['rss'] < KEEPER_TARGET_KB else 'not met'}**; PSS {mb(keeper['pss'])} MB; "
                     f"a bare interpreter's RSS is {mb(rows['bare python']['rss'])} MB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="20 children, 5 s windows, print only")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--keeper-only", action="store_true", help="the keeper and bare python only, print only")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.children, args.window, args.settle = 20, 5.0, 2.0
    os.environ.update(managers.bench_env())  # the keepers started below cache their bytecode too
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    say = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # noqa: E731
    args.skip_peers |= args.keeper_only
    why = "" if args.skip_peers else managers.peers_available(say)
    if why:
        say(f"peers n/a: {why}")
    kinds = [] if args.keeper_only else [managers.Gaffer]
    kinds += [] if args.skip_peers or why else [managers.Circus, managers.Supervisor]
    work = managers.WORK / "idle"
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = {}
    for kind in kinds:
        say(f"{kind.name}: {args.children} sleeps, {args.settle:g} s settle, {args.window:g} s window")
        rows["gaffer start" if kind is managers.Gaffer else kind.name] = idle(kind(work / kind.name, args.children), args.settle, args.window)
    rows["keeper, empty"] = keeper_holding(work / "empty.sock", 0, args.settle)
    rows[f"keeper, {args.children} held"] = keeper_holding(work / "holding.sock", args.children, args.settle)
    rows["bare python"] = lone_process([sys.executable, "-c", "import sys; sys.stdin.read()"], None, 1.0)
    versions = managers.versions() if len(kinds) > 1 else {}
    peer_text = ", ".join(f"{k} {v}" for k, v in versions.items()) or "not measured"
    text = report(rows, args, peer_text)
    print(text)
    if not (args.quick or args.no_write or args.keeper_only):
        print(f"\nwrote {results.write_section('idle', text)}")


if __name__ == "__main__":
    main()
