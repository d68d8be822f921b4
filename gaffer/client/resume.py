"""The client's event stream without gaps: a pure state machine (no sockets, no clock).

PUB/SUB drops what a slow or disconnected subscriber cannot take, and it cannot tell a dropped
event from one the subscription filtered out. The controller numbers every event with a
*position* and answers ``replay`` (the matching events after a position, or ``too_old``) and
``snapshot`` (the current state at a position); ``Resume`` turns those into one ordered stream
where each matching event comes exactly once, or an explicit ``EventsLost`` followed by a
``Snapshot`` (the ZeroMQ guide's Clone pattern).

Vocabulary:
  position  the client's promise: every matching event up to it has been delivered (None
            while it is not known: ``since=None`` starts at the first live event)
  cover     the subscribed prefixes without those another one covers ("proc." covers
            "proc.web."): the prefixes the gap rule and replays use
  batch     live events come in batches (the controller's feeds): every event matching the
            subscription (all its prefixes) between the batch's first and last, ascending
  prev      on a batch, the position of the newest event matching the subscription before its
            first (0: unknown)

The gap rule: a live batch is delivered at once when nothing matching can lie between
``position`` and its first event: that event is ``position + 1``, or ``0 < prev <= position``;
events at or before ``position`` are dropped (a batch that reaches past ``position`` follows on
from it). Otherwise the client replays from ``position`` (the answer brings the batch too).

::

    published / replayed / snapshot_page / reconnected / quiet / failed
        │
        ▼
    Resume ──► Step(deliver=(ReceivedEvent | EventsLost | Snapshot, ...),
                    ask=Replay(since, prefixes) | SnapshotPage(token) | None)

The shell (``Client.events``, ``AsyncClient.events``) yields ``deliver`` in order, sends ``ask``
and feeds the answer back. One request is outstanding at a time; live events that arrive
meanwhile wait in a bounded list (past ``MAX_PENDING`` they are dropped and one more replay
follows). After the SUB socket reconnects the client replays at once, then on each quiet tick
(a second without a live event) until a live event proves the stream flows, at most
``SUSPECT_TICKS`` times. A quiet tick after any activity replays once more (a drop at the very
end of a burst has no later event to reveal it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence, Union

from gaffer.client.answers import MAX_PREV, check_replay, check_snapshot
from gaffer.client.wire import ReceivedEvent
from gaffer.common.errors import ConfigError, ProtocolError
from gaffer.common.protocol import BAD_BODY

REPLAY_LIMIT = 1_000
SNAPSHOT_LIMIT = 2_000
MAX_PENDING = 10_000
SUSPECT_TICKS = 10
MAX_PREFIX = 256
QUIET = 1.0
"""Seconds without a live event that make a quiet tick (the shells' poll timeout)."""


@dataclass(frozen=True)
class EventsLost:
    """Positions ``first..last`` (inclusive) the controller no longer holds: matching events
    among them could not be delivered. A ``Snapshot`` always follows."""

    first: int
    last: int


@dataclass(frozen=True)
class Snapshot:
    """The cluster's state at ``position`` (rows as ``nodes``, ``templates`` and ``ps`` list
    them); the stream goes on with the events after it."""

    position: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """Ask ``replay``: the matching events after ``since``."""

    since: int
    prefixes: tuple[str, ...]
    limit: int = REPLAY_LIMIT

    def args(self) -> dict[str, Any]:
        return {"since": self.since, "prefixes": list(self.prefixes), "limit": self.limit}


@dataclass(frozen=True)
class SnapshotPage:
    """Ask ``snapshot``: its first page (``token`` None) or the next one."""

    token: str | None = None
    limit: int = SNAPSHOT_LIMIT

    def args(self) -> dict[str, Any]:
        extra = {} if self.token is None else {"continue": self.token}
        return {"limit": self.limit, **extra}


Item = Union[ReceivedEvent, EventsLost, Snapshot]
Ask = Union[Replay, SnapshotPage]


class Step(NamedTuple):
    """What to deliver now, and what to ask the controller next (None: nothing). A named
    tuple: one is made per event, and a frozen dataclass took twice as long to build."""

    deliver: tuple[Item, ...] = ()
    ask: Ask | None = None


NOTHING = Step()


def check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """1..64 distinct topic prefixes of at most 256 characters, in order (ConfigError)."""
    if isinstance(prefixes, str):
        raise ConfigError("prefixes: must be a list of topic prefixes, not one string")
    unique = tuple(dict.fromkeys(prefixes))
    if not 1 <= len(unique) <= MAX_PREV:
        raise ConfigError(f"prefixes: must be 1..{MAX_PREV} topic prefixes, got {len(unique)}")
    for prefix in unique:
        if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX:
            raise ConfigError(f"prefixes: each must be text of at most {MAX_PREFIX} characters, got {prefix!r:.60}")
    return unique


def cover(prefixes: Iterable[str]) -> tuple[str, ...]:
    """``prefixes`` without those that another one covers, in order."""
    unique = tuple(dict.fromkeys(prefixes))
    return tuple(p for p in unique if not any(q != p and p.startswith(q) for q in unique))


class Resume:
    """One subscription's resume state; every method returns the Step to carry out."""

    def __init__(self, prefixes: Iterable[str] = ("",), since: int | None = None, limit: int = REPLAY_LIMIT) -> None:
        self.prefixes = check_prefixes(prefixes)
        self.cover = cover(self.prefixes)
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ConfigError(f"since: must be a position (an integer >= 0), got {since!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ConfigError(f"limit: must be an integer in 1..10000, got {limit!r}")
        self.position = since
        self.limit = limit
        self._asking: Ask | None = None
        self._failed = False
        self._pending: deque[tuple[tuple[ReceivedEvent, ...], int]] = deque()
        self._waiting = 0
        """Events in ``_pending``."""
        self._overflow = False
        self._again = False
        self._suspect = 0
        self._dirty = False
        self._rows: Snapshot | None = None

    @property
    def asking(self) -> Ask | None:
        """The request the shell must answer (or retry, after ``failed``)."""
        return self._asking

    def start(self) -> Step:
        """The first step: a replay from ``since`` when one was given."""
        if self.position is None:
            return Step()
        return Step(ask=self._ask(self._replay()))

    # ------------------------------------------------------------------ inputs

    def published(self, prev: int, events: Sequence[Sequence[Any]]) -> Step:
        """A live batch (``prev``, and its events, ``[seq, topic, ts, data]`` each, ascending,
        as ``protocol`` checked them)."""
        cover, new = self.cover, tuple.__new__
        items = tuple([new(ReceivedEvent, e) for e in events if e[1].startswith(cover)])
        if not items:
            return NOTHING
        if self._asking is not None:
            if self._waiting + len(items) <= MAX_PENDING:
                self._pending.append((items, prev))
                self._waiting += len(items)
            else:
                self._overflow = True
            return NOTHING
        return self._offer(items, prev)

    def replayed(self, answer: Any) -> Step:
        """The answer to the outstanding ``Replay`` (ProtocolError if malformed)."""
        asked = self._asking
        if not isinstance(asked, Replay):
            raise ProtocolError(BAD_BODY, "a replay answer nobody asked for", "replay")
        check_replay(answer, asked.since)
        self._asking, self._failed = None, False
        if answer["too_old"]:
            self._pending.clear()
            self._waiting = 0
            self._overflow = self._again = False
            lost = EventsLost(asked.since + 1, answer["horizon"])
            return Step((lost,), self._ask(SnapshotPage()))
        out: list[Item] = []
        for body in answer["events"]:
            if body["seq"] > asked.since and self._matches(body["topic"]):
                out.append(ReceivedEvent(body["seq"], body["topic"], body["ts"], body["data"]))
        # A since beyond the controller's last position (asked from the future): go on from
        # its head rather than wait for positions it may never reach.
        self.position = answer["upto"] if answer["last"] < asked.since else max(asked.since, answer["upto"])
        if answer["upto"] < answer["last"] or self._again or self._overflow:
            if self._overflow:
                self._pending.clear()
                self._waiting = 0
            self._again = self._overflow = False
            return Step(tuple(out), self._ask(self._replay()))
        return self._drain(out)

    def snapshot_page(self, page: Any) -> Step:
        """A page of the outstanding ``SnapshotPage`` (ProtocolError if malformed)."""
        asked = self._asking
        if not isinstance(asked, SnapshotPage):
            raise ProtocolError(BAD_BODY, "a snapshot page nobody asked for", "snapshot")
        check_snapshot(page)
        self._asking, self._failed = None, False
        if asked.token is None or self._rows is None or self._rows.position != page["position"]:
            self._rows = Snapshot(page["position"])
        rows = {"node": self._rows.nodes, "template": self._rows.templates, "instance": self._rows.instances}
        for item in page["items"]:
            rows[item["kind"]].append(item["data"])
        if page["continue"] is not None:
            return Step(ask=self._ask(SnapshotPage(page["continue"])))
        snapshot, self._rows = self._rows, None
        self.position = snapshot.position
        return Step((snapshot,), self._ask(self._replay()))

    def reconnected(self) -> Step:
        """The SUB socket connected again after a disconnect: what it missed is replayed."""
        if self.position is None:
            return Step()
        self._suspect = SUSPECT_TICKS
        if self._asking is not None:
            self._again = True
            return self._retry()
        return Step(ask=self._ask(self._replay()))

    def quiet(self) -> Step:
        """A quiet tick: ``QUIET`` seconds passed without a live event."""
        if self._asking is not None:
            return self._retry()
        if self.position is None:
            return Step()
        if self._suspect > 0 or self._dirty:
            self._suspect = max(0, self._suspect - 1)
            self._dirty = False
            return Step(ask=self._ask(self._replay()))
        return Step()

    def failed(self) -> None:
        """The outstanding request got no answer (controller away): the next quiet tick or
        reconnect asks again (a snapshot from its first page)."""
        self._failed = True

    # ------------------------------------------------------------------ inside

    def _replay(self) -> Replay:
        assert self.position is not None
        return Replay(self.position, self.cover, self.limit)

    def _ask(self, ask: Ask) -> Ask:
        self._asking = ask
        self._failed = False
        return ask

    def _retry(self) -> Step:
        if not self._failed or self._asking is None:
            return Step()
        ask = self._asking
        if isinstance(ask, SnapshotPage):
            self._rows = None
            ask = SnapshotPage()
        elif isinstance(ask, Replay):
            ask = Replay(ask.since, ask.prefixes, ask.limit)
        return Step(ask=self._ask(ask))

    def _matches(self, topic: str) -> bool:
        return topic.startswith(self.cover)

    def _offer(self, items: tuple[ReceivedEvent, ...], prev: int) -> Step:
        self._dirty = True
        position = self.position
        if position is None:
            self.position = items[-1].seq
            return Step(items)
        if items[-1].seq <= position:
            return NOTHING
        if items[0].seq <= position:
            # the batch's chain runs through the position: what follows it is next
            items = tuple([e for e in items if e.seq > position])
        elif items[0].seq != position + 1 and not 0 < prev <= position:
            return Step(ask=self._ask(self._replay()))
        self.position = items[-1].seq
        self._suspect = 0
        return Step(items)

    def _drain(self, out: list[Item]) -> Step:
        """Live batches that waited for an answer, now offered in order."""
        while self._pending and self._asking is None:
            items, prev = self._pending.popleft()
            self._waiting -= len(items)
            step = self._offer(items, prev)
            out.extend(step.deliver)
            if step.ask is not None:
                return Step(tuple(out), step.ask)
        return Step(tuple(out))
