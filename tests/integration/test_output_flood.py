"""One chatty process must not slow the control plane (issue 7, section 6).

Real daemons (``gaffer-controller``, ``gaffer-agent``) in their own processes on loopback, an
instance that writes output as fast as it can, and followers of its output: requests keep
being answered, heartbeats keep the node up, a follower that cannot get everything is told
exactly what it missed and where, and neither daemon's memory grows with the flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import psutil
import pytest
import zmq

from gaffer.client import AsyncClient
from gaffer.testing import free_port, poll_until

BIN = Path(sys.executable).parent
FLOOD = r"""
import os, select, sys
count, mode = int(sys.argv[1]), sys.argv[2]
if mode == "wait":
    while not select.select([0], [], [], 0.05)[0]:
        os.write(1, b"ready\n")
    os.read(0, 64)
pad = b"x" * 80
n = 0
while count == 0 or n < count:
    stop = n + 1000 if count == 0 else min(count, n + 1000)
    os.write(1, b"".join(b"%09d %s\n" % (i, pad) for i in range(n, stop)))
    n = stop
"""
LINES = 2_000_000
"""A bounded flood: 2 million numbered lines of 91 bytes (182 MB)."""
TIMEOUT = 60.0
REQUEST_TIMEOUT = 2.0
"""Generous for a request on loopback; before the fix, ps took 4.6 to 5.4 s under a flood."""
RSS_GROWTH = 64 * 2**20


class Daemons:
    """A gaffer-controller and one gaffer-agent (node ``n1``), each its own process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.pub = f"tcp://127.0.0.1:{port + 1}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.client = AsyncClient(self.endpoint, timeout=REQUEST_TIMEOUT)

    def start(self) -> None:
        self.procs["controller"] = self._spawn("controller", [
            str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--pub", self.pub,
            "--data-dir", str(self.tmp / "controller"), "--insecure", "--heartbeat", "0.5",
            "--suspect-misses", "3", "--down-misses", "5", "--startup-grace", "0",
        ])
        self.procs["agent"] = self._spawn("agent", [
            str(BIN / "gaffer-agent"), "--controller", self.endpoint, "--name", "n1",
            "--state-dir", str(self.tmp / "agent"), "--insecure", "--stop-processes",
        ])

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def rss(self, name: str) -> int:
        return psutil.Process(self.pid(name)).memory_info().rss

    async def call(self, op: str, **args: Any) -> Any:
        return await self.client.call(op, **args)

    async def wait_up(self) -> None:
        async def up() -> bool:
            try:
                return [n["state"] for n in await self.call("nodes")] == ["up"]
            except Exception:
                return False

        deadline = time.monotonic() + TIMEOUT
        while not await up():
            assert time.monotonic() < deadline, "the agent never came up"
            await asyncio.sleep(0.05)  # poll

    async def flood(self, lines: int, wait: bool) -> None:
        """An instance ``flood.1`` writing ``lines`` numbered lines (0: forever); with ``wait``
        it says ``ready`` until it reads ``go`` on stdin."""
        spec = {
            "name": "flood", "cmd": sys.executable,
            "args": ["-c", FLOOD, str(lines), "wait" if wait else "now"],
            "numprocesses": 1, "startsecs": 0, "restart": "never", "redirect_input": True,
        }
        await self.call("apply", templates=[spec])

        async def running() -> bool:
            return any(r["state"] == "running" for r in await self.call("ps", name="flood"))

        deadline = time.monotonic() + TIMEOUT
        while not await running():
            assert time.monotonic() < deadline, "flood.1 never ran"
            await asyncio.sleep(0.05)  # poll

    def stop(self) -> None:
        """SIGTERM (the agent stops its instances), then SIGKILL of anything left, by pid."""
        left: list[psutil.Process] = []
        for name in ("agent", "controller"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                left += psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for child in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        d.start()
        await d.wait_up()
        yield d
    finally:
        await d.client.close()
        d.stop()


class Follower:
    """A subscriber to ``output.flood.1.`` that reads everything it is sent and checks it:
    the flood's numbered lines in order, each gap exactly the count a skip marker gave."""

    def __init__(self, daemons: Daemons) -> None:
        self.client = AsyncClient(daemons.endpoint)
        self.pub = daemons.pub
        self.ready = asyncio.Event()
        self.received = 0
        self.skipped = 0
        self.markers = 0
        self.next = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read())

    def alive(self) -> bool:
        """True while reading; a failed check in the reader is raised here."""
        assert self.task is not None
        if self.task.done():
            self.task.result()
            raise AssertionError("the follower's subscription ended")
        return True

    def accounted(self) -> bool:
        """Whether every line of the bounded flood was received or counted as skipped."""
        return self.alive() and self.next >= LINES

    async def _read(self) -> None:
        async for event in self.client.events(["output.flood.1."], endpoint=self.pub):
            data = event.data
            if "skipped" in data:
                assert data["skipped"] > 0 and data["skipped_bytes"] >= 2 * data["skipped"]
                self.markers += 1
                self.skipped += data["skipped"]
                self.next += data["skipped"]
                continue
            for line in data["text"].split("\n"):
                if line == "ready":
                    self.ready.set()
                    continue
                assert int(line[:9]) == self.next, f"line {line[:9]} where {self.next} was due"
                self.next += 1
                self.received += 1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.close()


