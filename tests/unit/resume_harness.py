"""A simulated controller and subscriber link for the resuming client's tests (no sockets).

``SimController`` numbers events as the contract says (positions never go backwards; a clean
restart says nothing lies between its predecessor's last position and its own first one, a
crash leaves that range unknown), keeps the last ``buffer`` events, gathers the events matching
the subscriber's prefixes into a batch with its ``prev`` (the feed's chain, as
``controller.feeds`` keeps it), and answers ``replay`` and ``snapshot`` exactly as the
controller must. ``Driver`` stands between it and a ``Resume``: it sends or drops each batch
(one event, or several held back and sent together), cuts and restores the link, answers (or
fails) the one outstanding request, and records what the client delivered, so a test can
compare it with what was published.
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
    latest: int = 0
    """The newest position matching the subscriber's feed (0: none known)."""
    batch: list[list[Any]] = field(default_factory=list)
    batch_prev: int = 0
    omit_prev: bool = False
    snapshots: dict[str, int] = field(default_factory=dict)

    def publish(self, topic: str) -> dict[str, Any]:
        """Number one event (into the pending batch when it matches the feed); its body."""
        self.last += 1
        event = {"seq": self.last, "topic": topic, "ts": float(self.last), "data": {"n": self.last}}
        self.published.append(event)
        self.held.append(event)
        if len(self.held) > self.buffer:
            self.horizon = self.held.pop(0)["seq"]
        if topic.startswith(self.prefixes):
            if not self.batch:
                self.batch_prev = 0 if self.omit_prev else self.latest
            self.batch.append([event["seq"], topic, event["ts"], event["data"]])
            self.latest = self.last
        return event

    def take(self) -> tuple[int, list[list[Any]]] | None:
        """The pending batch (prev, events), or None."""
        if not self.batch:
            return None
        batch, self.batch = self.batch, []
        return self.batch_prev, batch

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
        self.latest = 0
        self.batch = []

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
        driver.controller.batch, driver.controller.latest = [], 0  # the feed starts with the subscriber
        driver.carry(resume.start())
        return driver

    def carry(self, step: Step) -> None:
        self.delivered.extend(step.deliver)
        if step.ask is not None:
            assert self.ask is None, "a second request while one is outstanding"
            self.ask = step.ask

    def publish(self, topic: str, drop: bool = False, hold: bool = False) -> None:
        """Publish; unless ``hold``, the pending batch goes out (or is lost with ``drop``)."""
        self.controller.publish(topic)
        if not hold:
            self.flush(drop)

    def flush(self, drop: bool = False) -> None:
        """The pending batch goes out: received, or lost (``drop``, or the link is cut)."""
        batch = self.controller.take()
        if batch is not None and self.connected and not drop:
            self.carry(self.resume.published(*batch))

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
        """Send what is pending, answer until the client asks nothing, then quiet ticks until
        one asks nothing."""
        self.flush()
        for _ in range(limit):
            if self.ask is not None:
                self.answer()
                continue
            self.quiet()
            if self.ask is None and self.resume.asking is None:
                return
            while self.ask is not None:
                self.answer()
        raise AssertionError("the client never settled")

    def events(self) -> list[ReceivedEvent]:
        return [item for item in self.delivered if isinstance(item, ReceivedEvent)]

    def losses(self) -> list[EventsLost]:
        return [item for item in self.delivered if isinstance(item, EventsLost)]
