"""A controller and one agent in one process: what ``gaffer start`` runs.

The agent talks to the controller over loopback exactly as a remote one would, so everything
``gafferctl`` does against a cluster works against ``gaffer start`` unchanged. The template file
is the source of truth for this mode: applying it creates and updates its templates, and
removes templates the file no longer has.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from gaffer.agent.agent import Agent
from gaffer.agent.link import LinkSettings
from gaffer.common.bus import EventBus
from gaffer.common.dependson import graph_problems
from gaffer.common.errors import TemplateError
from gaffer.common.keys import KeyPair
from gaffer.common.limits import DEFAULT_EVENT_BUFFER
from gaffer.common.roles import Role
from gaffer.common.template import Template
from gaffer.controller.controller import Controller
from gaffer.controller.counts import CountLimits
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.tokens import Principal

log = logging.getLogger("gaffer")

EMBEDDED_HEARTBEAT = 5.0
"""Seconds between the embedded agent's heartbeats (the controller beats every half of it).
Liveness guards against losing a host; here agent and controller share one process and die
together, so the beat only keeps the link's lease fresh, and a slow one keeps an idle
``gaffer start`` asleep (about one wake-up a second, where the default 1 s made five)."""

@dataclass(frozen=True)
class EmbeddedSettings:
    """``bind`` None: the private unix sockets of the runtime directory (see
    ``gaffer.common.endpoints``), or ``tcp://127.0.0.1:6001`` with ``keys``; a TCP ``bind``
    needs ``keys`` or ``insecure``."""

    node: str
    data_dir: Path = Path(".gaffer")
    bind: str | None = None
    pub: str | None = None
    insecure: bool = False
    keys: Path | None = None
    """A controller key directory (``controller.key_secret``, ``clients/``), as
    ``gaffer-controller --keys``: TCP with CURVE. The embedded agent gets a key made at start,
    trusted in memory only."""
    limits: CountLimits = CountLimits()
    event_buffer: int = DEFAULT_EVENT_BUFFER
    """Events the controller holds for replay (``--event-buffer``)."""
    http: str | None = None
    """``HOST:PORT`` of the HTTP API and dashboard; None: none."""
    http_optional: bool = False
    """Go on without HTTP when its port is taken (the default address, not one asked for)."""


class Embedded:
    def __init__(self, settings: EmbeddedSettings, bus: EventBus) -> None:
        self.settings = settings
        self._agent_keys = KeyPair(*zmq.curve_keypair()) if settings.keys is not None else None
        self.controller = Controller(ControllerSettings(
            bind=settings.bind,
            pub=settings.pub,
            data_dir=settings.data_dir,
            insecure=settings.insecure,
            keys=settings.keys,
            local_agents=((self._agent_keys.public, settings.node),) if self._agent_keys else (),
            liveness=Liveness(interval=EMBEDDED_HEARTBEAT, startup_grace=0.0),
            max_per_template=settings.limits.per_template,
            max_instances=settings.limits.total,
            event_buffer=settings.event_buffer,
            http=settings.http,
            http_optional=settings.http_optional,
        ))
        self._bus = bus
        self.agent: Agent | None = None

    async def start(self) -> None:
        await self.controller.start()
        self.agent = Agent(
            LinkSettings(
                controller=self.controller.endpoint,
                node=self.settings.node,
                labels={},
                state_dir=self.settings.data_dir / "agent",
                keys=self._agent_keys,
                controller_key=self.controller.keys.public if self.controller.keys else None,
            ),
            bus=self._bus,
            keeper=False,
        )
        await self.agent.start()

    def dashboard_url(self) -> str | None:
        """The dashboard's address with an admin token for this run (valid until it stops), or
        None without HTTP. The token is in the fragment, which browsers never send; the page
        moves it into ``sessionStorage`` and out of the address bar at once."""
        controller = self.controller
        if controller.http is None or controller.tokens is None:
            return None
        token = controller.tokens.issue(Principal("run", Role.ADMIN), math.inf, time.time())
        return f"{controller.http.url}/#token={token}"

    @property
    def manager(self):
        assert self.agent is not None
        return self.agent.manager

    async def apply(self, templates: list[Template]) -> list[dict]:
        """Make the desired state exactly ``templates``: create, update, resume, delete (the
        apply in slices, so a file of 100,000 templates leaves the loop free meanwhile).
        One ``{name, change}`` per template, the deleted ones last (``change`` "deleted")."""
        cluster = self.controller.cluster
        assert cluster is not None
        problems = graph_problems({t.name: t.depends_on for t in templates}, {t.name: t.restart for t in templates})
        if problems:  # the file is the whole desired state: a dependency must be in it
            raise TemplateError(problems)
        wanted = {t.name for t in templates}
        gone = sorted(set(cluster.templates) - wanted)
        if gone:
            await cluster.delete_many(gone, templates)
        results = await cluster.apply_sliced(templates)
        for template in templates:
            if cluster.templates[template.name].paused:
                await cluster.set_paused(template.name, False)
        return results + [{"name": name, "change": "deleted"} for name in gone]

    async def stop(self) -> None:
        """Stop every process, then the agent and the controller (the desired state stays)."""
        if self.agent is not None:
            await self.agent.stop(stop_processes=True)
        await self.controller.stop()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self.agent is not None
        async with asyncio.timeout(timeout):
            await self.agent.connected.wait()
