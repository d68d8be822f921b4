"""Reconcile benchmark: placement alone, a controller converging 1,000 simulated agents, and
real daemons on three hosts in network namespaces; each beside its floor, in the same run.

(a) **scheduler** (pure ``schedule``): 1,000 nodes, 100,000 instances (one template, and 100
    templates of 1,000): place from scratch, re-place after one node is lost, and the pass
    that changes nothing (what every reconcile costs once the cluster is full). Best of
    ``--rounds``. **bare**: building the same placement as a plain dict (round-robin), and
    re-pointing the lost node's slots: what any placer must at least do in Python.
(b) **controller** in its own process (``simagent.py controller``: a ``Controller`` with a stall
    probe on its loop), ``--agents`` simulated agents over real TCP (``simagent.py fleet``).
    A template at 0 is scaled to ``--count`` and back to 0; timed from the ``scale`` call to
    the moment the last agent acked the generation carrying the change (each agent records it),
    then until the controller's ``status`` shows every instance running (the agents report at
    once). The probe records the loop's worst stall over the whole convergence. Then one
    agent goes silent (a host lost): timed until its ordinals are acked elsewhere, against the
    liveness timeout + node grace. **bare**: a ROUTER pushing a prepared assignment of the
    same shape to every agent and the same agents acking it.
(c) **cluster** on a ``tests/cluster/netlab.py`` lab (root and ``ip netns``): the real
    ``gaffer-controller`` on one host and a ``gaffer-agent`` on each of three more, short
    liveness settings. ``scale`` 0 -> ``--lab-count`` real processes to all running (``ps``
    polled); host loss (SIGKILL an agent and every process it ran, found by GAFFER_NODE in their
    environment) to all running elsewhere; a partition of another host to all running elsewhere,
    and after healing, to its stale copies stopped.

Results go to the ``reconcile`` section of bench/RESULTS.md. Every loop is bounded; every
process is stopped by pid (the lab kills everything in its namespaces, the benches check
afterwards that nothing with their nodes' GAFFER_NODE survived).

    .venv/bin/python bench/reconcile.py [--parts a,b,c] [--quick] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import datetime
import gc
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))

import gaffer  # noqa: E402
import results  # noqa: E402
import simagent  # noqa: E402
from gaffer.client import AsyncClient, ReceivedEvent  # noqa: E402
from gaffer.common.template import parse_template  # noqa: E402
from gaffer.controller.liveness import Liveness  # noqa: E402
from gaffer.controller.scheduler import Demand, NodeInfo, schedule  # noqa: E402
from simagent import Child, close_all, cpu_seconds, start_fleets, wait_fleets  # noqa: E402

WORK = HERE / ".work"
TEMPLATE = "simt"
SLEEP = shutil.which("sleep") or "/bin/sleep"
STALL_TARGET_MS = 100.0
LOSS_SLACK = 1.0
LAB_LIVENESS = Liveness(interval=0.2, suspect_misses=3, down_misses=5, startup_grace=1.0)
LAB_NODE_GRACE = 1.0
CLONE_NEWNET = 0x40000000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def best_of(rounds: int, work: Callable[[], Any]) -> list[float]:
    """Seconds of each of ``rounds`` runs of ``work`` (a collection first, so each starts alike)."""
    found = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        work()
        found.append(time.perf_counter() - started)
    return found


# ===================================================================== (a) scheduler


def scheduler_part(nodes: int, instances: int, rounds: int) -> list[dict[str, Any]]:
    infos = [NodeInfo(f"node{i:04d}", "up") for i in range(nodes)]
    names = [info.name for info in infos]
    lost_name = names[0]
    lost = [NodeInfo(lost_name, "lost"), *infos[1:]]
    alive = names[1:]
    rows = []
    for templates in (1, 100):
        per = instances // templates
        demands = [Demand(f"t{j:03d}", per) for j in range(templates)]
        shape = f"{templates} x {per:,}"
        plan = schedule(demands, infos, {})
        current = dict(plan.placement)
        on_lost = sum(1 for node in current.values() if node == lost_name)
        replan = schedule(demands, lost, current)

        def bare_scratch() -> dict:
            return {(d.name, o): names[o % nodes] for d in demands for o in range(1, per + 1)}

        def bare_replace() -> dict:
            spare = iter(range(len(current)))
            return {s: n if n != lost_name else alive[next(spare) % len(alive)]
                    for s, n in current.items()}

        cases = [
            ("place from scratch", lambda: schedule(demands, infos, {}), bare_scratch,
             len(plan.added)),
            ("re-place after one node lost", lambda: schedule(demands, lost, current),
             bare_replace, len(replan.moved)),
            ("nothing changed", lambda: schedule(demands, infos, current), lambda: dict(current),
             len(schedule(demands, infos, current).moved)),
        ]
        for case, mine, bare, moved in cases:
            rows.append({"shape": shape, "case": case, "gaffer": best_of(rounds, mine),
                         "bare": best_of(rounds, bare), "moved": moved, "on_lost": on_lost})
            log(f"scheduler {shape:>11} {case:<30} {min(rows[-1]['gaffer']) * 1000:8.1f} ms "
                f"(bare {min(rows[-1]['bare']) * 1000:6.1f} ms)")
    return rows


# ===================================================================== (b) controller


def template_body(count: int) -> dict[str, Any]:
    return {"name": TEMPLATE, "cmd": SLEEP, "args": ["3600"], "startsecs": 0,
            "numprocesses": count}


async def wait_running(client: AsyncClient, count: int, timeout: float, interval: float) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await client.call("status"))["instances"]["running"] != count:
        if loop.time() > deadline:
            raise TimeoutError(f"the controller never saw {count} instances running")
        await asyncio.sleep(interval)  # poll
    return time.monotonic()


async def timed_scale(ctl: Child, client: AsyncClient, fleets: list[Child], agents: int,
                      count: int, args: argparse.Namespace) -> dict[str, Any]:
    await ctl.ask("probe", reset=True)
    cpu0 = cpu_seconds(ctl.pid)[0]
    t0 = time.monotonic()
    await client.call("scale", name=TEMPLATE, count=count)
    stats = await wait_fleets(
        fleets, lambda s: s["held"] == count and s["acked_since"] == agents,
        60 + count / 500, what=f"every agent acking the scale to {count:,}", since=t0,
    )
    seen = await wait_running(client, count, 120, args.status_poll) - t0
    probe = await ctl.ask("probe", reset=True)
    return {"acked": stats["last_ack"] - t0, "seen": seen, "stall_ms": probe["worst_ms"],
            "over_ms": probe["over_ms"], "top": probe["top"], "gc": probe["gc"], "t0": t0,
            "cpu": cpu_seconds(ctl.pid)[0] - cpu0}


async def node_loss(ctl: Child, client: AsyncClient, fleets: list[Child], count: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    await ctl.ask("probe", reset=True)
    t0 = time.monotonic()
    silenced = await fleets[0].ask("silence", index=0)
    bound = args.liveness.down_after + args.node_grace
    stats = await wait_fleets(fleets, lambda s: s["held"] == count, bound + 60,
                              what=f"the {silenced['held']} ordinals of a lost node acked elsewhere",
                              since=t0, interval=0.02)
    probe = await ctl.ask("probe", reset=True)
    return {"seconds": stats["last_ack"] - t0, "moved": silenced["held"], "bound": bound,
            "stall_ms": probe["worst_ms"], "over_ms": probe["over_ms"]}


async def controller_part(args: argparse.Namespace, run: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="reconcile-ctl-", dir=WORK))
    live = args.liveness
    argv = ["--data-dir", str(work / "controller"), "--log-level", "info",
            "--probe-ms", str(args.probe_ms), "--heartbeat", str(live.interval),
            "--suspect-misses", str(live.suspect_misses), "--down-misses", str(live.down_misses),
            "--startup-grace", "0", "--node-grace", str(args.node_grace)]
    out: dict[str, Any] = {"up": [], "down": []}
    ctl: Child | None = None
    fleets: list[Child] = []
    client: AsyncClient | None = None
    try:
        ctl = await Child.start("controller", argv, work / "controller.log")
        fleets = await start_fleets(ctl.hello["endpoint"], args.agents, args.per_fleet, work,
                                    bare=False, run=run, hello_instances=0)
        await wait_fleets(fleets, lambda s: s["welcomed"] == args.agents, 60 + args.agents * 0.05,
                          what=f"{args.agents} agents welcomed")
        client = AsyncClient(ctl.hello["endpoint"], timeout=60.0)
        await client.call("apply", templates=[template_body(0)])
        await asyncio.sleep(args.settle)  # registration and empty assignments drained
        for round_no in range(args.rounds + (1 if args.profile else 0)):
            profiled = bool(args.profile) and round_no == 0
            if profiled:
                await ctl.ask("profile-start")
            up = await timed_scale(ctl, client, fleets, args.agents, args.count, args)
            if profiled:
                out["profile"] = (await ctl.ask("profile-stop", path=str(args.profile)))["top"]
                up["profiled"] = True
            out["up"].append(up)
            log(f"controller round {round_no + 1}: 0 -> {args.count:,} acked in {up['acked']:.2f}s, "
                f"seen running {up['seen']:.2f}s, worst stall {up['stall_ms']:.0f} ms "
                f"({up['gc']['full']} full collections, longest {up['gc']['full_worst_ms']:.0f} ms)"
                + (" (profiled, not counted)" if profiled else ""))
            down = await timed_scale(ctl, client, fleets, args.agents, 0, args)
            down["profiled"] = profiled
            out["down"].append(down)
            log(f"controller round {round_no + 1}: {args.count:,} -> 0 acked in {down['acked']:.2f}s, "
                f"worst stall {down['stall_ms']:.0f} ms")
        if not args.skip_loss:
            await timed_scale(ctl, client, fleets, args.agents, args.count, args)
            out["loss"] = await node_loss(ctl, client, fleets, args.count, args)
            log(f"controller: lost node's {out['loss']['moved']} ordinals acked elsewhere in "
                f"{out['loss']['seconds']:.2f}s (timeout + grace {out['loss']['bound']:.1f}s)")
        out["health"] = (await client.call("status"))["link"]
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"controller part failed: {out['error']} (logs in {work})")
    finally:
        if client is not None:
            await client.close()
        await close_all(fleets)
        if ctl is not None:
            await ctl.close()
        if not args.keep_work and "error" not in out:
            shutil.rmtree(work, ignore_errors=True)
    return out


async def bare_part(args: argparse.Namespace, run: str) -> dict[str, Any]:
    """The same agents and assignments, pushed by a bare ROUTER: the transport's floor."""
    work = Path(tempfile.mkdtemp(prefix="reconcile-bare-", dir=WORK))
    out: dict[str, Any] = {"up": [], "down": []}
    bare: Child | None = None
    fleets: list[Child] = []
    spec = parse_template(template_body(0), name=TEMPLATE).to_dict()
    spec.pop("numprocesses", None)
    per_peer = args.count // args.agents
    try:
        bare = await Child.start("bare", [], work / "bare.log")
        fleets = await start_fleets(bare.hello["endpoint"], args.agents, args.per_fleet, work,
                                    bare=True, run=run)
        await wait_fleets(fleets, lambda s: s["welcomed"] == args.agents, 60 + args.agents * 0.05,
                          what=f"{args.agents} agents echoed")
        generation = 1_000_000
        for _ in range(args.rounds):
            for key, each in (("up", per_peer), ("down", 0)):
                generation += 1
                prepared = await bare.ask("prepare", template=TEMPLATE, spec=spec,
                                          per_peer=each, generation=generation)
                if prepared["prepared"] != args.agents:
                    raise RuntimeError(f"bare knows {prepared['prepared']} peers, not {args.agents}")
                blast = await bare.ask("blast")
                total = each * args.agents
                stats = await wait_fleets(
                    fleets, lambda s: s["held"] == total and s["acked_since"] == args.agents,
                    60, what="every agent acking the bare assignment", since=blast["started"],
                )
                out[key].append({"acked": stats["last_ack"] - blast["started"],
                                 "bytes": prepared["bytes"]})
        log(f"bare: assignment of {per_peer * args.agents:,} acked in "
            f"{min(r['acked'] for r in out['up']):.3f}s (best)")
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"bare part failed: {out['error']} (logs in {work})")
    finally:
        await close_all(fleets)
        if bare is not None:
            await bare.close()
        if not args.keep_work and "error" not in out:
            shutil.rmtree(work, ignore_errors=True)
    return out


