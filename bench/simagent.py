"""The processes the controller benches start: fleets of simulated agents, a controller host,
and a bare ROUTER; plus the handles ``controller_link.py`` and ``reconcile.py`` drive them with.

Like ``peers.py`` this file plays two parts. Imported, it gives the benches ``Child`` (one
such process, spoken to with JSON lines over its stdin/stdout) and helpers to start them.
Run as a script, ``simagent.py fleet|controller|bare ...``, it is one of those processes:

- **fleet**: many simulated agents in one process, each its own DEALER over real TCP, all on
  one uvloop loop (each socket's ZMQ_FD on ``add_reader``), so a few fleet processes carry a
  thousand agents without being the bottleneck. Each is a ``gaffer.testing.simagent.SimAgent``
  (the agent side of the protocol, shared with the unit tests, which run it over an in-memory
  channel): hello, heartbeats at random phases, assignments acked at once and reported as
  running, commands answered.
- **controller**: a ``Controller`` in its own process (so its CPU share is its own), with a
  stall probe on its loop: a task that asks to wake every ``--probe-ms`` and records how late
  it actually woke (the loop's worst stall), and an optional cProfile of the loop on request.
- **bare**: the least a controller's socket must do: a pyzmq ROUTER in a blocking poll loop
  that decodes nothing and echoes every message to its sender; for the reconcile bench it can
  also push a prepared assignment frame to every peer at once.

A child exits when its stdin closes, so a bench that dies takes its children with it; the
benches also stop each by pid (``Child.close``: quit, then SIGKILL after a bound).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
import zmq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from gaffer.common.clock import LoopClock  # noqa: E402
from gaffer.common.transport import new_socket  # noqa: E402
from gaffer.testing.simagent import SimAgent, SimFleet, pack  # noqa: E402

CONNECT_BATCH = 100
CONNECT_PAUSE = 0.05
QUIT_TIMEOUT = 20.0
STALL_THRESHOLDS_MS = (10, 50, 100, 500)
OLDEST_GENERATION = len(gc.get_threshold()) - 1
"""A collection of this generation is a full one: it walks every object the collector tracks."""


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: a thousand sockets need a few thousand fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class StdinCommands:
    """JSON lines from stdin, on the loop; EOF (the bench went away) means quit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Any, on_eof: Any) -> None:
        self._loop = loop
        self._handle = handle
        self._on_eof = on_eof
        self._buffer = b""
        os.set_blocking(0, False)
        loop.add_reader(0, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._loop.remove_reader(0)
            self._on_eof()
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))


# ===================================================================== fleet


class SocketAgent(SimAgent):
    """A simulated agent (``gaffer.testing.simagent``) over its own DEALER socket."""

    __slots__ = ("ctx", "endpoint", "loop", "sock", "fd", "_draining")

    def __init__(self, fleet: "Fleet", index: int) -> None:
        super().__init__(fleet, index)
        self.ctx = fleet.ctx
        self.endpoint = fleet.endpoint
        self.loop = fleet.loop
        self.sock: zmq.Socket | None = None
        self.fd = -1
        self._draining = False

    def open(self) -> None:
        sock = new_socket(self.ctx, zmq.DEALER)
        sock.connect(self.endpoint)
        self.sock = sock
        self.fd = sock.getsockopt(zmq.FD)
        self.loop.add_reader(self.fd, self.drain)
        self.start()

    def close(self) -> None:
        self.stop_heartbeats()
        if self.sock is not None:
            self.loop.remove_reader(self.fd)
            self.sock.close(linger=0)
            self.sock = None

    def silence(self) -> None:
        """The host dies: no more heartbeats, the socket goes away."""
        super().silence()
        self.close()

    def transmit(self, frame: bytes) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        finally:
            # a send can swallow the readability edge of messages already queued: look now
            self.drain()
        return True

    def drain(self) -> None:
        if self._draining or self.sock is None:
            return
        self._draining = True
        try:
            sock = self.sock
            while sock is not None and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.receive(frame)
                sock = self.sock
        finally:
            self._draining = False


