"""An agent: the Manager of this host, its link to the controller, and what they share.

The daemon, ``gaffer start`` and the tests all build agents through this one class so the
pieces are always wired the same way.
"""

from __future__ import annotations

import asyncio
import logging

from gaffer.agent.assignment import Assignments
from gaffer.agent.commands import Commands
from gaffer.agent.link import ControllerLink, LinkSettings, read_agent_id
from gaffer.agent.manager import Manager
from gaffer.common.bus import EventBus

log = logging.getLogger("gaffer.agent")


class Agent:
    def __init__(self, settings: LinkSettings, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.agent_id = read_agent_id(settings.state_dir)
        self.manager = Manager(
            node=settings.node,
            bus=bus,
            agent_env={"GAFFER_AGENT_ID": self.agent_id},
            held=True,
        )
        self.link = ControllerLink(self.manager, settings, self.agent_id)
        self.assignments = Assignments(self.manager, self.link.ack)
        self.commands = Commands(self.manager, self.assignments)
        self.link.on_assign = self.assignments.apply
        self.link.commands = self.commands.table()

    async def start(self) -> None:
        self.link.start()

    async def stop(self, stop_processes: bool = False) -> None:
        """Close the link; the processes keep running unless ``stop_processes``."""
        await self.link.stop()
        if stop_processes:
            await self.manager.shutdown()

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected
