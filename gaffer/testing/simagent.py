"""Simulated agents: the agent side of the controller protocol and nothing else.

A ``SimAgent`` speaks like ``gaffer/agent/link.py``: ``hello`` (node name, ``agent_id``, the
instances it claims to run), nothing more until ``welcome``, then a ``heartbeat`` every
interval (the first at a random phase of the interval, as real agents started at different
times would be) with the digest of what it runs. An ``assign`` is acked at once with its
generation (when it was first acked is kept), its instance table becomes exactly what was
assigned, all ``running`` with made-up pids, and a full ``report`` follows, as a Manager
converging instantly would produce. A ``command`` gets a ``result``; ``report`` is answered
with a full report. It spawns nothing and reads time only from its fleet's clock.

Messages are built with msgpack directly (the bytes ``protocol.encode`` would produce,
without re-validating what is known to be valid) and read without schema checks: benches run
a thousand of these in one process, so they must stay cheap.

Two transports, one protocol:

- ``ChannelAgent`` over an in-memory channel (``gaffer.testing.channel``): unit tests run a
  real controller against a few of them on a ``FakeClock``, without sockets or sleeps;
- ``bench/simagent.py`` subclasses ``SimAgent`` with a real DEALER per agent over TCP.

``SimFleet`` holds what the agents of one process share: the clock, counters, pids, the spec
hash cache.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import msgpack

from gaffer import __version__
from gaffer.common import protocol
from gaffer.common.clock import Cancellable, Clock
from gaffer.common.template import parse_template

PROTOCOL = protocol.PROTOCOL_VERSION
EMPTY_DIGEST = protocol.instances_digest([])
COUNTERS = (
    "welcomed", "heartbeats", "received", "beats", "assigns", "acks", "reports",
    "commands", "refused", "send_dropped", "bad", "other",
)


def pack(kind: str, seq: int, body: dict[str, Any]) -> bytes:
    """One message as ``protocol.encode`` would make it, unchecked."""
    return msgpack.packb([PROTOCOL, kind, seq, body], use_bin_type=True)


class SimFleet:
    """What the simulated agents of one process share."""

    def __init__(
        self,
        clock: Clock,
        *,
        prefix: str = "sim-",
        run: str = "0",
        incarnation: str = "sim",
        hello_instances: int = 0,
        first_pid: int = 1_000,
        bare: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        """``bare``: the peer is a bare ROUTER that echoes, not a controller (benches only);
        ``rng`` picks the heartbeat phases (seed it for a test that must repeat exactly)."""
        self.clock = clock
        self.prefix = prefix
        self.run = run
        self.incarnation = incarnation
        self.hello_instances = hello_instances
        self.bare = bare
        self.next_pid = first_pid
        self.rng = rng or random.Random()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.refusals: dict[str, int] = {}
        self._specs: dict[tuple[str, bytes], str] = {}

    def spec_hash(self, name: str, spec: dict[str, Any]) -> str:
        """What a Manager would report as ``spec`` for this template (cached per content)."""
        if self.bare:
            return "bare"
        key = (name, msgpack.packb({k: v for k, v in spec.items() if k != "numprocesses"}))
        found = self._specs.get(key)
        if found is None:
            found = self._specs[key] = parse_template(spec, name=name).spec_hash()
        return found

    def new_pid(self) -> int:
        self.next_pid += 1
        return self.next_pid


class SimAgent:
    """One simulated agent; a subclass carries its frames (``transmit``, and ``receive`` for
    each frame that arrives)."""

    __slots__ = (
        "fleet", "index", "name", "agent_id", "labels", "seq", "welcomed", "interval",
        "generation", "acked_at", "rows", "digest", "timer", "silent",
    )

    def __init__(self, fleet: SimFleet, index: int, *, name: str | None = None,
                 labels: dict[str, str] | None = None) -> None:
        self.fleet = fleet
        self.index = index
        self.name = name or f"{fleet.prefix}{index:05d}"
        self.agent_id = f"sim{fleet.run}{index:05d}"
        self.labels = labels if labels is not None else {"sim": "yes"}
        self.seq = 0
        self.welcomed = False
        self.interval = 1.0
        self.generation = 0
        self.acked_at = 0.0
        self.rows: dict[str, dict[str, Any]] = {}
        self.digest = EMPTY_DIGEST
        self.timer: Cancellable | None = None
        self.silent = False

    # ------------------------------------------------------------ the transport's part

    def transmit(self, frame: bytes) -> bool:
        """Send one frame; False if it could not be queued."""
        raise NotImplementedError

    def stop_heartbeats(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def start(self) -> None:
        """Say hello, with the leftovers this agent claims to run (``hello_instances``)."""
        fleet = self.fleet
        for n in range(fleet.hello_instances):
            ordinal = self.index * fleet.hello_instances + n + 1
            row = self._new_row("leftover", ordinal, "-")
            self.rows[row["id"]] = row
        self.digest = protocol.instances_digest(self.rows.values())
        self.send_hello()

    def silence(self) -> None:
        """The host dies: no more heartbeats or answers."""
        self.silent = True
        self.stop_heartbeats()

    # ------------------------------------------------------------ sending

    def send(self, kind: str, body: dict[str, Any]) -> None:
        if self.silent:
            return
        self.seq += 1
        if not self.transmit(pack(kind, self.seq, body)):
            self.fleet.counts["send_dropped"] += 1

    def send_hello(self) -> None:
        self.send("hello", {
            "node": self.name, "labels": self.labels, "cpus": 2, "memory": 1 << 30,
            "version": __version__, "protocol": PROTOCOL, "agent_id": self.agent_id,
            "incarnation": self.fleet.incarnation, "generation": self.generation,
            "instances": list(self.rows.values()),
        })

    def heartbeat(self) -> None:
        self.timer = None
        if self.silent:
            return
        self.fleet.counts["heartbeats"] += 1
        self.send("heartbeat", {
            "load": [0.0, 0.0, 0.0], "digest": self.digest, "instances": len(self.rows),
            "generation": self.generation,
        })
        self._schedule(self.interval)

    def _schedule(self, delay: float) -> None:
        if self.timer is None and not self.silent:
            self.timer = self.fleet.clock.call_later(delay, self.heartbeat)

    def report(self) -> None:
        self.fleet.counts["reports"] += 1
        self.send("report", {"instances": list(self.rows.values()), "removed": [], "full": True})

    # ------------------------------------------------------------ receiving

    def receive(self, frame: bytes | memoryview) -> None:
        """Handle one frame from the controller."""
        fleet = self.fleet
        fleet.counts["received"] += 1
        if self.silent:
            return
        try:
            _, kind, _, body = msgpack.unpackb(frame, raw=False)
        except Exception:
            fleet.counts["bad"] += 1
            return
        if kind == "assign":
            self.on_assign(body)
        elif fleet.bare:
            if not self.welcomed:
                self.on_welcome(self.interval)
        elif kind == "beat":
            fleet.counts["beats"] += 1
        elif kind == "welcome":
            self.on_welcome(body["heartbeat"])
        elif kind == "command":
            self.on_command(body)
        elif kind == "ping":
            self.send("pong", {"nonce": body["nonce"]})
        elif kind == "refuse":
            fleet.counts["refused"] += 1
            fleet.refusals[body["code"]] = fleet.refusals.get(body["code"], 0) + 1
            self.welcomed = False
            if body["code"] == "hello_required":
                self.send_hello()
        else:
            fleet.counts["other"] += 1

    def on_welcome(self, interval: float) -> None:
        if not self.welcomed:
            self.fleet.counts["welcomed"] += 1
        self.welcomed = True
        self.interval = interval
        self._schedule(self.fleet.rng.random() * interval)

    def on_assign(self, body: dict[str, Any]) -> None:
        fleet = self.fleet
        fleet.counts["assigns"] += 1
        generation = body["generation"]
        if generation < self.generation:
            return
        if generation > self.generation or not self.acked_at:
            self.acked_at = fleet.clock.time()
        self.generation = generation
        rows: dict[str, dict[str, Any]] = {}
        for name, ordinals in body["ordinals"].items():
            spec = fleet.spec_hash(name, body["templates"][name])
            for ordinal in ordinals:
                ident = f"{name}.{ordinal}"
                row = self.rows.get(ident)
                if row is not None and row["spec"] == spec:
                    rows[ident] = row
                else:
                    rows[ident] = self._new_row(name, ordinal, spec)
        self.rows = rows
        self.digest = protocol.instances_digest(rows.values())
        fleet.counts["acks"] += 1
        self.send("ack", {"generation": generation, "ok": True, "errors": []})
        if not fleet.bare:
            self.report()

    def on_command(self, body: dict[str, Any]) -> None:
        op = body["op"]
        self.fleet.counts["commands"] += 1
        result: Any = None
        if op == "report":
            self.report()
        elif op == "watch":
            result = sorted(p for p in body["args"].get("prefixes", []) if p.startswith("output."))
        elif op == "stats":
            result = {}
        else:
            error = {"code": "error", "message": f"a simulated agent does not do {op!r}"}
            self.send("result", {"id": body["id"], "ok": False, "result": None, "error": error})
            return
        self.send("result", {"id": body["id"], "ok": True, "result": result, "error": None})

    def _new_row(self, template: str, ordinal: int, spec: str) -> dict[str, Any]:
        return {
            "id": f"{template}.{ordinal}", "template": template, "ordinal": ordinal,
            "pid": self.fleet.new_pid(), "state": "running", "restarts": 0,
            "started_at": self.fleet.clock.wall(), "spec": spec, "ready": True,
        }


class ChannelAgent(SimAgent):
    """A simulated agent over one channel end (``MemoryRouter.connect()``, say): it reads
    what arrives when the channel says it is readable, on a later loop turn."""

    __slots__ = ("channel", "_connect")

    def __init__(self, fleet: SimFleet, index: int, connect: Callable[[], Any], **kwargs: Any) -> None:
        """``connect()`` gives a fresh channel end (called again by ``reconnect``)."""
        super().__init__(fleet, index, **kwargs)
        self._connect = connect
        self.channel = None

    def transmit(self, frame: bytes) -> bool:
        return self.channel is not None and self.channel.send([frame])

    def start(self) -> None:
        self._open()
        super().start()

    def _open(self) -> None:
        self.channel = self._connect()
        self.channel.on_readable = self.drain

    def drain(self) -> None:
        channel = self.channel
        if channel is None:
            return
        for frames in channel.drain():
            self.receive(frames[0].bytes)

    def silence(self) -> None:
        """The host dies: heartbeats stop and the connection goes away."""
        super().silence()
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def reconnect(self) -> None:
        """The host is back (same agent): a new connection and a new hello with what it runs."""
        self.silent = False
        self.welcomed = False
        self.seq = 0
        self._open()
        self.send_hello()