class MonotonicClock(LoopClock):
    """The loop's timers, with ``time()`` the system-wide monotonic clock: ack times are
    compared with the bench's, in another process."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.time = time.monotonic


class Fleet(SimFleet):
    """Agents ``first .. first+count-1`` of one bench run, in this process."""

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            MonotonicClock(loop), prefix=args.prefix, run=args.run,
            incarnation=f"{os.getpid():x}", hello_instances=args.hello_instances,
            first_pid=1_000 + args.fleet_no * 50_000_000, bare=args.bare,
        )
        self.loop = loop
        self.endpoint = args.endpoint
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, args.count + 64)
        self.agents = [SocketAgent(self, i) for i in range(args.first, args.first + args.count)]
        self.done = loop.create_future()

    def start(self) -> None:
        self._open_from(0)

    def _open_from(self, start: int) -> None:
        """Connect in small batches: a thousand connects at once overflow the listen backlog."""
        for agent in self.agents[start:start + CONNECT_BATCH]:
            agent.open()
        if start + CONNECT_BATCH < len(self.agents):
            self.loop.call_later(CONNECT_PAUSE, self._open_from, start + CONNECT_BATCH)

    def command(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "stats":
            emit(self.stats(request.get("since")))
        elif op == "silence":
            agent = self.agents[request["index"]]
            agent.silence()
            emit({"name": agent.name, "held": len(agent.rows), "at": time.monotonic()})
        elif op == "quit":
            self.quit()
        else:
            emit({"error": f"unknown op {op!r}"})

    def stats(self, since: float | None) -> dict[str, Any]:
        live = [a for a in self.agents if not a.silent]
        acked = [a.acked_at for a in live if since is not None and a.acked_at >= since]
        cpu = os.times()
        return {
            **self.counts,
            "agents": len(self.agents),
            "live": len(live),
            "held": sum(len(a.rows) for a in live),
            "acked_since": len(acked),
            "last_ack": max(acked) if acked else None,
            "refusals": self.refusals,
            "cpu": cpu.user + cpu.system,
            "now": time.monotonic(),
        }

    def quit(self) -> None:
        if self.done.done():
            return
        for agent in self.agents:
            agent.close()
        self.ctx.term()
        self.done.set_result(None)


async def run_fleet(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    fleet = Fleet(args, loop)
    StdinCommands(loop, fleet.command, fleet.quit)
    fleet.start()
    emit({"ready": True, "pid": os.getpid(), "agents": len(fleet.agents)})
    await fleet.done


# ===================================================================== controller


class StallProbe:
    """How late the loop wakes a task that asks to wake every ``period`` seconds.

    Anything that holds the loop (a long synchronous reconcile, a burst of messages handled
    without yielding, a garbage collection) shows up as lateness; the worst lateness is the
    loop's worst stall. The probe also times every collection of CPython's cyclic garbage
    collector (``gc.callbacks``): each stall in ``top`` says how much of it was spent
    collecting, and ``gc`` counts the full (oldest-generation) collections and the longest.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._task: asyncio.Task | None = None
        self._gc_started = 0.0
        self._collecting = 0.0
        self._clear()

    def _clear(self) -> None:
        self.samples = 0
        self.worst = 0.0
        self.worst_at = 0.0
        self.over = dict.fromkeys(STALL_THRESHOLDS_MS, 0)
        self.top: list[tuple[float, float, float]] = []
        self.full_collections = 0
        self.full_worst = 0.0

    def reset(self) -> dict[str, Any]:
        """What was seen since the last reset; then start over."""
        seen = self.snapshot()
        self._clear()
        return seen

    def snapshot(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "period_ms": self.period * 1000,
            "worst_ms": round(self.worst * 1000, 2), "worst_at": self.worst_at,
            "over_ms": {str(k): v for k, v in self.over.items()},
            "top": [{"ms": round(late * 1000, 2), "gc_ms": round(gc_time * 1000, 2), "at": at}
                    for late, gc_time, at in sorted(self.top, reverse=True)],
            "gc": {"full": self.full_collections, "full_worst_ms": round(self.full_worst * 1000, 2)},
        }

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        self._collecting += pause
        if info["generation"] == OLDEST_GENERATION:
            self.full_collections += 1
            self.full_worst = max(self.full_worst, pause)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.period
            self._collecting = 0.0
            await asyncio.sleep(self.period)
            late = max(0.0, loop.time() - expected)
            self.samples += 1
            for ms in STALL_THRESHOLDS_MS:
                if late * 1000 >= ms:
                    self.over[ms] += 1
            if late > self.worst:
                self.worst, self.worst_at = late, time.monotonic()
            if late >= 0.01:
                self.top.append((late, self._collecting, time.monotonic()))
                self.top = sorted(self.top, reverse=True)[:10]


