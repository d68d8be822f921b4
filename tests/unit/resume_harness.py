"""A simulated controller and subscriber link for the resuming client's tests (no sockets).

``SimController`` numbers events as the contract says (positions never go backwards; a clean
restart says nothing lies between its predecessor's last position and its own first one, a
crash leaves that range unknown), keeps the last ``buffer`` events, computes ``prev`` for the
subscriber's prefixes, and answers ``replay`` and ``snapshot`` exactly as the controller must.
``Driver`` stands between it and a ``Resume``: it delivers or drops each published event,
cuts and restores the link, answers (or fails) the one outstanding request, and records what
the client delivered, so a test can compare it with what was published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gaffer.client import EventsLost, ReceivedEvent, Snapshot
from gaffer.client.resume import Replay, Resume, SnapshotPage, Step


@dataclass
class SimController:
    prefixes: tuple[str, ...]
    buffer: int = 1_000
    last: int = 0
    horizon: int = 0
    held: list[dict[str, Any]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    prev_known: dict[str, int] = field(default_factory=dict)
    omit_prev: bool = False
    snapshots: dict[str, int] = field(default_factory=dict)

    def publish(self, topic: str) -> dict[str, Any]:
        """Number one event; its body as the subscriber would receive it (with ``prev``)."""
        self.last += 1
        event = {"seq": self.last, "topic": topic, "ts": float(self.last), "data": {"n": self.last}}
        self.published.append(event)
        self.held.append(event)
        if len(self.held) > self.buffer:
            self.horizon = self.held.pop(0)["seq"]
        prev = {}
        for prefix in self.prefixes:
            if topic.startswith(prefix):
                prev[prefix] = self.prev_known.get(prefix, 0)
                self.prev_known[prefix] = self.last
        return event if self.omit_prev else {**event, "prev": prev}

    def restart(self, jump: int, clean: bool, keep: bool) -> None:
        """A new incarnation numbering from ``last + jump + 1``; ``keep``: the buffer survives
        (a clean stop may hand it over), else it starts empty."""
        first = self.last + jump + 1
        if not keep:
            self.held = []
            self.horizon = self.last if clean else first - 1
        elif not clean:
            self.horizon = max(self.horizon, first - 1)
            self.held = []
        self.last = first - 1
        self.prev_known = {}

    def replay(self, since: int, prefixes: list[str], limit: int) -> dict[str, Any]:
        if since < self.horizon:
            return {"events": [], "upto": self.last, "last": self.last, "horizon": self.horizon, "too_old": True}
        events = [e for e in self.held if e["seq"] > since and e["topic"].startswith(tuple(prefixes))]
        cut = len(events) > limit
        events = events[:limit]
        upto = events[-1]["seq"] if cut else self.last
        return {"events": events, "upto": upto, "last": self.last, "horizon": self.horizon, "too_old": False}

    def snapshot(self, limit: int, token: str | None) -> dict[str, Any]:
        position = self.last if token is None else self.snapshots[token]
        start = 0 if token is None else int(token.split(":")[1])
        rows = [{"kind": kind, "data": {"row": i}} for i, kind in enumerate(("node", "template", "instance") * 2)]
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        next_token = f"{position}:{start + limit}" if more else None
        if next_token:
            self.snapshots[next_token] = position
        return {"position": position, "items": page, "continue": next_token}


@dataclass
class Driver:
    resume: Resume
    controller: SimController
    delivered: list[ReceivedEvent | EventsLost | Snapshot] = field(default_factory=list)
    ask: Replay | SnapshotPage | None = None
    connected: bool = True
    lost_at_ask: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def start(cls, prefixes: tuple[str, ...], since: int | None, before: tuple[str, ...] = (),
              **sim: Any) -> "Driver":
        """A client subscribing after the controller published ``before``."""
        resume = Resume(prefixes, since)
        driver = cls(resume, SimController(resume.prefixes, **sim))
        for topic in before:
            driver.controller.publish(topic)
        driver.carry(resume.start())
        return driver

    def carry(self, step: Step) -> None:
        self.delivered.extend(step.deliver)
        if step.ask is not None:
            assert self.ask is None, "a second request while one is outstanding"
            self.ask = step.ask

    def publish(self, topic: str, drop: bool = False) -> None:
        body = self.controller.publish(topic)
        if self.connected and not drop and topic.startswith(self.resume.prefixes):
            self.carry(self.resume.published(body))

    def answer(self) -> None:
        ask, self.ask = self.ask, None
        if isinstance(ask, Replay):
            assert 1 <= len(ask.prefixes) <= 64
            reply = self.controller.replay(ask.since, list(ask.prefixes), ask.limit)
            if reply["too_old"]:
                self.lost_at_ask.append((ask.since, self.controller.horizon))
            self.carry(self.resume.replayed(reply))
        elif isinstance(ask, SnapshotPage):
            self.carry(self.resume.snapshot_page(self.controller.snapshot(ask.limit, ask.token)))

    def fail(self) -> None:
        """The outstanding request gets no answer (the controller is away)."""
        if self.ask is not None:
            self.ask = None
            self.resume.failed()

    def cut(self) -> None:
        self.connected = False

    def reconnect(self) -> None:
        if not self.connected:
            self.connected = True
            self.carry(self.resume.reconnected())

    def quiet(self) -> None:
        self.carry(self.resume.quiet())

    def settle(self, limit: int = 1_000) -> None:
        """Answer until the client asks nothing, then quiet ticks until one brings nothing new
        (a subscription to several unrelated prefixes replays on every quiet tick)."""
        for _ in range(limit):
            if self.ask is not None:
                self.answer()
                continue
            before = len(self.delivered)
            self.quiet()
            if self.ask is None and self.resume.asking is None:
                return
            while self.ask is not None:
                self.answer()
            if len(self.delivered) == before and len(self.resume.cover) > 1:
                return
        raise AssertionError("the client never settled")

    def events(self) -> list[ReceivedEvent]:
        return [item for item in self.delivered if isinstance(item, ReceivedEvent)]

    def losses(self) -> list[EventsLost]:
        return [item for item in self.delivered if isinstance(item, EventsLost)]
