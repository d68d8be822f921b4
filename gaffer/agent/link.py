"""The agent's side of the controller link: hello, heartbeats, reports, events, reconnects.

One DEALER socket to the controller. The agent says ``hello`` with everything it runs, waits
for ``welcome``, then heartbeats every interval and forwards its Manager's events and instance
changes in batches. The controller's ``beat`` proves it is alive: after ``timeout`` seconds of
silence the agent closes the socket, makes a new one and says hello again (libzmq reconnects a
TCP link by itself, but only a new hello re-registers), backing off while the controller stays
unreachable. None of this touches the processes: they keep running while the controller is away.

The link renews the agent's ``Lease`` with every fresh message and holds it when the session is
lost (silence, or this agent was stalled), so the Manager spawns nothing until the controller
has spoken again. Each command runs in a task the link owns and cancels when it stops.

State events are numbered and kept in the ``Outbox`` until the controller acknowledges them
(``events_ack``); every ``welcome`` says what the controller has (``events_upto``) and the
rest is sent again, so a lost session never loses one. Output is live only (seq 0).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import zmq
import zmq.asyncio

from gaffer import __version__
from gaffer.agent.batches import batches, in_order
from gaffer.agent.follow import Followers, Lost
from gaffer.agent.lease import Lease
from gaffer.agent.manager import Manager
from gaffer.agent.outbox import CAPACITY, Outbox
from gaffer.common import protocol
from gaffer.common.badmsg import BadMessages
from gaffer.common.bus import Event, Subscription
from gaffer.common.endpoints import parse_endpoint
from gaffer.common.errors import GafferError, ProtocolError, SubscriberTooSlow, SubscriptionClosed
from gaffer.common.keys import KeyPair
from gaffer.common.transport import Channel, connect, make_curve_client, new_socket
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.agent.link")

WIRE_FIELDS = ("id", "template", "ordinal", "pid", "state", "restarts", "started_at", "spec", "ready")
FLUSH_EVERY = 0.05
MAX_BACKOFF = 10.0
MAX_PENDING = 100_000
"""Output events kept for the controller while they cannot be sent (beyond, the oldest go,
counted). State events wait in the ``Outbox`` until the controller acknowledges them."""


@dataclass(frozen=True)
class LinkSettings:
    controller: str
    node: str
    labels: dict[str, str]
    state_dir: Path
    keys: KeyPair | None = None
    controller_key: bytes | None = None
    heartbeat: float = 1.0
    timeout: float = 5.0
    stats_interval: float = 5.0
    """Seconds between stats pushes (``statpush.py``)."""


def wire_instance(info: dict[str, Any]) -> dict[str, Any]:
    """The protocol's Instance from a Manager ``info()`` row (``exit_code`` on an exited one
    that has a status: what ``depends_on``'s ``completed`` reads)."""
    row = {key: info[key] for key in WIRE_FIELDS}
    last = info["last_exit"]
    if info["state"] == "exited" and last is not None and last["status"] is not None:
        row["exit_code"] = last["status"]
    return row


def read_agent_id(state_dir: Path) -> str:
    """This agent's lasting identity: random once, then read from the state dir."""
    path = state_dir / "agent_id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
    return value


CommandHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ControllerLink:
    """Keeps one session with the controller open for as long as the agent runs."""

    def __init__(
        self,
        manager: Manager,
        settings: LinkSettings,
        agent_id: str,
        lease: Lease,
        *,
        host: Callable[[], dict[str, str]] | None = None,
        on_assign: Callable[[dict[str, Any]], None] | None = None,
        commands: Mapping[str, CommandHandler] | None = None,
        outbox_capacity: int = CAPACITY,
    ) -> None:
        """``lease``: renewed by every fresh message, held when the session is lost;
        ``host`` says how this host keeps its processes (hello, and heartbeats when it
        changes: see ``protocol._HOST``); ``on_assign`` takes each ``assign`` message;
        ``commands`` maps the controller's command ops to their handlers;
        ``outbox_capacity``: state events kept unacknowledged (tests make it small)."""
        self.manager = manager
        self._lease = lease
        self._on_assign = on_assign
        self._commands: dict[str, CommandHandler] = dict(commands or {})
        self._running: set[asyncio.Task] = set()
        self._host = host
        self._host_sent: dict[str, str] | None = None
        self.settings = settings
        self.agent_id = agent_id
        self.incarnation = secrets.token_hex(6)
        self.generation = 0
        self.connected = asyncio.Event()
        self.controller_id: str | None = None
        self.refusal: tuple[str, str] | None = None
        self.reconnects = 0
        self.welcomes = 0
        """Sessions opened (each ``welcome``): the stats push starts over in each."""
        self.bad = BadMessages()
        self._ctx = zmq.asyncio.Context()
        self._channel: Channel | None = None
        self._seq = 0
        self._last_in_seq = 0
        self._interval = settings.heartbeat
        self._timeout = settings.timeout
        self.outbox = Outbox(outbox_capacity)
        self._output: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        """Output events to send, each after the state event it followed (its seq)."""
        self._dirty: set[str] = set()
        self._task: asyncio.Task | None = None
        self._pump: asyncio.Task | None = None
        self._hello_at = float("-inf")
        self._watch: tuple[str, ...] = ()
        self._sub: Subscription | None = None
        self.followers = Followers()
        self.lost_output = Lost()
        self._output_next: int | None = None
        self.events_dropped = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushed_at = float("-inf")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pump = loop.create_task(self._pump_events())
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        """End the session, the event pump and every command still running."""
        for task in (self._task, self._pump, *self._running):
            await cancel_and_wait(task)
        if self._sub is not None:
            self._sub.close()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._channel is not None:
            self._channel.close()
        self._ctx.destroy(linger=0)

    # ----------------------------------------------------------------- session loop

    async def _run(self) -> None:
        failures = 0
        while True:
            self._open()
            try:
                welcomed = await self._session()
            finally:
                self.connected.clear()
                if self._channel is not None:
                    self._channel.close()
                    self._channel = None
            self._lease.hold()
            failures = 0 if welcomed else failures + 1
            self.reconnects += 1
            delay = min(MAX_BACKOFF, 0.2 * 2 ** min(failures, 8)) if failures else 0.0
            delay *= 0.5 + random.random() / 2
            log.warning(
                "controller %s silent for %.1fs; new connection%s",
                self.settings.controller, self._timeout,
                f" in {delay:.1f}s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)

    def _open(self) -> None:
        sock = new_socket(self._ctx, zmq.DEALER)
        if self.settings.keys is not None and self.settings.controller_key is not None:
            make_curve_client(sock, self.settings.keys, self.settings.controller_key)
        connect(sock, parse_endpoint(self.settings.controller, "controller"))
        self._channel = Channel(sock)
        self._seq = 0
        self._last_in_seq = 0

    async def _session(self) -> bool:
        """One socket's life: returns whether it was ever welcomed."""
        loop = asyncio.get_running_loop()
        welcomed = False
        self._send_hello()
        last_heard = woke = loop.time()
        next_beat = loop.time() + self._interval
        while True:
            now = loop.time()
            wait = max(0.0, min(next_beat, last_heard + self._timeout) - now)
            assert self._channel is not None
            batch = await self._channel.recv_batch(timeout=wait)
            now = loop.time()
            if now - woke > self._timeout:
                log.warning(
                    "this agent was stalled for %.1fs (frozen?): holding until the controller "
                    "has spoken again", now - woke,
                )
                self._lease.hold()
                return welcomed
            woke = now
            for frames in batch:
                kind = self._receive(frames)
                if kind is None:
                    continue
                last_heard = now
                self._lease.renew(now + self._timeout)
                if kind == "welcome":
                    welcomed = True
                    next_beat = now + self._interval
            if now - last_heard >= self._timeout:
                return welcomed
            if now >= next_beat:
                next_beat = now + self._interval
                if self.connected.is_set():
                    self._send_heartbeat()

    def _receive(self, frames: list[zmq.Frame]) -> str | None:
        label = self.settings.controller
        if len(frames) != 1:
            self.bad.record(label, protocol.BAD_ENVELOPE, f"expected 1 frame, got {len(frames)}")
            return None
        try:
            message = protocol.decode(frames[0].buffer, protocol.CONTROLLER_TO_AGENT)
        except ProtocolError as exc:
            self.bad.record(label, exc.reason, exc.message)
            return None
        if message.kind != "welcome" and message.seq <= self._last_in_seq:
            self.bad.record(label, "replay", f"seq {message.seq} after {self._last_in_seq}")
            return None
        self._last_in_seq = message.seq
        try:
            self._handle(message.kind, message.body)
        except Exception:
            log.exception("handling %s from the controller failed", message.kind)
        return message.kind

    def _handle(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "welcome":
            self._interval = body["heartbeat"]
            self._timeout = body["timeout"]
            self.controller_id = body["controller"]
            self.refusal = None
            self.welcomes += 1
            self.connected.set()
            log.info("welcomed by controller %s as node %s", body["controller"], body["node"])
            self.outbox.resend_from(body["events_upto"])
            self._flush()
        elif kind == "events_ack":
            self.outbox.ack(body["upto"])
        elif kind == "refuse":
            self._on_refuse(body["code"], body["message"])
        elif kind == "ping":
            self._send("pong", {"nonce": body["nonce"]})
        elif kind == "assign":
            if self._on_assign is not None:
                self._on_assign(body)
        elif kind == "command":
            task = asyncio.get_running_loop().create_task(self._command(body))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _on_refuse(self, code: str, message: str) -> None:
        self.connected.clear()
        if code == "hello_required":
            now = asyncio.get_running_loop().time()
            if now - self._hello_at >= self._interval:
                log.info("controller asks for a new hello: %s", message)
                self._send_hello()
            return
        if self.refusal != (code, message):
            log.error("controller refused this agent (%s): %s", code, message)
        self.refusal = (code, message)

    async def _command(self, body: dict[str, Any]) -> None:
        op, args = body["op"], body["args"]
        try:
            if op == "report":
                self._send_report(full=True)
                result: Any = None
            elif op == "watch":
                result = self._set_watch(args)
            else:
                handler = self._commands.get(op)
                if handler is None:
                    raise GafferError(f"unknown command {op!r}")
                result = await handler(op, args)
        except GafferError as exc:
            self._send("result", {"id": body["id"], "ok": False, "result": None, "error": exc.to_dict()})
            return
        except Exception as exc:
            log.exception("command %s failed", op)
            error = {"code": "error", "message": f"{op} failed: {exc}"}
            self._send("result", {"id": body["id"], "ok": False, "result": None, "error": error})
            return
        self._send("result", {"id": body["id"], "ok": True, "result": result, "error": None})

    # ----------------------------------------------------------------- sending

    def _send(self, kind: str, body: dict[str, Any]) -> bool:
        if self._channel is None:
            return False
        frame = protocol.encode(kind, self._seq + 1, body)
        self._seq += 1
        return self._channel.send([frame])

    def send_stats(self, body: dict[str, Any]) -> bool:
        """One ``stats`` message (``statpush.py``); whether it went to the socket."""
        return self._send("stats", body)

    def instances(self) -> list[dict[str, Any]]:
        return [wire_instance(i) for i in self.manager.instances()]

    def _send_hello(self) -> None:
        self._hello_at = asyncio.get_running_loop().time()
        labels = dict(self.settings.labels)
        self._send("hello", {
            "node": self.settings.node,
            "labels": labels,
            "cpus": os.cpu_count() or 1,
            "memory": _memory(),
            "version": __version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "agent_id": self.agent_id,
            "incarnation": self.incarnation,
            "generation": self.generation,
            "instances": self.instances(),
            **self._host_field(force=True),
        })
        self._dirty.clear()

    def _send_heartbeat(self) -> None:
        self._note_queued()
        if self._dirty or self._output or self.outbox.unsent():
            # The digest covers the whole table: changed rows not yet reported would make it
            # look stale to the controller, which then asks for a full report (every row, in
            # the middle of a burst of spawns). Send what is pending first.
            self._flush_now()
        instances = self.instances()
        self._send("heartbeat", {
            "load": list(os.getloadavg()),
            "digest": protocol.instances_digest(instances),
            "instances": len(instances),
            "generation": self.generation,
            **self._host_field(force=False),
            **({"dropped": {"events": self.events_dropped}} if self.events_dropped else {}),
        })

    def _host_field(self, force: bool) -> dict[str, Any]:
        if self._host is None:
            return {}
        host = self._host()
        if not force and host == self._host_sent:
            return {}
        self._host_sent = host
        return {"host": host}

    def _send_report(self, full: bool) -> None:
        if full:
            self._dirty.clear()
            self._send("report", {"instances": self.instances(), "removed": [], "full": True})
            return
        rows, removed = [], []
        for instance_id in sorted(self._dirty):
            try:
                rows.append(wire_instance(self.manager.instance(instance_id)))
            except GafferError:
                removed.append(instance_id)
        self._dirty.clear()
        if rows or removed:
            self._send("report", {"instances": rows, "removed": removed, "full": False})

    def ack(self, generation: int, errors: list[dict[str, str]]) -> None:
        self.generation = generation
        self._send("ack", {"generation": generation, "ok": not errors, "errors": errors})

    # ----------------------------------------------------------------- events

    def _set_watch(self, args: dict[str, Any]) -> list[str]:
        """Output topics someone subscribes to at the controller: forward only those."""
        prefixes = args.get("prefixes")
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise GafferError("watch needs a list of prefixes")
        wanted = tuple(sorted(p for p in prefixes if p.startswith("output.")))
        if wanted != self._watch:
            self._watch = wanted
            old = self._sub
            if old is not None:
                # The new subscription exists before this returns: an event published right
                # after (the spawn of a ``run`` that came with this watch, its first line) is
                # never lost between two subscriptions. The pump drains the old one first.
                self._sub = self.manager.bus.subscribe(("proc.", *wanted))
                old.close()
        return list(wanted)

    async def _pump_events(self) -> None:
        """Forward the Manager's events and instance changes in batches.

        Events are taken off the bus as soon as they come (output that will be skipped is only
        counted, so a flood never piles up in the subscription's queue); what is to be sent
        goes at most once per FLUSH_EVERY. A change of the watched output prefixes replaces the
        subscription (``_set_watch``); the loop drains the old one, then reads the new one.
        """
        bus = self.manager.bus
        while True:
            sub = self._sub
            if sub is None or sub.closed:
                sub = self._sub = bus.subscribe(("proc.", *self._watch))
            try:
                while True:
                    event = await sub.get()
                    self._note(event)
                    while (more := sub.get_nowait()) is not None:
                        self._note(more)
                    self._schedule_flush()
            except SubscriptionClosed:
                continue
            except SubscriberTooSlow:
                log.warning("event forwarding fell behind; sending a full report")
                self._send_report(full=True)
            finally:
                sub.close()

    def _note_queued(self) -> None:
        """Note the events the pump has not taken off the bus yet (a closed or cut-off
        subscription is left to the pump)."""
        if self._sub is None:
            return
        try:
            while (event := self._sub.get_nowait()) is not None:
                self._note(event)
        except (SubscriptionClosed, SubscriberTooSlow):
            return

    def _note(self, event: Event) -> None:
        topic = event.topic
        if topic.startswith("output."):
            if "text" in event.data:
                now = asyncio.get_running_loop().time()
                for out_topic, data in self.followers.offer(topic, event.data, now, self.connected.is_set()):
                    self._queue_output(out_topic, event.ts, data)
            return
        if topic.startswith("proc.") and "id" in event.data:
            self._dirty.add(event.data["id"])
        self._queue(topic, event.ts, event.data)

    def _queue(self, topic: str, ts: float, data: dict[str, Any]) -> None:
        """A state event is numbered and kept until acknowledged; output is live only (seq 0),
        and what the queue cannot hold becomes a skip marker (``lost_output``)."""
        clean = {k: v for k, v in data.items() if k != "node"}
        if not topic.startswith("output."):
            self.outbox.add(topic, ts, clean)
            return
        if len(self._output) >= MAX_PENDING:
            _, dropped = self._output.popleft()
            self.events_dropped += 1
            self.lost_output.add(dropped["topic"], dropped["data"])
        self._output.append((self.outbox.last, {"seq": 0, "topic": topic, "ts": ts, "data": clean}))

    def _queue_output(self, topic: str, ts: float, data: dict[str, Any]) -> None:
        """Lines for the stream of the previous queued event are appended to it when their
        numbers follow on: one event per stream and flush, whatever the number of reads."""
        after, last = self._output[-1] if self._output else (-1, None)
        line = data.get("line", 0)
        if (
            last is not None and after == self.outbox.last and last["topic"] == topic
            and "text" in last["data"] and "text" in data and line == self._output_next
        ):
            last["data"]["text"] += "\n" + data["text"]
        else:
            self._queue(topic, ts, data)
        self._output_next = line + data["text"].count("\n") + 1 if line and "text" in data else None

    def _schedule_flush(self) -> None:
        if self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._flushed_at + FLUSH_EVERY - loop.time()
        if delay > 0:
            self._flush_timer = loop.call_later(delay, self._flush_due)
        else:
            self._flush_due()

    def _flush_now(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._flush()

    def _flush_due(self) -> None:
        self._flush_timer = None
        if self.connected.is_set():
            self._flush()

    def _flush(self) -> None:
        """Send what is pending; a skip marker still owed (its stream may have gone quiet)
        gets another flush, so it is never left unsent."""
        self._flushed_at = asyncio.get_running_loop().time()
        self._send_report(full=False)
        for topic, data in self.followers.markers(self._flushed_at):
            self._queue(topic, data["ts"], data)
        if self.lost_output:
            # markers for output lost earlier go before the output still queued (newer)
            after = self._output[0][0] if self._output else self.outbox.last
            self._output.extendleft(reversed([
                (after, {"seq": 0, "topic": t, "ts": d.get("ts", 0.0), "data": d})
                for t, d in self.lost_output.take()
            ]))
        taken = self.outbox.take()
        if taken.events or self._output:
            events = in_order(taken.events, self._output)
            self._output = collections.deque()
            lost = taken.lost
            for batch in batches(events):
                numbered = [event["seq"] for event in batch if event["seq"]]
                if not self._send_events(batch, lost if numbered else 0) and numbered:
                    self.outbox.rewind(numbered[0])
                if numbered:
                    lost = 0
        if self.followers.owes_markers() or self.lost_output:
            self._schedule_flush()

    def _send_events(self, batch: list[dict[str, Any]], lost: int = 0) -> bool:
        """Send one batch (halved while too large); whether every part went to the socket."""
        try:
            if self._send("events", {"events": batch, **({"lost": lost} if lost else {})}):
                return True
            self._lose_output(batch)
            return False
        except ProtocolError as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                sent = self._send_events(batch[:half], lost)
                return self._send_events(batch[half:]) and sent
            self.events_dropped += 1
            self._lose_output(batch)
            log.warning("event %s not sent: %s", batch[0]["topic"], exc.message)
            return True

    def _lose_output(self, batch: list[dict[str, Any]]) -> None:
        """Output events that did not go: a marker for their lines goes at the next flush."""
        for event in batch:
            if not event["seq"] and event["topic"].startswith("output."):
                self.lost_output.add(event["topic"], event["data"])


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