async def run_controller(args: argparse.Namespace) -> None:
    import logging

    from gaffer.controller.controller import Controller
    from gaffer.controller.heap import freeze_startup
    from gaffer.controller.liveness import Liveness
    from gaffer.controller.settings import ControllerSettings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ControllerSettings(
        bind=args.bind, pub=args.pub, data_dir=Path(args.data_dir), insecure=True,
        liveness=Liveness(
            interval=args.heartbeat, suspect_misses=args.suspect_misses,
            down_misses=args.down_misses, startup_grace=args.startup_grace,
        ),
        node_grace=args.node_grace,
    )
    loop = asyncio.get_running_loop()
    controller = Controller(settings)
    await controller.start()
    freeze_startup()  # as gaffer-controller does after start
    probe = StallProbe(args.probe_ms / 1000)
    if args.probe_ms > 0:
        probe.start()
    done = loop.create_future()
    profiler: cProfile.Profile | None = None

    def command(request: dict[str, Any]) -> None:
        nonlocal profiler
        op = request.get("op")
        if op == "probe":
            emit(probe.reset() if request.get("reset") else probe.snapshot())
        elif op == "profile-start":
            profiler = cProfile.Profile()
            profiler.enable()
            emit({"profiling": True})
        elif op == "profile-stop":
            emit({"top": _profile_stop(profiler, request.get("path"), request.get("lines", 30))})
            profiler = None
        elif op == "quit":
            if not done.done():
                done.set_result(None)
        else:
            emit({"error": f"unknown op {op!r}"})

    StdinCommands(loop, command, lambda: done.done() or done.set_result(None))
    emit({"ready": True, "pid": os.getpid(), "endpoint": controller.endpoint,
          "events": controller.pub_endpoint})
    try:
        await done
    finally:
        await probe.stop()
        await controller.stop()


def _profile_stop(profiler: cProfile.Profile | None, path: str | None, lines: int) -> str:
    if profiler is None:
        return "not profiling"
    profiler.disable()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# ===================================================================== bare


def run_bare(args: argparse.Namespace) -> None:
    """A ROUTER that decodes nothing and echoes everything; stdin for commands."""
    ctx = zmq.Context()
    router = new_socket(ctx, zmq.ROUTER)
    router.bind(args.bind)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(0, zmq.POLLIN)
    peers: dict[bytes, None] = {}
    prepared: list[list[bytes]] = []
    counts = {"received": 0, "sent": 0, "send_dropped": 0}
    emit({"ready": True, "pid": os.getpid(),
          "endpoint": router.getsockopt(zmq.LAST_ENDPOINT).decode()})
    buffer = b""
    running = True
    while running:
        for what, _ in poller.poll():
            if what is router:
                while True:
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    counts["received"] += 1
                    peers[frames[0]] = None
                    try:
                        router.send_multipart(frames, zmq.NOBLOCK)
                        counts["sent"] += 1
                    except zmq.Again:
                        counts["send_dropped"] += 1
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                running = False
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                request = json.loads(line)
                op = request.get("op")
                if op == "stats":
                    emit({**counts, "peers": len(peers)})
                elif op == "prepare":
                    prepared = _prepare_assigns(list(peers), request)
                    emit({"prepared": len(prepared), "bytes": sum(len(f[1]) for f in prepared)})
                elif op == "blast":
                    started = time.monotonic()
                    for frames in prepared:
                        router.send_multipart(frames)
                        counts["sent"] += 1
                    emit({"started": started, "sent": len(prepared), "done": time.monotonic()})
                elif op == "quit":
                    running = False
                else:
                    emit({"error": f"unknown op {op!r}"})
    router.close(linger=0)
    ctx.term()


def _prepare_assigns(peers: list[bytes], request: dict[str, Any]) -> list[list[bytes]]:
    """One assign frame per peer, built ahead: the sending is all the bare side times."""
    name, spec, per_peer = request["template"], request["spec"], request["per_peer"]
    generation = request["generation"]
    frames = []
    for index, peer in enumerate(sorted(peers)):
        first = index * per_peer + 1
        body = {
            "generation": generation,
            "templates": {name: {**spec, "numprocesses": per_peer}},
            "ordinals": {name: list(range(first, first + per_peer))},
        }
        frames.append([peer, pack("assign", 1, body)])
    return frames


# ===================================================================== the benches' side


