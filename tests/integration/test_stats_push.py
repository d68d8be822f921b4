"""ps answers from the stats the agents push (issue 11, "Answers from memory").

A controller in this process and a real ``gaffer-agent`` daemon pushing every 0.5 s: ps
without ``fresh`` carries cpu, memory and the sample's age from the controller's cache, keeps
answering from it while the agent is frozen (SIGSTOP), the age growing, and ``fresh`` asks the
agent live. Every loop is bounded; the agent is resumed and killed, and every process of the
test's node killed, by pid.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import psutil
import pytest

from gaffer.client import AsyncClient
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import POLL
from procs_helpers import remove_node_cgroups

AGENT_BIN = str(Path(sys.executable).parent / "gaffer-agent")
INTERVAL = 0.5
LIVENESS = Liveness(interval=0.2, suspect_misses=3, down_misses=10, startup_grace=0.0)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = "st-" + secrets.token_hex(4)
        self.controller: Controller | None = None
        self.client: AsyncClient | None = None
        self.agent: subprocess.Popen | None = None

    async def start(self) -> None:
        self.controller = Controller(ControllerSettings(
            bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=self.root / "controller",
            insecure=True, liveness=LIVENESS,
        ))
        await self.controller.start()
        self.client = AsyncClient(self.controller.endpoint, timeout=10.0)
        argv = [AGENT_BIN, "--controller", self.controller.endpoint, "--name", self.node,
                "--state-dir", str(self.root / "agent"), "--insecure", "--stop-processes",
                "--stats-interval", str(INTERVAL)]
        with open(self.root / "agent.log", "ab") as log:
            self.agent = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        await self.ps_until(lambda rows: True, "the controller to answer")
        await self.call("apply", templates=[{
            "name": "idle", "cmd": "sleep", "args": ["300"], "numprocesses": 2, "startsecs": 0,
        }])

    async def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None
        return await self.client.call(op, **args)

    async def ps_until(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str,
                       timeout: float = 30.0, **args: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.call("ps", **args)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"ps never showed {what}: {rows}\n{self.log_tail()}")
            await asyncio.sleep(POLL)  # poll

    def log_tail(self) -> str:
        try:
            return (self.root / "agent.log").read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def node_processes(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("GAFFER_NODE") == self.node:
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    async def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            os.kill(self.agent.pid, signal.SIGCONT)
            self.agent.kill()
            self.agent.wait(10)
        for proc in self.node_processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        remove_node_cgroups(self.node)
        if self.client is not None:
            await self.client.close()
        if self.controller is not None:
            await self.controller.stop()


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    lab = Lab(root)
    try:
        await lab.start()
        yield lab
    finally:
        await lab.close()
        shutil.rmtree(root, ignore_errors=True)


def sampled(rows: list[dict[str, Any]], within: float | None = None) -> bool:
    """Both instances running with cpu, memory and an age (at most ``within``)."""
    return len(rows) == 2 and all(
        r["state"] == "running" and r["mem"] and r["cpu"] is not None and r["age"] is not None
        and (within is None or r["age"] <= within)
        for r in rows
    )


async def test_ps_shows_the_pushed_cpu_and_memory_with_an_age_within_the_interval(lab):
    """Once the instances run, ps (not fresh) lists cpu, memory and an age no older than the
    push interval (plus the time a sample takes)."""
    rows = await lab.ps_until(lambda rows: sampled(rows, INTERVAL + 0.25), "fresh samples")
    assert all(r["mem"] > 0 for r in rows)


async def test_ps_answers_from_the_cache_while_the_agent_is_frozen(lab):
    """With the agent stopped (SIGSTOP), ps still lists cpu and memory, from the cache, and
    the age grows; ps with fresh cannot get them from the agent. Resumed, the age is small
    again."""
    await lab.ps_until(sampled, "samples")
    assert lab.agent is not None
    os.kill(lab.agent.pid, signal.SIGSTOP)
    try:
        first = await lab.call("ps")
        assert sampled(first)
        start = max(r["age"] for r in first)
        grown = await lab.ps_until(
            lambda rows: sampled(rows) and min(r["age"] for r in rows) > start + 2 * INTERVAL,
            "the age growing",
        )
        assert [r["pid"] for r in grown] == [r["pid"] for r in first]
        live = await lab.call("ps", fresh=True)
        assert [(r["cpu"], r["age"]) for r in live] == [(None, None), (None, None)]
    finally:
        os.kill(lab.agent.pid, signal.SIGCONT)
    await lab.ps_until(lambda rows: sampled(rows, INTERVAL + 0.25), "young samples again")


async def test_ps_fresh_asks_the_agent_live(lab):
    """ps with fresh gets cpu and memory from the agent now: age 0."""
    rows = await lab.ps_until(lambda rows: sampled(rows, 0.0), "live samples", fresh=True)
    assert all(r["age"] == 0.0 for r in rows)
