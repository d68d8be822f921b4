"""An in-process cluster for integration tests: a real controller and real agents on one loop,
talking over real unix sockets, with a client."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.client import AsyncClient
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings

FAST = Liveness(interval=0.1, suspect_misses=3, down_misses=5, startup_grace=0.0)


def spec(name: str, count: int, **fields) -> dict:
    return {"name": name, "cmd": "sleep", "args": ["300"], "numprocesses": count, "startsecs": 0, **fields}


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.controller: Controller | None = None
        self.agents: dict[str, Agent] = {}
        self.client: AsyncClient | None = None

    async def start_controller(self, **overrides) -> Controller:
        settings = ControllerSettings(**{
            "bind": f"ipc://{self.tmp}/run/control.sock", "data_dir": self.tmp / "controller",
            "liveness": FAST, "node_grace": 0.2, **overrides,
        })
        self.controller = Controller(settings)
        await self.controller.start()
        self.client = AsyncClient(self.controller.endpoint, timeout=5.0)
        return self.controller

    async def start_agent(self, name: str, labels: dict[str, str] | None = None, **overrides) -> Agent:
        """``overrides``: other ``LinkSettings`` (``stats_interval``, say)."""
        assert self.controller is not None
        settings = LinkSettings(**{
            "controller": self.controller.endpoint, "node": name, "labels": labels or {},
            "state_dir": self.tmp / f"agent-{name}", "heartbeat": 0.1, "timeout": 0.5, **overrides,
        })
        agent = Agent(settings)
        await agent.start()
        self.agents[name] = agent
        await asyncio.wait_for(agent.connected.wait(), 5)
        return agent

    async def lose_agent(self, name: str) -> None:
        """The host dies: its link goes silent and its processes die with it."""
        agent = self.agents.pop(name)
        await agent.stop(stop_processes=True)

    async def call(self, op: str, **args):
        assert self.client is not None
        return await self.client.call(op, **args)

    async def running(self, name: str | None = None) -> dict[str, str]:
        rows = await self.call("ps", **({"name": name} if name else {}))
        return {r["id"]: r["node"] for r in rows if r["state"] == "running" and not r["stale"]}

    async def wait_running(self, count: int, name: str | None = None, timeout: float = 15.0) -> dict[str, str]:
        found: dict[str, str] = {}

        async def enough() -> bool:
            nonlocal found
            found = await self.running(name)
            return len(found) == count

        deadline = asyncio.get_running_loop().time() + timeout
        while not await enough():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"wanted {count} running, have {found}")
            assert self.controller is not None
            await self.controller.changed(0.2)
        return found

    async def wait_node(self, name: str, state: str, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            nodes = {n["name"]: n["state"] for n in await self.call("nodes")}
            if nodes.get(name) == state:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"node {name} is {nodes.get(name)}, not {state}")
            assert self.controller is not None
            await self.controller.changed(0.2)

    async def close(self) -> None:
        for agent in self.agents.values():
            await agent.stop(stop_processes=True)
        if self.client is not None:
            await self.client.close()
        if self.controller is not None:
            await self.controller.stop()
