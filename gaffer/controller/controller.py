"""The controller: its parts wired once, started and stopped in order, and its status.

It binds one ROUTER (agents and clients, ``PeerServer``) and one XPUB (events, ``EventHub``).
Each part has one job::

    PeerServer ──agent messages──► AgentMessages ──► NodeTable, Cluster, EventHub
               ──requests───────► Requests ──► Api ──► Cluster, Links, OneOffs, Stages
    Ticks (every half interval) ──► liveness.judge, beats, stage expiry, Cluster timers
    Cluster ──assign──► Links ──► PeerServer          Backups (own schedule) ──► Store file
    Cluster, Sending, Tokens, Positions ──await──► StateStore (``--store``: SQLite by default)

``Controller`` itself only builds them (each gets its collaborators in its constructor),
routes the server's two kinds of peers, and answers ``status``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import zmq
import zmq.asyncio

from gaffer import __version__
from gaffer.common.endpoints import (
    INSECURE_WARNING,
    Endpoint,
    claim_socket,
    lookup_group,
    release_socket,
    require_protection,
    share_socket,
)
from gaffer.common.errors import ConfigError, StorageError
from gaffer.common.keys import AuthorizedKeys, KeyPair, load_keypair
from gaffer.common.protocol import Message
from gaffer.common.transport import Channel, MessageChannel, bind, make_curve_server, new_socket
from gaffer.controller.agents import AgentMessages
from gaffer.controller.api import Api
from gaffer.controller.auth import AGENT, CLIENT, WRONG_NODE, ZapHandler
from gaffer.controller.backup import BackupPolicy, Backups
from gaffer.controller.changes import Changes
from gaffer.controller.cluster import Cluster
from gaffer.controller.counts import CountLimits
from gaffer.controller.eventlog import EventLog
from gaffer.controller.eventops import EventOps
from gaffer.controller.hub import PUB_HWM, EventHub, Positions
from gaffer.controller.links import Links
from gaffer.controller.meters import Caps, Meters, Sources
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.principals import SessionPrincipals
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.requests import Requests
from gaffer.controller.server import PeerServer, Session
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.staging import Stages
from gaffer.controller.statcache import StatCache
from gaffer.controller.observed import load
from gaffer.controller.sqlitestore import SqliteStateStore
from gaffer.controller.statestore import StateStore
from gaffer.controller.storespec import open_store
from gaffer.controller.ticks import Ticks
from gaffer.controller.tokenfile import ensure_admin_token
from gaffer.controller.tokenops import TokenOps
from gaffer.controller.tokens import Tokens

if TYPE_CHECKING:
    from gaffer.controller.http.server import HttpServer

log = logging.getLogger("gaffer.controller")

EVENT_LOG_STATUS = "event_log"
"""The key of ``status`` holding the event log's figures (``events`` names the events endpoint)."""
MAIN_DOMAIN = "gaffer"
EVENTS_DOMAIN = "gaffer-events"


