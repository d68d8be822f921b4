"""The controller's event log: the last N events by position, and replay from a position.

Vocabulary::

    position   the number an event gets: > 0, dense within one controller incarnation, and
               never backwards across incarnations (the store reserves them in blocks, see
               ``Store.reserve_events``; a restart continues from a new block)
    held       the events the log still has: positions oldest..last, dense
    horizon    the log answers exactly for any ``since >= horizon``: the position before the
               oldest event held, or, before anything was evicted, what the incarnation knew
               at its start (its predecessor's last position after a clean stop; the end of
               the predecessor's reservation after a crash, since what it published is gone)
    last       the newest position, or the horizon while this incarnation published nothing

::

    append(topic, ts, data) ──► Event(position = last + 1) ──► evict the oldest while more
                                                              than ``capacity`` events or
                                                              more than ``max_bytes`` of text
    replay(since, prefixes, limit) ──► Replay(events, upto, last, horizon, too_old)

``upto`` is what a reader may take as settled: every matching event in ``(since, upto]`` is in
``events``. An answer cut short (by ``limit``, by the reply's byte budget, or by the scan
budget that keeps one request from walking ten million events) says where it stopped, so the
reader asks again from ``upto``. ``too_old``: ``since < horizon``, the events after ``since``
are not all held any more (nothing is returned; the reader lists a snapshot instead).

Pure: no clock, no I/O. Held events live in a list with a moving head (compacted now and
then), so finding a position is one subtraction, and append and evict cost O(1) amortized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from gaffer.common.bus import Event
from gaffer.common.limits import DEFAULT_EVENT_BUFFER as DEFAULT_BUFFER
from gaffer.common.limits import MAX_EVENT_BUFFER as MAX_BUFFER

MAX_TEXT_BYTES = 64 * 1024 * 1024
"""Text held, beside the count: output events carry up to a few hundred KiB each."""
EVENT_OVERHEAD = 64
"""What an event costs beside its topic and text, in the byte count."""
REPLY_BYTES = 3 * 1024 * 1024
"""Text one replay answer carries at most (a reply is one message of at most 4 MiB)."""
SCAN_BUDGET = 200_000
"""Events one replay looks at at most, so a narrow prefix over a huge log stays one short turn."""
_COMPACT = 4_096


@dataclass(frozen=True, slots=True)
class Replay:
    """One replay answer (the ``replay`` op's result, see ``to_wire``)."""

    events: tuple[Event, ...]
    upto: int
    last: int
    horizon: int
    too_old: bool

    def to_wire(self) -> dict[str, Any]:
        return {
            "events": [event.to_dict() for event in self.events],
            "upto": self.upto, "last": self.last, "horizon": self.horizon, "too_old": self.too_old,
        }


def event_size(topic: str, data: dict[str, Any]) -> int:
    """What an event counts against ``max_bytes``: its topic and its ``text`` (output lines),
    the only payload that can be large; characters, as a cheap stand-in for bytes."""
    text = data.get("text")
    return EVENT_OVERHEAD + len(topic) + (len(text) if isinstance(text, str) else 0)


class EventLog:
    """The last ``capacity`` events (and at most ``max_bytes`` of their text), by position."""

    def __init__(
        self,
        first: int = 1,
        horizon: int = 0,
        capacity: int = DEFAULT_BUFFER,
        max_bytes: int = MAX_TEXT_BYTES,
    ) -> None:
        """``first``: the position of this incarnation's first event; ``horizon``: the lowest
        ``since`` answered exactly before anything is evicted (``horizon < first``)."""
        if not 0 <= horizon < first:
            raise ValueError(f"need 0 <= horizon < first, got horizon {horizon}, first {first}")
        if not 1 <= capacity <= MAX_BUFFER:
            raise ValueError(f"capacity must be in 1..{MAX_BUFFER}, got {capacity}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.horizon = horizon
        self.first = first
        self._next = first
        self._items: list[Event | None] = []
        self._head = 0
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def last(self) -> int:
        """The newest position, or the horizon while this incarnation appended nothing."""
        return self._next - 1 if self._next > self.first else self.horizon

    @property
    def oldest(self) -> int | None:
        """The oldest position held (None: nothing held yet)."""
        event = self._items[self._head] if len(self) else None
        return event.seq if event is not None else None

    @property
    def bytes(self) -> int:
        return self._bytes

    def append(self, topic: str, ts: float, data: dict[str, Any]) -> Event:
        """Number ``(topic, ts, data)`` with the next position, hold it, and evict what the
        bounds no longer allow (never the event just appended)."""
        event = Event(self._next, topic, ts, data)
        self._next += 1
        items = self._items
        items.append(event)
        text = data.get("text")
        self._bytes += EVENT_OVERHEAD + len(topic) + (len(text) if isinstance(text, str) else 0)  # event_size, inline
        if len(items) - self._head > self.capacity or self._bytes > self.max_bytes:
            while len(self) > 1 and (len(self) > self.capacity or self._bytes > self.max_bytes):
                self._evict()
        return event

    def replay(self, since: int, prefixes: Sequence[str], limit: int, max_bytes: int = REPLY_BYTES,
               scan: int = SCAN_BUDGET) -> Replay:
        """The events after ``since`` whose topic starts with one of ``prefixes``, ascending,
        at most ``limit`` of them (and about ``max_bytes`` of text, at least one event), looking
        at no more than ``scan`` events; or ``too_old`` when ``since < horizon``."""
        last, horizon = self.last, self.horizon
        if since < horizon:
            return Replay((), since, last, horizon, True)
        if since >= last or not len(self):
            return Replay((), max(last, horizon), last, horizon, False)
        wanted = tuple(prefixes)
        oldest = self._items[self._head]
        assert oldest is not None
        start = self._head + max(0, since + 1 - oldest.seq)
        stop = min(len(self._items), start + scan)
        found: list[Event] = []
        size = 0
        upto = last
        for index in range(start, stop):
            event = self._items[index]
            assert event is not None
            if not event.topic.startswith(wanted):
                continue
            found.append(event)
            size += event_size(event.topic, event.data)
            if len(found) >= limit or size >= max_bytes:
                upto = event.seq
                break
        else:
            if stop < len(self._items):
                scanned = self._items[stop - 1]
                assert scanned is not None
                upto = scanned.seq
        return Replay(tuple(found), upto, last, horizon, False)

    def status(self) -> dict[str, int]:
        """The ``status`` figures: position, horizon, events held, the bound."""
        return {"position": self.last, "horizon": self.horizon, "buffered": len(self), "buffer": self.capacity}

    # ------------------------------------------------------------------------------ inner

    def _evict(self) -> None:
        event = self._items[self._head]
        assert event is not None
        self._items[self._head] = None
        self._head += 1
        self._bytes -= event_size(event.topic, event.data)
        self.horizon = event.seq
        self.evicted += 1
        if self._head >= _COMPACT and self._head * 2 >= len(self._items):
            del self._items[: self._head]
            self._head = 0
