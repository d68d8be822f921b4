"""The controller: sockets, node sessions, liveness, events and the client API, on one loop.

It binds one ROUTER (agents and clients) and one XPUB (events). Agents say ``hello`` with
everything they run; the controller answers ``welcome`` and then hears heartbeats, reports and
events, and sends ``beat`` back every interval. Liveness is judged by the pure rules in
``liveness`` on a timer; node state changes are published as ``node.<name>.up|suspect|down``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
import time
from typing import Any, Iterator

import zmq
import zmq.asyncio

from gaffer import __version__
from gaffer.common import protocol
from gaffer.common.badmsg import BadMessages
from gaffer.common.endpoints import (
    INSECURE_WARNING,
    Endpoint,
    claim_socket,
    lookup_group,
    release_socket,
    require_protection,
    share_socket,
)
from gaffer.common.errors import (
    ConfigError,
    ControllerUnreachable,
    GafferError,
    InvalidRequest,
    ProtocolError,
    TooLarge,
    from_wire,
)
from gaffer.common.keys import AuthorizedKeys, KeyPair, load_keypair
from gaffer.common.protocol import Message
from gaffer.common.tasks import cancel_and_wait
from gaffer.common.transport import bind, make_curve_server, new_socket
from gaffer.controller.admission import admit_event, stamped
from gaffer.controller.api import Api
from gaffer.controller.auth import AGENT, CLIENT, ZapHandler
from gaffer.controller.backup import BackupPolicy, Backups
from gaffer.controller.cluster import Cluster
from gaffer.controller.counts import CountLimits
from gaffer.controller.hub import PUB_HWM, EventHub
from gaffer.controller.liveness import NodeState, judge
from gaffer.controller.registry import Node, NodeTable
from gaffer.controller.server import PeerServer, Session
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.staging import Stages
from gaffer.controller.store import Store

log = logging.getLogger("gaffer.controller")

MAX_ONEOFF_EXITS = 1_000
MAX_PROBLEMS = 200
"""Problems sent back with one refused request: enough to fix a file, never too big to send."""
MAIN_DOMAIN = "gaffer"
EVENTS_DOMAIN = "gaffer-events"


class Controller:
    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.id = secrets.token_hex(6)
        self.nodes = NodeTable()
        self.keys: KeyPair | None = None
        self.started_at = time.time()
        self._started_mono = 0.0
        self._ctx: zmq.asyncio.Context | None = None
        self._zap: ZapHandler | None = None
        self._server: PeerServer | None = None
        self.hub = EventHub(None)
        self._tasks: list[asyncio.Task] = []
        self.endpoint = ""
        self.pub_endpoint = ""
        self.insecure = False
        self._socket_locks: list[tuple[Endpoint, int]] = []
        self._requests: set[asyncio.Task] = set()
        self.stages = Stages()
        self.store: Store | None = None
        self.backups: Backups | None = None
        self.cluster: Cluster | None = None
        self._client_ops = Api(self).ops()
        self._command_ids = itertools.count(1)
        self._commands: dict[int, tuple[str, asyncio.Future]] = {}
        self._waiters: list[asyncio.Future] = []
        self._cut_off = False
        self._regained_at: float | None = None
        self.oneoff_exits: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
        self.oneoffs_started: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.oneoffs_pending: collections.Counter[tuple[str, str]] = collections.Counter()
        self.agent_drops = BadMessages(logger=logging.getLogger("gaffer.controller.admission"))

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
            agents = AuthorizedKeys(settings.keys / "agents")
            clients = AuthorizedKeys(settings.keys / "clients")
        control, events = settings.control, settings.events
        require_protection([control, events], self.keys is not None, settings.insecure, "gaffer-controller")
        self.insecure = self.keys is None and not (control.is_ipc and events.is_ipc)
        group = lookup_group(settings.socket_group)
        for endpoint in (control, events):
            if endpoint.is_ipc:
                self._socket_locks.append((endpoint, claim_socket(endpoint, group)))
        loop = asyncio.get_running_loop()
        self._started_mono = loop.time()
        self.store = Store(settings.data_dir)
        self.backups = Backups(self.store.path, BackupPolicy.of(settings))
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
        try:
            self.endpoint = bind(router, control)
            self.pub_endpoint = bind(pub, events)
        except ConfigError:
            router.close(linger=0)
            pub.close(linger=0)
            raise
        share_socket(control, group)
        share_socket(events, group)
        self.hub = EventHub(pub, self.hub.bus)
        self.hub.on_subscriptions_changed(self._send_watch_all)
        self.hub.start()
        self.cluster = Cluster(
            self.store, self.nodes, self.hub, self._send_assign, settings.node_grace, self.now,
            limits=CountLimits(settings.max_per_template, settings.max_instances),
        )
        self._server = PeerServer(router, self, secure=self.keys is not None)
        self._server.start()
        self.backups.start()
        self._tasks.append(loop.create_task(self._tick()))
        log.info(
            "gaffer-controller %s (%s) listening on %s, events on %s, data in %s, %s",
            __version__, self.id, self.endpoint, self.pub_endpoint, settings.data_dir,
            self._security_line(agents, clients),
        )
        if self.insecure:
            log.warning(self.security_warning())

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
        for task in [*self._tasks, *self._requests]:
            task.cancel()
        for task in list(self._requests):
            await cancel_and_wait(task)
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self.backups is not None:
            await self.backups.stop()
        if self.cluster is not None:
            await self.cluster.close()
        if self._server is not None:
            await self._server.stop()
        await self.hub.stop()
        if self._zap is not None:
            await self._zap.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        for _, future in self._commands.values():
            if not future.done():
                future.cancel()
        if self.store is not None:
            self.store.close()
            self.store = None
        for endpoint, fd in self._socket_locks:
            release_socket(endpoint, fd)
        self._socket_locks.clear()

    # ----------------------------------------------------------------- timers

    async def _tick(self) -> None:
        """Judge liveness twice per interval (so a state change is never late by more than
        half an interval); beat each agent once per interval."""
        interval = self.settings.liveness.interval
        beat = False
        while True:
            await asyncio.sleep(interval / 2)
            beat = not beat
            try:
                self._judge_nodes()
                if beat:
                    self._send_beats()
                    self.stages.expire(self.now())
                assert self.cluster is not None
                self.cluster.check_timers()
            except Exception:
                log.exception("controller tick failed")

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def changed(self, timeout: float) -> None:
        """Wait until something in the cluster changes (a report, an ack, a node) or timeout."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await waiter
        except TimeoutError:
            pass

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _judge_nodes(self) -> None:
        now = self.now()
        nodes = self.nodes.nodes
        verdict = judge(
            {name: node.last_heard for name, node in nodes.items()},
            now,
            self._started_mono,
            self.settings.liveness,
            already_down=[n for n, node in nodes.items() if node.state is NodeState.DOWN],
            regained_at=self._regained_at,
        )
        if self._cut_off and not verdict.cut_off:
            log.warning("most nodes are heard again: every node gets a fresh timeout")
            self._regained_at = now
            self._cut_off = False
            self._judge_nodes()
            return
        self._cut_off = verdict.cut_off
        for name, state in verdict.states.items():
            node = nodes[name]
            if state is not node.state:
                self._set_node_state(node, state)
        assert self.cluster is not None
        if verdict.cut_off and self.cluster.may_move:
            log.error("most nodes went silent at once: assuming this controller is cut off; moving nothing")
        self.cluster.set_guard(verdict.may_move)

    def _set_node_state(self, node: Node, state: NodeState) -> None:
        old, node.state = node.state, state
        log.info("node %s: %s -> %s", node.name, old, state)
        if state is NodeState.DOWN:
            self.nodes.disconnect(node)
        self.hub.publish(f"node.{node.name}.{state.value}", {"node": node.name, "previous": old.value})
        assert self.cluster is not None
        self.cluster.node_changed(node)
        self._notify()

    def _send_beats(self) -> None:
        assert self._server is not None and self.cluster is not None
        for node in self.nodes.nodes.values():
            session = self._session_of(node)
            if session is not None and node.state is not NodeState.DOWN:
                sent = self.cluster.sent.get(node.name)
                generation = sent.generation if sent is not None else node.generation_acked
                self._server.send(session, "beat", {"generation": generation})

    def _send_assign(self, node: Node, body: dict[str, Any]) -> bool:
        session = self._session_of(node)
        if session is None:
            return False
        return self._server_send(session, "assign", body)

    def _send_watch_all(self) -> None:
        for node in self.nodes.nodes.values():
            self._send_watch(node)

    def _send_watch(self, node: Node) -> None:
        """Tell an agent which output topics have subscribers (only explicit ``output.``
        subscriptions count: a subscriber to everything does not pull every line of output)."""
        wanted = sorted({
            p if p.startswith("output.") else "output."
            for p in self.hub.subscribed_prefixes() if p.startswith("output")
        })
        session = self._session_of(node)
        if session is None or node.state is NodeState.DOWN:
            return
        self._server_send(session, "command", {"id": 0, "op": "watch", "args": {"prefixes": wanted}})

    async def command(self, node: Node, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        """Ask ``node``'s agent to do ``op`` now; its result, or the error it reported."""
        session = self._session_of(node)
        if session is None or node.state is NodeState.DOWN:
            raise InvalidRequest(f"node {node.name} is not connected")
        command_id = next(self._command_ids)
        future = asyncio.get_running_loop().create_future()
        self._commands[command_id] = (node.name, future)
        try:
            self._server_send(session, "command", {"id": command_id, "op": op, "args": args})
            async with asyncio.timeout(timeout):
                body = await future
        except TimeoutError:
            raise ControllerUnreachable(f"node {node.name} did not answer {op} within {timeout:g}s") from None
        finally:
            self._commands.pop(command_id, None)
        if not body["ok"]:
            raise from_wire(body["error"])
        return body["result"]

    def _session_of(self, node: Node) -> Session | None:
        assert self._server is not None
        if node.peer is None:
            return None
        return self._server._sessions.get(node.peer)

    # ----------------------------------------------------------------- agents

    def on_agent(self, session: Session, message: Message) -> None:
        kind, body = message.kind, message.body
        if kind == "hello":
            self._on_hello(session, body)
            return
        node = self.nodes.by_peer(session.peer)
        if node is None or node.state is NodeState.DOWN or (
            session.name is not None and node.name != session.name
        ):
            self._refuse(session, "hello_required", "say hello first: this controller does not know you")
            return
        now = self.now()
        node.last_heard = now
        assert self.cluster is not None
        if kind == "heartbeat":
            revived = node.state is not NodeState.UP
            stale = self.nodes.heartbeat(node, body, now)
            if revived:
                self._set_node_state(node, NodeState.UP)
            if stale:
                self._server_send(session, "command", {"id": 0, "op": "report", "args": {}})
        elif kind == "report":
            if body["full"]:
                self.nodes.replace_instances(node, body["instances"])
            else:
                self.nodes.update_instances(node, body["instances"], body["removed"])
            self.cluster.instances_reported(node, body["instances"])
            self._notify()
        elif kind == "events":
            owns = _OwnedBy(self, node.name)
            for event in body["events"]:
                topic = event["topic"]
                refused = admit_event(topic, event["data"], owns)
                if refused is not None:
                    self.agent_drops.record(f"agent:{node.name}", refused, f"event {topic}")
                    continue
                data = stamped(event["data"], node.name)
                self.hub.publish(topic, data, event["ts"])
                if data.get("oneoff") and event["topic"].endswith(".exit") and isinstance(data.get("id"), str):
                    self.oneoff_exits[(node.name, data["id"])] = data
                    while len(self.oneoff_exits) > MAX_ONEOFF_EXITS:
                        self.oneoff_exits.popitem(last=False)
                    self._notify()
        elif kind == "ack":
            self.cluster.acked(node, body["generation"], body["ok"], body["errors"])
            self._notify()
        elif kind == "result":
            pending = self._commands.get(body["id"])
            if pending is not None and pending[0] == node.name and not pending[1].done():
                pending[1].set_result(body)

    def _on_hello(self, session: Session, body: dict[str, Any]) -> None:
        if session.name is not None and body["node"] != session.name:
            self._refuse(
                session, "node_mismatch",
                f"this key is bound to node {session.name!r}, not {body['node']!r}",
            )
            return
        if body["protocol"] != protocol.PROTOCOL_VERSION:
            self._refuse(
                session, "unsupported_protocol",
                f"protocol {body['protocol']} is not served here (this controller speaks "
                f"{protocol.PROTOCOL_VERSION})",
            )
            return
        outcome = self.nodes.hello(body, session.peer, session.address, self.now())
        if not outcome.accepted:
            log.warning("refused hello for node %s from %s: %s", body["node"], session.label, outcome.message)
            self._refuse(session, outcome.code, outcome.message)
            return
        node = self.nodes.get(body["node"])
        assert node is not None
        session.name = node.name
        log.info(
            "node %s %s from %s (%d instances)", node.name,
            "resynced" if outcome.resync else "registered", session.address, len(node.instances),
        )
        rules = self.settings.liveness
        self._server_send(session, "welcome", {
            "node": node.name, "controller": self.id,
            "heartbeat": rules.interval, "timeout": rules.down_after,
        })
        assert self.store is not None and self.cluster is not None
        self.cluster.remember_node(node)
        self.hub.publish(f"node.{node.name}.up", {"node": node.name, "resync": outcome.resync})
        self._send_watch(node)
        self.cluster.node_changed(node)
        self.cluster.instances_reported(node, body["instances"])
        self._notify()

    def _refuse(self, session: Session, code: str, message: str) -> None:
        self._server_send(session, "refuse", {"code": code, "message": message})

    def _server_send(self, session: Session, kind: str, body: dict[str, Any]) -> bool:
        assert self._server is not None
        return self._server.send(session, kind, body)

    # ----------------------------------------------------------------- clients

    def on_client(self, session: Session, message: Message) -> None:
        body = message.body
        handler = self._client_ops.get(body["op"])
        if handler is None:
            self._reply_error(session, body["id"], InvalidRequest(f"unknown operation {body['op']!r}"))
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(session, body["id"], body["op"], handler, body["args"])
        )
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _answer(self, session: Session, request_id: int, op: str, handler: Any, args: dict) -> None:
        try:
            result = await handler(**args)
        except GafferError as exc:
            self._reply_error(session, request_id, exc)
            return
        except TypeError as exc:
            self._reply_error(session, request_id, InvalidRequest(f"bad arguments: {exc}"))
            return
        except Exception as exc:
            log.exception("request failed")
            self._reply_error(session, request_id, GafferError(f"internal error: {exc}"))
            return
        try:
            self._server_send(session, "reply", {"id": request_id, "ok": True, "result": result, "error": None})
        except ProtocolError as exc:
            if exc.reason != protocol.TOO_LARGE:
                raise
            self._reply_error(session, request_id, TooLarge(
                f"the answer to {op!r} does not fit in one message ({protocol.MAX_MESSAGE} bytes): "
                "ask for it in pages with limit and continue (gafferctl pages by itself)"
            ))

    def _reply_error(self, session: Session, request_id: int, exc: GafferError) -> None:
        """Send ``exc``; one too big for a message (a template file with thousands of problems)
        goes with its first problems and a count of the rest."""
        error = exc.to_dict()
        problems = error.get("problems")
        if problems is not None and len(problems) > MAX_PROBLEMS:
            error["problems"] = problems[:MAX_PROBLEMS]
            lines = error["message"].splitlines()[: MAX_PROBLEMS + 1]
            error["message"] = "\n".join(lines + [f"  ... and {len(problems) - MAX_PROBLEMS} more problems"])
        if len(error["message"]) > protocol.MAX_TEXT:
            error["message"] = error["message"][: protocol.MAX_TEXT - 100] + "\n  ... (cut)"
        self._server_send(session, "reply", {"id": request_id, "ok": False, "result": None, "error": error})

    def status(self) -> dict[str, Any]:
        assert self._server is not None and self.cluster is not None
        instances = sum(n.running for n in self.nodes.nodes.values())
        return {
            "controller": self.id,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "endpoint": self.endpoint,
            "events": self.pub_endpoint,
            "data_dir": str(self.settings.data_dir),
            "secure": self.keys is not None,
            "transport": "curve" if self.keys is not None else "insecure" if self.insecure else "local",
            "warning": self.security_warning(),
            "fingerprint": self.keys.fingerprint if self.keys else None,
            "nodes": self.nodes.counts(),
            "hosts": self.nodes.host_counts(),
            "templates": len(self.cluster.templates),
            "instances": {"wanted": sum(
                0 if t.paused else t.template.numprocesses for t in self.cluster.templates.values()
            ), "placed": len(self.cluster.placement), "running": instances},
            "moving_allowed": self.cluster.may_move,
            "link": self._server.stats,
            "auth": vars(self._zap.stats) if self._zap else None,
            "events_published": self.hub.published,
            "agent_events_dropped": self.agent_drops.snapshot(),
            "storage": {**self.store.health(), "backups": self.backups.status()}
            if self.store is not None and self.backups is not None else None,
        }

    def started_oneoff(self, node: str, ident: str) -> None:
        """Remember a one-off run the controller started, so its node may report on it."""
        self.oneoffs_started[(node, ident)] = None
        while len(self.oneoffs_started) > MAX_ONEOFF_EXITS:
            self.oneoffs_started.popitem(last=False)

    @contextlib.contextmanager
    def starting_oneoff(self, node: str, template: str) -> Iterator[None]:
        """While a run request is out, its node may report any one-off of ``template``: the
        spawn event can overtake the reply that names the run."""
        key = (node, template)
        self.oneoffs_pending[key] += 1
        try:
            yield
        finally:
            self.oneoffs_pending[key] -= 1
            if self.oneoffs_pending[key] <= 0:
                del self.oneoffs_pending[key]


class _OwnedBy:
    """The instance ids node ``name`` may speak for (see ``admission``), looked up lazily:
    most event batches name a handful of instances, a node may hold thousands."""

    def __init__(self, controller: Controller, name: str) -> None:
        self._controller = controller
        self._name = name

    def __contains__(self, ident: object) -> bool:
        if not isinstance(ident, str):
            return False
        controller = self._controller
        assert controller.cluster is not None
        template, _, ordinal = ident.rpartition(".")
        if ordinal.isascii() and ordinal.isdecimal() and len(ordinal) <= 19:
            number = int(ordinal)
            if controller.cluster.placement.get((template, number)) == self._name:
                return True
            sent = controller.cluster.sent.get(self._name)
            if sent is not None and sent.assigns(template, number):
                return True
        if (self._name, ident) in controller.oneoffs_started:
            return True
        return ordinal.startswith("run-") and (self._name, template) in controller.oneoffs_pending

    def holds_template(self, name: str) -> bool:
        controller = self._controller
        assert controller.cluster is not None
        if name in controller.cluster.by_node(self._name):
            return True
        sent = controller.cluster.sent.get(self._name)
        return sent is not None and (name in sent.ordinals or (sent.before is not None and name in sent.before.ordinals))