class Child:
    """One of these processes, started by a bench: JSON requests in, JSON replies out."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str) -> None:
        self.proc = proc
        self.role = role
        self.pid = proc.pid
        self.hello: dict[str, Any] = {}

    @classmethod
    async def start(cls, role: str, argv: list[str], log_path: Path, timeout: float = 30.0) -> "Child":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), role, *argv,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True, limit=16 * 1024 * 1024,
            )
        child = cls(proc, role)
        try:
            child.hello = await child.read(timeout)
        except BaseException:
            await child.close()
            raise
        return child

    async def read(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.role} (pid {self.pid}) exited: see its log")
        return json.loads(line)

    async def ask(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def close(self, timeout: float = QUIT_TIMEOUT) -> None:
        """Ask it to quit; SIGKILL its process group by pid if it has not within ``timeout``."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
                self.proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.wait_for(self.proc.wait(), 10)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(whole process, its main thread) CPU seconds, user + system, from /proc via psutil."""
    import psutil

    proc = psutil.Process(pid)
    times = proc.cpu_times()
    main = next((t for t in proc.threads() if t.id == pid), None)
    return times.user + times.system, (main.user_time + main.system_time) if main else 0.0


async def start_fleets(
    endpoint: str, agents: int, per_fleet: int, work: Path, *, bare: bool, run: str,
    hello_instances: int = 0,
) -> list[Child]:
    fleets: list[Child] = []
    try:
        for fleet_no, first in enumerate(range(0, agents, per_fleet)):
            count = min(per_fleet, agents - first)
            argv = [
                "--endpoint", endpoint, "--first", str(first), "--count", str(count),
                "--fleet-no", str(fleet_no), "--prefix", f"sim{run}-", "--run", run,
                "--hello-instances", str(hello_instances),
            ] + (["--bare"] if bare else [])
            fleets.append(await Child.start("fleet", argv, work / f"fleet-{fleet_no}.log"))
    except BaseException:
        await close_all(fleets)
        raise
    return fleets


async def fleet_stats(fleets: list[Child], since: float | None = None) -> dict[str, Any]:
    """The fleets' counters summed (``last_ack`` is the latest of them)."""
    replies = await asyncio.gather(*(f.ask("stats", since=since) for f in fleets))
    total: dict[str, Any] = {}
    for reply in replies:
        for key, value in reply.items():
            if key == "last_ack":
                if value is not None:
                    total[key] = max(total.get(key) or 0.0, value)
            elif key == "refusals":
                for code, n in value.items():
                    total.setdefault(key, {})[code] = total.get(key, {}).get(code, 0) + n
            elif isinstance(value, (int, float)) and key != "now":
                total[key] = total.get(key, 0) + value
    total.setdefault("last_ack", None)
    total.setdefault("refusals", {})
    return total


async def wait_fleets(
    fleets: list[Child], done: Any, timeout: float, interval: float = 0.05, what: str = "",
    since: float | None = None,
) -> dict[str, Any]:
    """Poll the fleets' counters until ``done(stats)``; TimeoutError naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await fleet_stats(fleets, since)
        if done(stats):
            return stats
        if loop.time() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}: {stats}")
        await asyncio.sleep(interval)  # poll


async def close_all(children: list[Child]) -> None:
    for child in reversed(children):
        try:
            await child.close()
        except Exception as exc:
            print(f"closing {child.role} pid {child.pid}: {exc}", file=sys.stderr)


# ===================================================================== entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True)
    fleet = roles.add_parser("fleet", help="simulated agents")
    fleet.add_argument("--endpoint", required=True)
    fleet.add_argument("--first", type=int, default=0)
    fleet.add_argument("--count", type=int, required=True)
    fleet.add_argument("--fleet-no", type=int, default=0)
    fleet.add_argument("--prefix", default="sim-")
    fleet.add_argument("--run", default="0")
    fleet.add_argument("--hello-instances", type=int, default=0)
    fleet.add_argument("--bare", action="store_true", help="the peer is the bare ROUTER")
    ctl = roles.add_parser("controller", help="a Controller with a stall probe")
    ctl.add_argument("--bind", default="tcp://127.0.0.1:*")
    ctl.add_argument("--pub", default="tcp://127.0.0.1:*")
    ctl.add_argument("--data-dir", required=True)
    ctl.add_argument("--heartbeat", type=float, default=1.0)
    ctl.add_argument("--suspect-misses", type=int, default=3)
    ctl.add_argument("--down-misses", type=int, default=5)
    ctl.add_argument("--startup-grace", type=float, default=10.0)
    ctl.add_argument("--node-grace", type=float, default=2.0)
    ctl.add_argument("--probe-ms", type=float, default=5.0, help="0: no stall probe")
    ctl.add_argument("--log-level", default="info")
    bare = roles.add_parser("bare", help="a bare echoing ROUTER")
    bare.add_argument("--bind", default="tcp://127.0.0.1:*")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when a child stops
    raise_nofile()
    if args.role == "bare":
        run_bare(args)
    elif args.role == "fleet":
        uvloop.run(run_fleet(args))
    else:
        uvloop.run(run_controller(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
