"""How long an operator waits for one control command: gafferctl against circusctl and supervisorctl.

Each peer's daemon runs (``managers.py``) with a few ``sleep`` children; each command is run
``--runs`` times, the commands interleaved run by run so the machine's noise falls on all of
them alike. Timed from fork to exit (wall), with the child's CPU time (user + system, from
``wait4``), against the floor: ``python -c pass`` of the same interpreter. Target (issue 9,
item 11): ``gafferctl ps`` under 100 ms.

    .venv/bin/python bench/cli_startup.py              # 30 runs each, writes RESULTS.md
    .venv/bin/python bench/cli_startup.py --quick      # 5 runs, prints only
    .venv/bin/python bench/cli_startup.py --skip-peers
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone

import managers
import results

TARGET_MS = 100.0
PEERS_FLOOR = "bare python (peers' venv)"
FLOORS = {"circusctl list": PEERS_FLOOR, "supervisorctl status": PEERS_FLOOR, PEERS_FLOOR: PEERS_FLOOR}
"""Each command's floor: ``python -c pass`` in its own venv."""


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv``; RuntimeError if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime


def commands(gaffer: managers.Manager, peers: list[managers.Manager]) -> list[tuple[str, list[str], dict[str, str]]]:
    bare = [sys.executable, "-c", "pass"]  # gaffer.env: managers.bench_env(), bytecode cached
    ctl = str(managers.GAFFER_BIN / "gafferctl")
    rows = [
        ("bare python", bare, gaffer.env),
        ("gafferctl --help", [ctl, "--help"], gaffer.env),
        ("gafferctl ps", [ctl, "ps"], gaffer.env),
        ("gafferctl ps --json", [ctl, "ps", "--json"], gaffer.env),
        ("gafferctl status", [ctl, "status"], gaffer.env),
    ]
    for peer in peers:
        label = {"circus": "circusctl list", "supervisor": "supervisorctl status"}[peer.name]
        rows.append((label, peer.ctl, peer.env))
    if peers:
        rows.append(("bare python (peers' venv)", [str(managers.PEERS_BIN / "python"), "-c", "pass"], gaffer.env))
    return rows


def measure(rows: list[tuple[str, list[str], dict[str, str]]], runs: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {label: {"wall": [], "cpu": []} for label, _, _ in rows}
    for label, argv, env in rows:  # one untimed run each: page cache and .pyc files warm
        run_once(argv, env)
    for _ in range(runs):
        for label, argv, env in rows:
            wall, cpu = run_once(argv, env)
            samples[label]["wall"].append(wall * 1000)
            samples[label]["cpu"].append(cpu * 1000)
    return samples


def report(samples: dict[str, dict[str, list[float]]], runs: int, children: int, peers: str) -> str:
    bare = statistics.median(samples["bare python"]["wall"])
    ps = statistics.median(samples["gafferctl ps"]["wall"])
    table_rows = []
    for label, got in samples.items():
        wall, cpu = got["wall"], got["cpu"]
        median = statistics.median(wall)
        floor = min(samples[FLOORS.get(label, "bare python")]["cpu"])
        table_rows.append((
            label, f"{min(wall):.0f}", f"{median:.0f}", f"{statistics.quantiles(wall, n=10)[-1]:.0f}" if len(wall) > 1 else "-",
            f"{min(cpu):.0f}", f"{min(cpu) - floor:.0f}", f"{median / bare:.2f}x", f"{median / ps:.2f}x",
        ))
    info = results.machine()
    lines = [
        "## CLI start-up",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/cli_startup.py`: {info['cpus']} CPUs "
        f"({info['cpu']}), {info['kernel']}, {info['python']}, load average at start {info['load']}.",
        f"Peers: {peers}. Each daemon runs {children} `sleep` children; {runs} runs of each command, "
        "interleaved run by run, after one untimed run each.",
        "",
        results.table(
            ["command", "min ms", "median ms", "p90 ms", "CPU min ms", "CPU over its floor ms", "median / bare", "median / gafferctl ps"],
            table_rows,
        ),
        "",
        "- Wall: fork to exit of the whole command (interpreter start, imports, the request, printing). "
        "CPU: the child's user + system time (`wait4`); over its floor: minus the least CPU of "
        "`python -c pass` in the command's own venv, what the tool itself costs (the least noisy column).",
        "- bare python: `python -c pass` of the same interpreter, the floor every Python CLI pays "
        "(the peers' venv runs the same CPython; the project venv's floor is higher by the editable "
        "install's import finder, which an installed gaffer does not have).",
        "- Every command runs with bytecode caching on (`PYTHONPYCACHEPREFIX` under bench/.work), "
        "written by the untimed first run, as an installed package has its .pyc files.",
        "- gafferctl sends its requests on the blocking client (plain pyzmq, no event loop) and imports "
        "what a command alone needs inside it (`tests/e2e/test_lean_imports.py` pins the module sets).",
        "",
        "### Target",
        "",
        f"- `gafferctl ps` median {ps:.0f} ms (target < {TARGET_MS:.0f} ms): **{'met' if ps < TARGET_MS else 'not met'}**",
    ]
    ours = min(samples["gafferctl ps"]["cpu"]) - min(samples["bare python"]["cpu"])
    for label in ("circusctl list", "supervisorctl status"):
        if label in samples:
            other = statistics.median(samples[label]["wall"])
            theirs = min(samples[label]["cpu"]) - min(samples[PEERS_FLOOR]["cpu"])
            lines.append(f"- `{label}` median {other:.0f} ms: gafferctl ps takes {ps / other:.2f}x its time, "
                         f"and {ours / theirs:.2f}x its CPU over the floor")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="5 runs, print only")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    say = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # noqa: E731
    why = "" if args.skip_peers else managers.peers_available(say)
    if why:
        say(f"peers n/a: {why}")
    with_peers = not args.skip_peers and not why
    work = managers.WORK / "cli_startup"
    with ExitStack() as stack:
        say(f"starting gaffer{', circus, supervisor' if with_peers else ''} with {args.children} sleeps each")
        gaffer = stack.enter_context(managers.Gaffer(work / "gaffer", args.children))
        peers = []
        if with_peers:
            peers = [stack.enter_context(cls(work / cls.name, args.children)) for cls in (managers.Circus, managers.Supervisor)]
        say(f"{runs} runs of each command")
        samples = measure(commands(gaffer, peers), runs)
    versions = managers.versions() if with_peers else {}
    peer_text = ", ".join(f"{k} {v}" for k, v in versions.items()) or "not measured"
    text = report(samples, runs, args.children, peer_text)
    print(text)
    if not (args.quick or args.no_write):
        print(f"\nwrote {results.write_section('cli-startup', text)}")


if __name__ == "__main__":
    main()