class Controller:
    def __init__(self, settings: ControllerSettings, *, clock: Callable[[], float] | None = None) -> None:
        """``clock``: the monotonic time every part reads (the loop's by default; a
        ``FakeClock``'s ``time`` in tests that serve on a channel, see ``serve_on``)."""
        self.settings = settings
        self._clock = clock
        self.id = secrets.token_hex(6)
        self.nodes = NodeTable()
        self.keys: KeyPair | None = None
        self.started_at = time.time()
        self.hub = EventHub(None)
        self.endpoint = ""
        self.pub_endpoint = ""
        self.insecure = False
        self.stages = Stages()
        self.oneoffs = OneOffs()
        self.changes = Changes()
        self.stat_cache = StatCache()
        self.store: StateStore | None = None
        self.backups: Backups | None = None
        self.cluster: Cluster | None = None
        self.links: Links | None = None
        self.agents: AgentMessages | None = None
        self.requests: Requests | None = None
        self.ticks: Ticks | None = None
        self.meters = Meters()
        self._clients: AuthorizedKeys | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._zap: ZapHandler | None = None
        self._server: PeerServer | None = None
        self._socket_locks: list[tuple[Endpoint, int]] = []
        self.ops: dict[str, Any] = {}
        """Every client operation by name, as both the ZeroMQ side and the HTTP API call them."""
        self.tokens: Tokens | None = None
        self.http: HttpServer | None = None
        self._numbered = False
        """Whether this incarnation reserved event positions (then a clean stop records its last)."""

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the keys and the store, bind, and start serving; on any failure, everything
        started so far is released again before the error propagates."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        agents = clients = None
        if settings.keys is not None:
            self.keys = load_keypair(settings.keys / "controller.key_secret")
            agents = AuthorizedKeys(settings.keys / "agents", dict(settings.local_agents))
            clients = self._clients = AuthorizedKeys(settings.keys / "clients")
        control, events = settings.control, settings.events
        require_protection([control, events], self.keys is not None, settings.insecure, "gaffer-controller")
        self.insecure = self.keys is None and not (control.is_ipc and events.is_ipc)
        group = lookup_group(settings.socket_group)
        for endpoint in (control, events):
            if endpoint.is_ipc:
                self._socket_locks.append((endpoint, claim_socket(endpoint, group)))
        self._open_store()
        self._ctx = zmq.asyncio.Context()
        if self.keys is not None:
            assert agents is not None and clients is not None
            self._zap = ZapHandler(
                self._ctx, agents, clients,
                {MAIN_DOMAIN: (AGENT, CLIENT), EVENTS_DOMAIN: (CLIENT,)},
            )
            self._zap.start()
        router = new_socket(self._ctx, zmq.ROUTER)
        pub = new_socket(self._ctx, zmq.XPUB, hwm=PUB_HWM)
        if self.keys is not None:
            make_curve_server(router, self.keys, MAIN_DOMAIN)
            make_curve_server(pub, self.keys, EVENTS_DOMAIN)
            assert self._zap is not None
            self._zap.watch(router, "control")
            self._zap.watch(pub, "events")
        try:
            self.endpoint = bind(router, control)
            self.pub_endpoint = bind(pub, events)
        except ConfigError:
            router.close(linger=0)
            pub.close(linger=0)
            raise
        share_socket(control, group)
        share_socket(events, group)
        await self._wire(Channel(router), pub)
        assert self.ticks is not None
        self.ticks.start()
        if settings.http_address is not None:
            await self._serve_http()
        log.info(
            "gaffer-controller %s (%s) listening on %s, events on %s, data in %s, %s",
            __version__, self.id, self.endpoint, self.pub_endpoint, settings.data_dir,
            self._security_line(agents, clients),
        )
        if self.insecure:
            log.warning(self.security_warning())

    async def _serve_http(self) -> None:
        from gaffer.controller.http.server import serve_http

        try:
            self.http = await serve_http(self)
        except ConfigError as exc:
            if not self.settings.http_optional:
                raise
            log.warning("no HTTP API or dashboard: %s", exc.message)
            return
        log.info("HTTP API, /metrics and the dashboard on %s", self.http.url)

    async def serve_on(self, channel: MessageChannel) -> None:
        """Serve agents and clients on ``channel`` (an in-memory one, ``gaffer.testing.channel``)
        instead of binding sockets: no keys, no events socket (events go to the local bus),
        and no ticking task: the caller ticks (``ticks.tick``) on its own clock. For tests
        that run a controller without sockets or real time."""
        try:
            self._open_store()
            await self._wire(channel, None)
        except BaseException:
            await self.stop()
            raise

    def _open_store(self) -> None:
        """Open the store ``--store`` names; backups copy an SQLite store's file. The data
        dir (admin.token) is made too: the store may be elsewhere."""
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the data dir {self.settings.data_dir}: {exc.strerror}") from exc
        self.store = open_store(self.settings.store_spec, on_write=self.meters.store_writes.observe)
        if isinstance(self.store, SqliteStateStore):
            self.backups = Backups(self.store.path, BackupPolicy.of(self.settings))

    async def _wire(self, channel: MessageChannel, pub: zmq.asyncio.Socket | None) -> None:
        """Build the parts, each with its collaborators, and start the ones that serve (the
        caller starts the ticks)."""
        settings = self.settings
        assert self.store is not None
        numbering = await self.store.start_numbering()
        self.hub = EventHub(
            pub, self.hub.bus,
            EventLog(numbering.first, numbering.horizon, settings.event_buffer),
            Positions(numbering.reserved, self.store.reserve_positions),
        )
        self._numbered = True
        self._server = PeerServer(channel, self, secure=self.keys is not None)
        self.links = links = Links(self._server, self.nodes)
        self.cluster = Cluster(
            self.store, await load(self.store), self.nodes, self.hub, links.send_assign, settings.node_grace, self.now,
            limits=CountLimits(settings.max_per_template, settings.max_instances),
            on_reconciled=self.meters.reconciles.observe,
        )
        self.agents = AgentMessages(
            self.nodes, links, self.cluster, self.hub, self.oneoffs, self.changes,
            settings.liveness, self.id, self.now, self.stat_cache,
        )
        api = Api(self.cluster, links, self.oneoffs, self.stages, self.changes, self, self.stat_cache)
        self.tokens = Tokens(self.store, await self.store.tokens())
        await ensure_admin_token(self.tokens, settings.data_dir, time.time())
        self.ops = {**api.ops(), **EventOps(self.hub.log, api).ops(), **TokenOps(self.tokens).ops()}
        self.requests = Requests(self.ops, self._reply, SessionPrincipals(self._clients).principal)
        self.ticks = Ticks(settings.liveness, self.nodes, self.agents, links, self.cluster, self.stages, self.now)
        self.hub.on_subscriptions_changed(self.agents.send_watch_all)
        self.hub.on_subscriptions_changed(self.changes.notify)
        self.meters.watch(
            Sources(self.nodes, self.cluster, self.agents, self._server, self.hub, self.stat_cache),
            Caps(settings.metrics_max_templates, settings.metrics_max_instances),
        )
        self.hub.start()
        self._server.start()
        if self.backups is not None:
            self.backups.start()

    def security_warning(self) -> str | None:
        """The warning ``--insecure`` earns, at start and in every ``status``."""
        if not self.insecure:
            return None
        return INSECURE_WARNING.format(endpoints=f"{self.endpoint} and {self.pub_endpoint}")

    def _security_line(self, agents: AuthorizedKeys | None, clients: AuthorizedKeys | None) -> str:
        if self.keys is None:
            if self.insecure:
                return "INSECURE: no CURVE keys on TCP, any peer is accepted"
            return "local sockets only (no keys): access is limited by file permissions"
        return (
            f"CURVE key {self.keys.fingerprint}, {len(agents or ())} agent and "
            f"{len(clients or ())} client keys authorized"
        )

    async def stop(self) -> None:
        """Stop every part, newest first: requests and timers, then reconciling, sockets, the
        store. Whatever waits (a ``drain``, a command's result) stops waiting at once."""
        self.changes.close()
        if self.http is not None:
            await self.http.stop()
        if self.requests is not None:
            await self.requests.stop()
        if self.ticks is not None:
            await self.ticks.stop()
        if self.links is not None:
            self.links.close()
        if self.backups is not None:
            await self.backups.stop()
        if self.cluster is not None:
            await self.cluster.close()
        if self.tokens is not None:
            await self.tokens.close()
        if self._server is not None:
            await self._server.stop()
        await self.hub.stop()
        await self._record_clean_stop()
        if self._zap is not None:
            await self._zap.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        for endpoint, fd in self._socket_locks:
            release_socket(endpoint, fd)
        self._socket_locks.clear()

    async def _record_clean_stop(self) -> None:
        """Store the last event position: the next incarnation then knows nothing was published
        after it, and subscribers that had everything resume without a loss."""
        if not self._numbered or self.store is None:
            return
        self._numbered = False
        try:
            await self.store.record_clean_stop(self.hub.log.last)
        except StorageError as exc:  # the store logged why, once
            log.error("the last event position (%d) was not recorded (store: %s): subscribers "
                      "will be told the events before the restart may be lost", self.hub.log.last, exc.reason)

    def reconfigure(self, settings: ControllerSettings) -> ControllerSettings:
        """Take what a config reload may change while running (``node_grace``, the count
        limits) from ``settings``; everything else stays as it runs. The settings now in use."""
        self.settings = replace(
            self.settings, node_grace=settings.node_grace,
            max_per_template=settings.max_per_template, max_instances=settings.max_instances,
        )
        if self.cluster is not None:
            self.cluster.set_limits(
                settings.node_grace, CountLimits(settings.max_per_template, settings.max_instances)
            )
        return self.settings

    # ----------------------------------------------------------------- routing

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def subscribed(self, prefix: str) -> bool:
        """Whether a remote subscriber holds ``prefix`` (a ``run``'s sync marker)."""
        return self.hub.holds(prefix)

    async def changed(self, timeout: float) -> None:
        """Wait until something in the cluster changes (a report, an ack, a node) or timeout."""
        await self.changes.wait(timeout)

    def on_agent(self, session: Session, message: Message) -> None:
        assert self.agents is not None
        self.agents.receive(session, message)

    def on_client(self, session: Session, message: Message) -> None:
        assert self.requests is not None
        self.requests.receive(session, message)

    def _reply(self, session: Session, body: dict[str, Any]) -> bool:
        assert self._server is not None
        return self._server.send(session, "reply", body)

    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        """Ask ``node``'s agent to do ``op`` now (see ``Links.command``)."""
        assert self.links is not None
        return await self.links.command(node, op, args, timeout)

    # ----------------------------------------------------------------- status

    def _auth_status(self) -> dict[str, Any] | None:
        """The ZAP handler's counts, with the agent keys that said hello as another node."""
        if self._zap is None:
            return None
        assert self.agents is not None
        stats = self._zap.stats
        reasons = dict(stats.reasons)
        wrong = self.agents.wrong_node
        if wrong:
            reasons[WRONG_NODE] = wrong
        return {
            "accepted": stats.accepted, "rejected": stats.rejected + wrong,
            "reasons": reasons, "rejected_keys": dict(stats.rejected_keys),
        }

    def status(self) -> dict[str, Any]:
        assert self._server is not None and self.cluster is not None and self.agents is not None
        assert self.requests is not None
        cluster = self.cluster
        instances = sum(n.running for n in self.nodes.nodes.values())
        ready = sum(n.ready for n in self.nodes.nodes.values())
        return {
            "controller": self.id,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "endpoint": self.endpoint,
            "events": self.pub_endpoint,
            "http": self.http.url if self.http is not None else None,
            "data_dir": str(self.settings.data_dir),
            "secure": self.keys is not None,
            "transport": "curve" if self.keys is not None else "insecure" if self.insecure else "local",
            "warning": self.security_warning(),
            "fingerprint": self.keys.fingerprint if self.keys else None,
            "nodes": self.nodes.counts(),
            "hosts": self.nodes.host_counts(),
            "templates": len(cluster.templates),
            "instances": {"wanted": sum(
                0 if t.paused else t.template.numprocesses for t in cluster.templates.values()
            ), "placed": len(cluster.placement), "running": instances,
                "ready": ready},
            "moving_allowed": cluster.may_move,
            "samples": self.stat_cache.status(self.now()),
            "link": self._server.stats,
            "auth": self._auth_status(),
            "events_published": self.hub.published,
            EVENT_LOG_STATUS: self.hub.status(),
            "events_dropped": self.hub.dropped,
            "agent_events_dropped": self.agents.drops.snapshot(),
            "agents_dropped": self.nodes.dropped(),
            "oneoffs": self.oneoffs.status(),
            "stages_expired": self.stages.expired,
            "requests": {
                "running": self.requests.running, "failed": self.requests.failed,
                "forbidden": self.requests.forbidden,
            },
            "storage": {**self.store.health(), "backups": self.backups.status() if self.backups else None}
            if self.store is not None else None,
        }
