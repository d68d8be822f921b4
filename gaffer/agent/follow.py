"""How much of a process's output a follower receives: rate limits with skip counts.

The agent forwards output to the controller only while someone follows it (``gafferctl logs
-f``, ``events output.``). A process can print far more than any follower can read, and
every line forwarded costs the agent, the controller and each subscriber. So each followed
stream (``output.<template>.<ordinal>.<out|err>``) has a budget, and the agent as a whole has
one too; what does not fit is *skipped and counted*, never queued: the follower receives an
explicit marker ``{"skipped": N, "skipped_bytes": B}`` on the same topic, where the lines went
missing. The ring buffer and log files still keep everything; only live following is limited.

Vocabulary::

    Limit       a budget: lines per second, bytes per second, and ``burst`` seconds of it
                that a quiet stream may save up
    Allowance   what is left of a budget at time ``at`` (a token bucket in each dimension),
                and whether the stream is ``skipping``
    refill      the allowance at ``now``                                    (pure)
    room        how many lines and bytes may go now                         (pure)
    cut         the longest prefix of whole lines of a text within a room   (pure)
    spend       the allowance after sending some lines and maybe skipping   (pure)
    Followers   the bookkeeping per stream: allowances and pending skip counts; time is
                passed in, it reads no clock and sends nothing

One chunk of output (complete lines joined by "\\n") for a followed stream::

    stream, agent = refill(STREAM, stream, now), refill(AGENT, agent, now)
    lines, nbytes = min(room(stream), room(agent))
    end, sent_lines, sent_bytes = cut(text, lines, nbytes)   # text[:end] goes
    stream = spend(stream, sent_lines, sent_bytes, short)    # short: some were skipped
    agent  = spend(agent, ...)

Hysteresis: a stream that had to skip stays skipping until its allowance is back to
``RESUME`` of its burst. A follower of a flood then sees runs of consecutive lines, each
followed by one ``# N lines skipped``, rather than a line and a marker taking turns.
Bytes are those of the text encoded as UTF-8, one newline per line included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

RESUME = 0.5
"""Fraction of its burst an allowance must be back to before a skipping stream sends again."""


@dataclass(frozen=True, slots=True)
class Limit:
    lines: float
    """Lines per second."""
    bytes: float
    """Bytes per second."""
    burst: float = 1.0
    """Seconds of budget a quiet stream may save up: the most that goes at once."""

    def __post_init__(self) -> None:
        for name in ("lines", "bytes", "burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"Limit.{name} must be a finite number > 0, got {value!r}")

    def full(self, now: float) -> "Allowance":
        return Allowance(self.lines * self.burst, self.bytes * self.burst, now)


@dataclass(frozen=True, slots=True)
class Allowance:
    lines: float
    bytes: float
    at: float
    skipping: bool = False


STREAM_LIMIT = Limit(lines=2_000, bytes=256 * 1024)
"""Default budget of one followed stream."""
AGENT_LIMIT = Limit(lines=10_000, bytes=1024 * 1024)
"""Default budget of all the output one agent forwards."""


def refill(limit: Limit, allowance: Allowance | None, now: float) -> Allowance:
    """``allowance`` topped up for the time since it was last refilled (none if the clock went
    back), capped at the burst; a new stream starts full."""
    if allowance is None:
        return limit.full(now)
    elapsed = max(0.0, now - allowance.at)
    lines = min(limit.lines * limit.burst, allowance.lines + elapsed * limit.lines)
    nbytes = min(limit.bytes * limit.burst, allowance.bytes + elapsed * limit.bytes)
    skipping = allowance.skipping and (
        lines < RESUME * limit.lines * limit.burst or nbytes < RESUME * limit.bytes * limit.burst
    )
    return Allowance(lines, nbytes, max(now, allowance.at), skipping)


def room(allowance: Allowance) -> tuple[int, int]:
    """Whole lines and bytes that may go now: none while the stream is skipping."""
    if allowance.skipping:
        return 0, 0
    return max(0, int(allowance.lines)), max(0, int(allowance.bytes))


def spend(allowance: Allowance, lines: int, nbytes: int, short: bool) -> Allowance:
    """The allowance after ``lines``/``nbytes`` went; ``short``: some lines had to be skipped."""
    return Allowance(
        allowance.lines - lines, allowance.bytes - nbytes, allowance.at, allowance.skipping or short
    )


def cut(text: str, lines: int, nbytes: int) -> tuple[int, int, int]:
    """``(end, count, size)``: ``text[:end]`` is the longest run of whole leading lines of
    ``text`` with at most ``lines`` lines and ``nbytes`` bytes; ``count`` lines of ``size``
    bytes. ``end`` is -1 when not even the first line fits, else the index of the newline
    after the last line sent (``len(text)`` if all of it fits).
    """
    if lines <= 0 or nbytes <= 0:
        return -1, 0, 0
    end = _end_of_lines(text, lines)
    # a run of lines ending at index e is at least e + 1 bytes with its newline
    if end + 1 > nbytes:
        end = text.rfind("\n", 0, nbytes)
        if end < 0:
            return -1, 0, 0
    encoded = text[:end].encode("utf-8", errors="replace")
    if len(encoded) + 1 > nbytes:
        last = encoded.rfind(b"\n", 0, nbytes)
        if last < 0:
            return -1, 0, 0
        encoded = encoded[:last]
        end = len(encoded.decode("utf-8", errors="replace"))
    return end, text.count("\n", 0, end) + 1, len(encoded) + 1


def _end_of_lines(text: str, n: int) -> int:
    """Index of the newline after the first ``n`` lines of ``text`` (``len(text)`` if it has
    no more). Splits at most ``n`` times rather than counting every newline of a flood."""
    parts = text.split("\n", n)
    if len(parts) <= n:
        return len(text)
    return sum(map(len, parts[:-1])) + n - 1


def text_bytes(text: str) -> int:
    """Bytes of the lines of ``text`` as ``cut`` counts them (UTF-8, one newline per line)."""
    return len(text.encode("utf-8", errors="replace")) + 1


@dataclass
class _Stream:
    allowance: Allowance
    skipped: int = 0
    skipped_bytes: int = 0
    meta: dict[str, Any] | None = None
    active: bool = False


class Followers:
    """Per followed stream: its allowance and what it skipped since its last marker.

    ``offer`` takes one output event (``data`` with ``text``) and returns the events to send
    for it: a marker first if the stream skipped lines since its last one, then the lines its
    budgets allow now (as one event), or nothing. ``markers`` (called once per flush) returns a
    marker for every stream that skipped lines and then went quiet since the previous call, so
    a skip is reported within two flushes even if nothing follows it, while a stream that is
    still flooding gets one marker when it resumes, not one per flush. Streams with nothing
    pending and a full allowance are forgotten, so the table holds only active streams.
    """

    def __init__(self, stream: Limit = STREAM_LIMIT, agent: Limit = AGENT_LIMIT) -> None:
        self.stream_limit = stream
        self.agent_limit = agent
        self._streams: dict[str, _Stream] = {}
        self._agent: Allowance | None = None
        self.sent_lines = 0
        self.skipped_lines = 0

    def offer(
        self, topic: str, data: dict[str, Any], now: float, allowed: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events ``(topic, data)`` to forward for output event ``data``; ``allowed=False``
        (no controller to send to) skips all of it."""
        text = data["text"]
        state = self._streams.get(topic)
        allowance = refill(self.stream_limit, state.allowance if state else None, now)
        if state is None:
            state = self._streams[topic] = _Stream(allowance)
        state.active = True
        state.meta = {k: v for k, v in data.items() if k != "text"}
        self._agent = refill(self.agent_limit, self._agent, now)
        lines, nbytes = room(allowance)
        agent_lines, agent_bytes = room(self._agent)
        end, count, size = -1, 0, 0
        if allowed:
            end, count, size = cut(text, min(lines, agent_lines), min(nbytes, agent_bytes))
        short = end < len(text)
        agent_bound = agent_lines < lines or agent_bytes < nbytes
        state.allowance = spend(allowance, count, size, short)
        self._agent = spend(self._agent, count, size, short and agent_bound)
        out: list[tuple[str, dict[str, Any]]] = []
        if count:
            marker = self._marker(topic, state, data["ts"])
            if marker is not None:
                out.append(marker)
            out.append((topic, {**state.meta, "text": text if not short else text[:end]}))
            self.sent_lines += count
        if short:
            skipped = text.count("\n", end + 1) + 1
            state.skipped += skipped
            state.skipped_bytes += text_bytes(text) - size
            self.skipped_lines += skipped
        return out

    def markers(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """A marker for every stream that skipped lines and has been quiet since the last call."""
        out = []
        for topic, state in list(self._streams.items()):
            if state.active:
                state.active = False
                continue
            marker = self._marker(topic, state, None)
            if marker is not None:
                out.append(marker)
            elif refill(self.stream_limit, state.allowance, now) == self.stream_limit.full(now):
                del self._streams[topic]
        return out

    def _marker(self, topic: str, state: _Stream, ts: float | None) -> tuple[str, dict[str, Any]] | None:
        if not state.skipped:
            return None
        meta = dict(state.meta or {})
        if ts is not None:
            meta["ts"] = ts
        marker = (topic, {**meta, "skipped": state.skipped, "skipped_bytes": state.skipped_bytes})
        state.skipped = state.skipped_bytes = 0
        return marker

    def owes_markers(self) -> bool:
        """Whether some stream skipped lines that no marker has reported yet."""
        return any(state.skipped for state in self._streams.values())

    def __len__(self) -> int:
        return len(self._streams)