@contextlib.asynccontextmanager
async def follower(daemons: Daemons) -> AsyncIterator[Follower]:
    f = Follower(daemons)
    f.start()
    try:
        yield f
    finally:
        await f.close()


async def node_events(daemons: Daemons, seen: list[str]) -> None:
    client = AsyncClient(daemons.endpoint)
    try:
        async for event in client.events(["node."], endpoint=daemons.pub):
            seen.append(event.topic)
    finally:
        await client.close()


async def test_requests_and_heartbeats_go_on_while_a_flood_is_followed(daemons: Daemons) -> None:
    """With an endless flood followed live, ps and status keep answering and the node stays up."""
    seen: list[str] = []
    watcher = asyncio.get_running_loop().create_task(node_events(daemons, seen))
    try:
        async with follower(daemons) as f:
            await daemons.flood(0, wait=False)
            await poll_until(lambda: f.alive() and f.received > 0, TIMEOUT, "the follower to receive lines")
            marks = f.markers
            for _ in range(20):
                rows = await daemons.call("ps")
                assert [r["state"] for r in rows if r["id"] == "flood.1"] == ["running"]
                status = await daemons.call("status")
                assert status["nodes"]["up"] == 1
                await asyncio.sleep(0.05)  # poll: pace the requests over a second of flood
            await poll_until(lambda: f.alive() and f.markers > marks, TIMEOUT, "a skip marker")
        assert [n["state"] for n in await daemons.call("nodes")] == ["up"]
        assert not [topic for topic in seen if topic.endswith((".suspect", ".down"))]
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_a_follower_is_told_exactly_what_it_missed(daemons: Daemons) -> None:
    """Every line of a bounded flood reaches the follower or is counted in a marker where it went."""
    async with follower(daemons) as f:
        await daemons.flood(LINES, wait=True)
        await asyncio.wait_for(f.ready.wait(), TIMEOUT)
        await daemons.call("write", id="flood.1", data="go\n")
        await poll_until(f.accounted, TIMEOUT, "every flood line accounted for")
    assert f.next == LINES
    assert f.markers > 0 and f.skipped > 0 and f.received > 0
    assert f.received + f.skipped == LINES


async def test_memory_stays_bounded_with_a_stalled_subscriber(daemons: Daemons) -> None:
    """A bounded flood, one live follower and one that never reads: neither daemon's RSS grows
    past a bound."""
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.SUBSCRIBE, b"output.flood.")
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.connect(daemons.pub)
    peak = {"controller": 0, "agent": 0}
    try:
        async with follower(daemons) as f:
            await daemons.flood(LINES, wait=True)
            await asyncio.wait_for(f.ready.wait(), TIMEOUT)
            before = {name: daemons.rss(name) for name in peak}

            def sample() -> bool:
                for name in peak:
                    peak[name] = max(peak[name], daemons.rss(name))
                return True

            await daemons.call("write", id="flood.1", data="go\n")
            await poll_until(lambda: sample() and f.accounted(), TIMEOUT, "every flood line accounted for")
        for name in peak:
            assert peak[name] - before[name] < RSS_GROWTH, (
                f"{name} grew from {before[name] >> 20} to {peak[name] >> 20} MiB"
            )
    finally:
        stalled.close(0)
        ctx.term()


async def test_gafferctl_logs_follow_prints_skip_markers(daemons: Daemons) -> None:
    """`gafferctl logs -f` of a flooding instance says `[N lines skipped]` where lines went missing."""
    await daemons.flood(0, wait=False)
    ctl = subprocess.Popen(
        [str(BIN / "gafferctl"), "--controller", daemons.endpoint, "logs", "flood.1", "-f"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert ctl.stderr is not None
        os.set_blocking(ctl.stderr.fileno(), True)
        marker = await asyncio.wait_for(asyncio.to_thread(_first_marker, ctl.stderr), TIMEOUT)
        count = int(marker.split()[0][1:])
        assert marker == f"[{count} lines skipped]" and count > 0
    finally:
        ctl.send_signal(signal.SIGINT)
        try:
            ctl.wait(10)
        except subprocess.TimeoutExpired:
            ctl.kill()
            ctl.wait()


def _first_marker(stream: Any) -> str:
    for line in stream:
        if line.startswith("["):
            return line.rstrip("\n")
    raise AssertionError("gafferctl logs -f ended without a skip marker")
