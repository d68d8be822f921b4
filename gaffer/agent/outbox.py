"""The agent's numbered state events, kept until the controller says it has them.

A message the agent hands to its socket can still be lost: the controller was holding the node
down and refused it, or the socket was closed with the message queued. So each state event
(``proc.``, and any other topic that is not ``output.``) gets the agent's own sequence number
and stays here until the controller acknowledges it; a new session resends what it has not.

Vocabulary:

- **seq**: the number of a state event, from 1, contiguous, per agent process. Output events
  are live only: they carry seq 0 and never come here.
- **acked**: the controller has every event up to this seq (``events_ack.upto``, or
  ``welcome.events_upto`` on a new session); they are forgotten.
- **cursor**: the highest seq taken for sending on this session.
- **lost**: events pushed out unacknowledged because the outbox was full (``capacity``).

The flow::

    add --> [unsent] --take--> [sent, unacked] --ack(upto)--> forgotten
               ^                      |
               +--- resend_from(upto) + (a new session: what it lacks goes again)
               +--- rewind(seq) ------+ (a send failed: that one and after go again)

A loss is reported once: its count rides with the next ``take`` that returns events, and is owed
again if the controller never acknowledges the first of them (the message carrying it was
lost too). Pure: no clock, no socket; the link calls it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

CAPACITY = 10_000
"""Unacknowledged state events kept; beyond, the oldest go, counted as lost."""


@dataclass(frozen=True, slots=True)
class Taken:
    """Events to send now (oldest first) and the loss count to send with them (0: none)."""

    events: list[dict[str, Any]]
    lost: int = 0


class Outbox:
    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._next = 1
        self._cursor = 0
        self.acked = 0
        self.lost = 0
        """Events lost in all (for the heartbeat's ``dropped`` and tests)."""
        self._owed = 0
        self._in_flight: list[tuple[int, int]] = []
        """Loss reports sent: (seq of the first event of the message carrying it, count)."""

    def __len__(self) -> int:
        return len(self._events)

    @property
    def last(self) -> int:
        """The seq of the newest event added (0: none yet)."""
        return self._next - 1

    def unsent(self) -> bool:
        """Whether ``take`` would return events."""
        return self._first_unsent() is not None

    def add(self, topic: str, ts: float, data: dict[str, Any]) -> int:
        """Number a state event and keep it; its seq."""
        seq = self._next
        self._next += 1
        if len(self._events) >= self.capacity:
            self._events.popleft()
            self.lost += 1
            self._owed += 1
        self._events.append({"seq": seq, "topic": topic, "ts": ts, "data": data})
        return seq

    def take(self) -> Taken:
        """The events not sent on this session yet; they count as sent from now."""
        first = self._first_unsent()
        if first is None:
            return Taken([])
        events = [self._events[i] for i in range(first, len(self._events))]
        self._cursor = events[-1]["seq"]
        lost = self._report(events[0]["seq"])
        return Taken(events, lost)

    def ack(self, upto: int) -> None:
        """The controller has every event up to ``upto``: forget them."""
        upto = min(upto, self.last)
        if upto <= self.acked:
            return
        self.acked = upto
        self._cursor = max(self._cursor, upto)
        while self._events and self._events[0]["seq"] <= upto:
            self._events.popleft()
        self._in_flight = [report for report in self._in_flight if report[0] > upto]

    def resend_from(self, upto: int) -> None:
        """A new session, whose controller has events up to ``upto``: the next ``take`` returns
        everything it lacks, and a loss report it never acknowledged."""
        self.ack(upto)
        self.rewind(self.acked + 1)

    def rewind(self, seq: int) -> None:
        """Sending events from ``seq`` on failed: the next ``take`` returns them again."""
        self._cursor = min(self._cursor, max(seq - 1, self.acked))
        self._owed += sum(count for first, count in self._in_flight if first >= seq)
        self._in_flight = [report for report in self._in_flight if report[0] < seq]

    def _first_unsent(self) -> int | None:
        """The index of the oldest event after the cursor, None when all were taken."""
        if not self._events or self._events[-1]["seq"] <= self._cursor:
            return None
        oldest = self._events[0]["seq"]
        return max(0, self._cursor + 1 - oldest)

    def _report(self, first: int) -> int:
        """The loss count owed, now in flight with the message whose first event is ``first``."""
        owed, self._owed = self._owed, 0
        if owed:
            self._in_flight.append((first, owed))
        return owed