# ===================================================================== (c) cluster


@contextlib.contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run this thread in ``netns`` (sockets made meanwhile live there), then come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the bench's namespace")
    finally:
        os.close(target)
        os.close(home)


def node_pids(names: set[str]) -> dict[int, str]:
    """Live pids whose environment says GAFFER_NODE is one of ``names``: what agents ran."""
    marks = {f"GAFFER_NODE={name}".encode(): name for name in names}
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as env:
                for item in env.read().split(b"\0"):
                    if item in marks:
                        found[int(entry.name)] = marks[item]
                        break
        except OSError:
            continue
    return found


def kill_node_processes(names: set[str], timeout: float = 10.0) -> int:
    """SIGKILL every process run for ``names`` until none is left; how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := node_pids(names):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of {sorted(names)} still alive: {sorted(pids)[:10]}")
        time.sleep(0.01)  # poll: a killed process leaves /proc (or becomes a zombie) shortly
    return len(killed)


class Lab:
    """The three-agent cluster, its daemons and what the bench needs to act on them."""

    def __init__(self, netlab: Any, work: Path, count: int) -> None:
        self.netlab = netlab
        self.work = work
        self.count = count
        tag = f"r{os.getpid() % 100000}"
        self.ctl = netlab.add_host("ctl")
        self.hosts = {h: netlab.add_host(h) for h in ("a", "b", "c")}
        self.names = {h: f"{tag}-{h}" for h in self.hosts}
        self.endpoint = f"tcp://{self.ctl.address}:6001"
        self.agents: dict[str, Any] = {}
        bindir = Path(sys.executable).parent
        self.ctl.spawn([
            str(bindir / "gaffer-controller"), "--bind", self.endpoint,
            "--pub", f"tcp://{self.ctl.address}:6002", "--data-dir", str(work / "controller"),
            "--insecure", "--heartbeat", str(LAB_LIVENESS.interval),
            "--suspect-misses", str(LAB_LIVENESS.suspect_misses),
            "--down-misses", str(LAB_LIVENESS.down_misses),
            "--startup-grace", str(LAB_LIVENESS.startup_grace),
            "--node-grace", str(LAB_NODE_GRACE),
        ], log=work / "controller.log")
        self._agent_bin = str(bindir / "gaffer-agent")
        for h in self.hosts:
            self.start_agent(h)

    def start_agent(self, h: str) -> None:
        self.agents[h] = self.hosts[h].spawn([
            self._agent_bin, "--controller", self.endpoint, "--name", self.names[h],
            "--state-dir", str(self.work / f"agent-{h}"), "--insecure",
        ], log=self.work / f"agent-{h}.log")

    def lose_host(self, h: str) -> int:
        """The host dies: its agent and every process it ran, SIGKILLed."""
        self.hosts[h].kill(self.agents[h], signal.SIGKILL)
        return kill_node_processes({self.names[h]})


class Watch:
    """What the controller's event stream says, each event stamped with when it arrived.

    Timing by events rather than by polling ``ps``: a ``ps`` call asks every agent for stats
    (a process-table scan each, p50 ~0.4 s at 1,000 instances), and one made while a dead host
    is not yet declared down waits for that host's stats until it times out (2 s), so polling
    ``ps`` measured the observer more than the cluster. ``ps`` checks the end of each scenario.
    """

    PREFIXES = (f"proc.{TEMPLATE}.running", f"proc.{TEMPLATE}.exit", f"proc.{TEMPLATE}.stop",
                "node.", "template.")

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.running: dict[str, tuple[str, float]] = {}
        self.ended: dict[tuple[str, str], float] = {}
        self.nodes: dict[tuple[str, str], float] = {}
        self.templates: dict[tuple[str, str], float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async for event in self.client.events(self.PREFIXES):
            if not isinstance(event, ReceivedEvent):
                continue
            now = time.monotonic()
            family, kind, data = event.topic.partition(".")[0], event.topic.rpartition(".")[2], event.data
            if family == "node":
                self.nodes[(data["node"], kind)] = now
            elif family == "template":
                self.templates[(data["name"], kind)] = now
            elif kind == "running":
                self.running[data["id"]] = (data["node"], now)
            else:
                self.ended[(data["id"], data["node"])] = now
            self._changed.set()

    async def until(self, done: Callable[[], float | None], timeout: float, what: str) -> float:
        """Wait until ``done()`` gives the time it became true (a receipt time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (at := done()) is None:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no events showing {what} within {timeout:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return at

    def running_on_others(self, ids: set[str], away: str | None, since: float) -> float | None:
        """When every id in ``ids`` had started running on a node other than ``away``."""
        times = []
        for ident in ids:
            found = self.running.get(ident)
            if found is None or found[0] == away or found[1] < since:
                return None
            times.append(found[1])
        return max(times, default=since)

    def ended_on(self, ids: set[str], node: str, since: float) -> float | None:
        times = [self.ended.get((ident, node)) for ident in ids]
        if any(t is None or t < since for t in times):
            return None
        return max(times, default=since)


async def on_nodes(client: AsyncClient, count: int) -> tuple[dict[str, set[str]], float]:
    """``ps``: the ids running (current, not stale) on each node, all ``count`` of them and each
    once, and how long the call took in ms; raises if the cluster is not in that state."""
    started = time.monotonic()
    rows = await client.call("ps", name=TEMPLATE)
    cost = (time.monotonic() - started) * 1000
    found: dict[str, set[str]] = collections.defaultdict(set)
    running = [r for r in rows if r["state"] == "running"]
    for row in running:
        if not row["stale"]:
            found[row["node"]].add(row["id"])
    ids = [r["id"] for r in running]
    if sum(map(len, found.values())) != count or len(ids) != len(set(ids)):
        twice = collections.Counter(ids)
        sample = [(r["id"], r["node"], r["stale"], r["pid"]) for r in running if twice[r["id"]] > 1][:8]
        raise RuntimeError(f"ps: {len(ids)} running ({len(set(ids))} distinct), want {count} "
                           f"once each; running twice: {sample}")
    return dict(found), cost


async def settled(client: AsyncClient, count: int, t0: float, timeout: float = 10.0,
                  ) -> tuple[dict[str, set[str]], float]:
    """Poll ``ps`` until it shows every ordinal running once and nothing stale: its rows and
    the seconds since ``t0``. The controller's view lags the events a little: an agent's
    incremental report leaves out instances it removed, which its next heartbeat's digest
    then corrects with a full report."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            found, _ = await on_nodes(client, count)
            return found, time.monotonic() - t0
        except RuntimeError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)  # poll


async def wait_nodes(client: AsyncClient, names: set[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not names <= {n["name"] for n in await client.call("nodes") if n["state"] == "up"}:
        if loop.time() > deadline:
            raise TimeoutError(f"nodes {sorted(names)} never all up")
        await asyncio.sleep(0.05)  # poll


async def lose(watch: Watch, client: AsyncClient, lab: Lab, victim: str, count: int,
               act: Callable[[], Any]) -> dict[str, Any]:
    """Time from ``act()`` (which makes ``victim`` vanish) to its ids running elsewhere."""
    before, _ = await on_nodes(client, count)
    moving = before.get(victim, set())
    t0 = time.monotonic()
    acted = act()
    at = await watch.until(lambda: watch.running_on_others(moving, victim, t0), 60,
                           f"the {len(moving)} instances of {victim} running elsewhere")
    down = watch.nodes.get((victim, "down"))
    after, cost = await on_nodes(client, count)
    return {"seconds": at - t0, "moved": len(moving), "ids": moving, "acted": acted,
            "down_seen": None if down is None or down < t0 else down - t0, "ps_ms": [cost],
            "per_node": {node: len(ids) for node, ids in sorted(after.items())}}


async def joined(watch: Watch, client: AsyncClient, tries: int = 20) -> None:
    """Return once the subscription receives events: a SUB socket joins a moment after it
    connects, so throwaway templates are created until one's event arrives."""
    for attempt in range(tries):
        name = f"{TEMPLATE}-probe{attempt}"
        await client.call("apply", templates=[{**template_body(0), "name": name}])
        try:
            await watch.until(lambda: watch.templates.get((name, "created")), 0.5, name)
            await client.call("delete", name=name)
            return
        except TimeoutError:
            await client.call("delete", name=name)
    raise TimeoutError("the event subscription never joined")


async def lab_measure(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = AsyncClient(lab.endpoint, timeout=30.0)
    watch = Watch(client)
    count = lab.count
    try:
        await wait_nodes(client, set(lab.names.values()), 30)
        watch.start()
        await joined(watch, client)
        await client.call("apply", templates=[template_body(0)])

        ids = {f"{TEMPLATE}.{o}" for o in range(1, count + 1)}
        t0 = time.monotonic()
        await client.call("scale", name=TEMPLATE, count=count)
        at = await watch.until(lambda: watch.running_on_others(ids, None, t0), 60 + count / 20,
                               f"{count} running")
        placed, cost = await on_nodes(client, count)
        out["scale"] = {"seconds": at - t0, "ps_ms": [cost],
                        "per_node": {node: len(i) for node, i in sorted(placed.items())}}
        log(f"lab: 0 -> {count} running in {out['scale']['seconds']:.2f}s")

        b = lab.names["b"]
        out["loss"] = await lose(watch, client, lab, b, count, lambda: lab.lose_host("b"))
        out["loss"]["killed"] = out["loss"].pop("acted")
        log(f"lab: host b lost ({out['loss']['killed']} processes killed): its "
            f"{out['loss']['moved']} running elsewhere in {out['loss']['seconds']:.2f}s")

        if args.lab_partition:
            lab.start_agent("b")
            await wait_nodes(client, {b}, 30)
            c = lab.names["c"]
            part = await lose(watch, client, lab, c, count,
                              lambda: lab.netlab.partition(lab.hosts["c"]))
            part["stale_left"] = len(node_pids({c}))
            log(f"lab: host c cut off: its {part['moved']} running elsewhere in "
                f"{part['seconds']:.2f}s")
            t1 = time.monotonic()
            lab.netlab.heal(lab.hosts["c"])
            at = await watch.until(lambda: watch.ended_on(part["ids"], c, t1), 60,
                                   f"{c}'s stale copies stopped")
            part["fenced"] = at - t1
            deadline = time.monotonic() + 10
            while node_pids({c}):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{c} still runs processes 10s after they were stopped")
                await asyncio.sleep(0.05)  # poll: the exit events can precede the reaping
            after, part["view_settled"] = await settled(client, count, t1)
            part["after_heal"] = {node: len(i) for node, i in sorted(after.items())}
            out["partition"] = part
            log(f"lab: healed; c's {part['stale_left']} stale copies stopped in "
                f"{part['fenced']:.2f}s")
    finally:
        await watch.stop()
        await client.close()
    for entry in (out.get("loss"), out.get("partition")):
        if entry:
            entry.pop("ids", None)
    return out


async def bare_spawns(count: int) -> float:
    """spawn.py's floor: ``count`` Popen + pidfd of ``sleep`` in one loop, then killed."""
    import spawn

    return await spawn.bare_scale(count)


def lab_part(args: argparse.Namespace) -> dict[str, Any]:
    from netlab import NetLab, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        return {"error": f"skipped: {reason}"}
    work = Path(tempfile.mkdtemp(prefix="reconcile-lab-", dir=WORK))
    out: dict[str, Any] = {}
    names: set[str] = set()
    try:
        with NetLab(log_dir=work / "logs") as netlab:
            lab = Lab(netlab, work, args.lab_count)
            names = set(lab.names.values())
            try:
                with in_netns(lab.ctl.netns):
                    out = uvloop.run(lab_measure(lab, args))
                out["bare_spawn"] = min(uvloop.run(bare_spawns(args.lab_count)) for _ in range(3))
            finally:
                out["killed_at_end"] = kill_node_processes(names)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"lab part failed: {out['error']} (logs in {work})")
    finally:
        out["left_running"] = len(node_pids(names)) if names else 0
        if not args.keep_work and "error" not in out:
            shutil.rmtree(work, ignore_errors=True)
    return out


# ===================================================================== the report


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def scheduler_section(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    table = results.table(
        ["shape (templates x instances)", "case", "gaffer ms", "bare ms", "gaffer/bare",
         "spread ms", "slots moved"],
        [[r["shape"], r["case"], ms(min(r["gaffer"])), ms(min(r["bare"])),
          f"{min(r['gaffer']) / min(r['bare']):.1f}x",
          f"{ms(min(r['gaffer']))}-{ms(max(r['gaffer']))}", f"{r['moved']:,}"] for r in rows],
        align="llrrrrr",
    )
    lost = rows[1]["on_lost"] if len(rows) > 1 else 0
    return [
        f"### (a) Scheduler alone: {args.nodes:,} nodes, {args.instances:,} instances "
        "(ms, lower is better)",
        "",
        f"Pure `schedule(demands, nodes, current)`, best of {args.rounds} rounds (a garbage "
        "collection before each; noise only adds time). bare: the same placement built as a "
        "plain dict round-robin, and a copy of it with the lost node's slots re-pointed: what "
        "any placer must at least do in Python. \"nothing changed\" is the pass every "
        "reconcile makes once the cluster is full (bare: a dict copy).",
        "",
        table,
        "",
        f"- one lost node held {lost:,} slots; \"slots moved\" counts what the plan moved "
        "(re-place moves exactly those, nothing else).",
    ]


def controller_section(ctl: dict[str, Any], bare: dict[str, Any], args: argparse.Namespace) -> list[str]:
    if "error" in ctl and not ctl.get("up"):
        return ["### (b) Controller with simulated agents", "", f"Not measured: {ctl['error']}"]
    rows = []
    for key, label in (("up", f"scale 0 -> {args.count:,}"), ("down", f"scale {args.count:,} -> 0")):
        runs = ctl.get(key) or []
        clean = [r for r in runs if not r.get("profiled")] or runs
        if not clean:
            continue
        acked = [r["acked"] for r in clean]
        bare_runs = [r["acked"] for r in bare.get(key, [])]
        floor = min(bare_runs) if bare_runs else None
        worst = max(r["stall_ms"] for r in clean)
        over = max(r["over_ms"]["100"] for r in clean)
        rows.append([
            label, f"{min(acked):.2f}", f"{min(acked):.2f}-{max(acked):.2f}",
            f"{min(r['seen'] for r in clean):.2f}", f"{worst:,.0f}", str(over),
            f"{min(r['cpu'] for r in clean):.2f}",
            "n/a" if floor is None else f"{floor:.3f}",
            "n/a" if floor is None else f"{min(acked) / floor:.0f}x",
        ])
    table = results.table(
        ["operation", "all acked s (best)", "spread s", "controller sees running s",
         "worst stall ms", "stalls >= 100 ms", "controller CPU s", "bare acked s", "gaffer/bare"],
        rows, align="lrrrrrrrr",
    )
    lines = [
        f"### (b) Controller with {args.agents:,} simulated agents over TCP "
        "(seconds, lower is better)",
        "",
        f"Scale of one template (already applied at 0) to {args.count:,} instances "
        f"({args.count // max(1, args.agents)} per agent) and back, {args.rounds} rounds; "
        "timed from the `scale` call to the last agent's ack of the generation carrying the "
        "change (recorded by each agent), then to the controller's `status` showing every "
        f"instance running (polled every {args.status_poll:g} s, so +-{args.status_poll:g} s; each "
        "poll walks the instance table, a few ms of loop time). Worst stall: the largest "
        f"lateness of a task on the controller's loop asking to wake every {args.probe_ms:g} ms, "
        f"over the whole convergence, worst of the rounds. Liveness: heartbeat "
        f"{args.liveness.interval:g} s, down after {args.liveness.down_after:g} s, node grace "
        f"{args.node_grace:g} s.",
        "",
        table,
        "",
        "- bare: a ROUTER (`simagent.py bare`) sends every agent a prepared `assign` frame of "
        "the same shape (the template spec and its ordinals) and the same simulated agents "
        "ack it: the transport's floor for this step.",
    ]
    if args.count != 100_000 or args.agents != 1_000:
        lines.append(f"- sizes chosen: {args.agents:,} agents, {args.count:,} instances.")
    top = [r for r in ctl.get("up", []) if not r.get("profiled")]
    if top:
        worst = max(top, key=lambda r: r["stall_ms"])
        stalls = ", ".join(f"{t['ms']:,.0f} ({t['gc_ms']:,.0f})" for t in worst["top"][:5])
        lines.append(
            f"- longest stalls of the worst scale-up round (ms, and in parentheses the part spent "
            f"in garbage collection): {stalls}; {worst['gc']['full']} full collections in that "
            f"round, the longest {worst['gc']['full_worst_ms']:,.0f} ms (the controller freezes "
            "what it made at startup out of them, as `gaffer-controller` does: "
            "`gaffer/controller/heap.py`)"
        )
    loss = ctl.get("loss")
    if loss:
        within = loss["seconds"] <= loss["bound"] + LOSS_SLACK
        lines.append(
            f"- one agent silenced (a host lost): its {loss['moved']} ordinals acked elsewhere "
            f"after {loss['seconds']:.2f} s; liveness timeout + node grace = {loss['bound']:.1f} s "
            f"(+{LOSS_SLACK:g} s: **{'within' if within else 'NOT within'}**); worst stall "
            f"meanwhile {loss['stall_ms']:,.0f} ms"
        )
    if ctl.get("error"):
        lines.append(f"- error: {ctl['error']}")
    if bare.get("error"):
        lines.append(f"- bare error: {bare['error']}")
    return lines


def lab_section(lab: dict[str, Any], args: argparse.Namespace) -> list[str]:
    title = "### (c) Real daemons on three hosts in network namespaces (seconds, lower is better)"
    if "scale" not in lab:
        return [title, "", f"Not measured: {lab.get('error', 'skipped')}"]
    live = LAB_LIVENESS
    bound = live.down_after + LAB_NODE_GRACE
    floor = lab.get("bare_spawn")
    rows = [[f"scale 0 -> {args.lab_count:,} running", f"{lab['scale']['seconds']:.2f}", "", "",
             "", "n/a" if floor is None else f"bare spawn {floor:.2f} s: {lab['scale']['seconds'] / floor:.1f}x"]]
    for key, label in (("loss", "host lost (agent + its processes SIGKILLed)"),
                       ("partition", "host partitioned (bridge port disabled)")):
        entry = lab.get(key)
        if not entry:
            continue
        met = entry["seconds"] <= bound + LOSS_SLACK
        seen = entry.get("down_seen")
        rows.append([
            f"{label}: its {entry['moved']} running elsewhere", f"{entry['seconds']:.2f}",
            "n/a" if seen is None else f"{seen:.2f}", f"{bound:.1f}",
            f"{entry['seconds'] - bound:+.2f}",
            f"<= {bound + LOSS_SLACK:.1f}: **{'met' if met else 'NOT met'}**",
        ])
    table = results.table(
        ["scenario", "seconds", "node.down event at", "timeout + grace", "beyond it",
         "target / floor"],
        rows, align="lrrrrl",
    )
    costs = [c for key in ("scale", "loss", "partition") for c in lab.get(key, {}).get("ps_ms", [])]
    lines = [
        title,
        "",
        "`tests/cluster/netlab.py`: `gaffer-controller` on host ctl, `gaffer-agent` on hosts "
        "a, b, c (each its own network namespace on one bridge). Short liveness settings: "
        f"heartbeat {live.interval:g} s, suspect after {live.suspect_misses} misses, down after "
        f"{live.down_misses} ({live.down_after:g} s), node grace {LAB_NODE_GRACE:g} s, startup "
        f"grace {live.startup_grace:g} s. One template of `sleep 3600` (startsecs 0, output "
        f"captured) scaled 0 -> {args.lab_count:,}. Timed by the controller's event stream, "
        "from a subscriber in ctl's namespace: done when every instance concerned has a "
        "`proc.<t>.running` event from a node other than the lost one, stamped on receipt. "
        "Each scenario's end state is then checked with `ps` (every ordinal running once, "
        "none stale). `ps` is not polled for timing: each call asks every agent for stats "
        f"(p50 {percentile(costs, 50):,.0f} ms here at {args.lab_count:,} instances), and one "
        "made while a dead host is not yet declared down waits for that host until the "
        "stats timeout (2 s): polled, it measured itself more than the cluster.",
        "",
        table,
        "",
        f"- after the scale: {lab['scale']['per_node']} running per node. bare spawn: "
        f"`bench/spawn.py`'s floor, {args.lab_count:,} `Popen` + pidfd of the same command in "
        "one loop of the bench process, measured in this run (best of 3): the three agents "
        "start processes in parallel, on two CPUs shared with everything else.",
        "- beyond it: the time after the configured liveness timeout + node grace, spent "
        "noticing (ticks every half heartbeat), placing, sending, spawning and reporting.",
    ]
    if "loss" in lab:
        lines.append(f"- host lost: {lab['loss']['killed']} processes SIGKILLed (the agent's and "
                     f"every one with its GAFFER_NODE); then {lab['loss']['per_node']} per node.")
    part = lab.get("partition")
    if part:
        lines.append(
            f"- partition: the cut host's {part['stale_left']} copies keep running while it is "
            f"cut off; after healing, its agent stopped them all in {part['fenced']:.2f} s "
            f"(last `exit`/`stop` event) and `ps` showed each ordinal running once, nothing "
            f"stale, {part['view_settled']:.2f} s after healing: {part['after_heal']} per node."
        )
    lines.append(f"- cleanup: {lab.get('killed_at_end', 0)} processes killed at the end, "
                 f"{lab.get('left_running', 0)} left running.")
    if lab.get("error"):
        lines.append(f"- error: {lab['error']}")
    return lines


def verdicts(ctl: dict[str, Any], lab: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = []
    ups = [r for r in ctl.get("up", []) if not r.get("profiled")]
    if ups:
        worst = max(r["stall_ms"] for r in ups + [r for r in ctl.get("down", []) if not r.get("profiled")])
        ok = worst < STALL_TARGET_MS
        lines.append(
            f"- {args.agents:,} agents, scale to {args.count:,} converging without the loop "
            f"stalling (worst stall < {STALL_TARGET_MS:.0f} ms): worst {worst:,.0f} ms: "
            f"**{'met' if ok else 'NOT met'}**; every agent acked in "
            f"{min(r['acked'] for r in ups):.2f} s; no node was misjudged "
            f"(stall < suspect after {args.liveness.suspect_after:g} s): "
            f"{'yes' if worst / 1000 < args.liveness.suspect_after else '**no**'}"
        )
    bound = LAB_LIVENESS.down_after + LAB_NODE_GRACE
    for key, label in (("loss", "host loss"), ("partition", "partition")):
        entry = lab.get(key)
        if entry:
            ok = entry["seconds"] <= bound + LOSS_SLACK
            lines.append(
                f"- {label} to its instances running elsewhere within liveness timeout + node "
                f"grace + {LOSS_SLACK:g} s ({bound + LOSS_SLACK:.1f} s): {entry['seconds']:.2f} s: "
                f"**{'met' if ok else 'NOT met'}**"
            )
    return lines or ["- nothing measured"]


def report(data: dict[str, Any], args: argparse.Namespace, started: datetime.datetime) -> str:
    info = results.machine()
    parts = [
        "## Reconcile",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `bench/reconcile.py"
        f"{' --quick' if args.quick else ''}`: {info['cpus']} CPUs ({info['cpu']}), "
        f"{info['kernel']}, {info['python']}, load average at start {info['load']}. "
        f"gaffer {gaffer.__version__} on uvloop {uvloop.__version__}.",
    ]
    if "sched" in data:
        parts += ["", *scheduler_section(data["sched"], args)]
    if "ctl" in data:
        parts += ["", *controller_section(data["ctl"], data.get("bare", {}), args)]
    if "lab" in data:
        parts += ["", *lab_section(data["lab"], args)]
    parts += ["", "### Targets", "", *verdicts(data.get("ctl", {}), data.get("lab", {}), args)]
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--parts", default="a,b,c", help="which parts to run (default %(default)s)")
    add("--nodes", type=int, default=1000, help="(a) nodes (default %(default)s)")
    add("--instances", type=int, default=100_000, help="(a) instances (default %(default)s)")
    add("--rounds", type=int, default=3, help="(a), (b) rounds, best kept (default %(default)s)")
    add("--agents", type=int, default=1000, help="(b) simulated agents (default %(default)s)")
    add("--count", type=int, default=100_000, help="(b) scale target (default %(default)s)")
    add("--per-fleet", type=int, default=500, help="(b) agents per fleet process")
    add("--probe-ms", type=float, default=5.0, help="(b) stall probe period (default %(default)s)")
    add("--heartbeat", type=float, default=1.0, help="(b) heartbeat s (default %(default)s)")
    add("--node-grace", type=float, default=2.0, help="(b) node grace s (default %(default)s)")
    add("--settle", type=float, default=3.0, help="(b) seconds before measuring")
    add("--status-poll", type=float, default=0.1, help="(b) status poll interval s")
    add("--skip-loss", action="store_true", help="(b) no node-loss measurement")
    add("--lab-count", type=int, default=1000, help="(c) instances (default %(default)s)")
    add("--ps-poll", type=float, default=0.05, help="(c) ps poll interval s (default %(default)s)")
    add("--no-partition", dest="lab_partition", action="store_false",
        help="(c) host loss only, no partition scenario")
    add("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    add("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    add("--keep-work", action="store_true", help="keep logs and data under bench/.work")
    add("--profile", type=Path, metavar="FILE",
        help="(b) cProfile the controller over one extra scale-up (not in the table)")
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.parts or args.parts - {"a", "b", "c"}:
        parser.error("--parts: a comma-separated subset of a,b,c")
    if args.quick:
        args.nodes, args.instances, args.rounds = 100, 10_000, 2
        args.agents, args.count, args.settle = 100, 10_000, 1.0
        args.lab_count = 100
        args.no_write = True
    if min(args.nodes, args.instances, args.rounds, args.agents, args.count, args.lab_count) < 1:
        parser.error("sizes and rounds must be >= 1")
    if args.count < args.agents:
        parser.error("--count must be >= --agents (every agent gets a share to ack)")
    args.liveness = Liveness(interval=args.heartbeat, startup_grace=0.0)
    return args


async def simulated_parts(args: argparse.Namespace, data: dict[str, Any]) -> None:
    run = f"{os.getpid() % 100000}"
    data["ctl"] = await controller_part(args, run)
    data["bare"] = await bare_part(args, run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    simagent.raise_nofile()
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    data: dict[str, Any] = {}
    try:
        if "a" in args.parts:
            data["sched"] = scheduler_part(args.nodes, args.instances, args.rounds)
        if "b" in args.parts:
            uvloop.run(simulated_parts(args, data))
        if "c" in args.parts:
            data["lab"] = lab_part(args)
    except KeyboardInterrupt:
        log("interrupted: every process started so far has been stopped")
        return 130
    markdown = report(data, args, started)
    print(markdown)
    if data.get("ctl", {}).get("profile"):
        log(f"cProfile of the controller over the first scale-up, by own time:\n{data['ctl']['profile']}")
    if not args.no_write:
        log(f"written to {results.write_section('reconcile', markdown)}")
    failed = any("error" in data.get(k, {}) for k in ("ctl", "bare"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
