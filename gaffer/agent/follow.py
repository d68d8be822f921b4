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

Line numbers: an output event carries ``line``, the number of its first line in its
instance's stream (``Capture`` numbers every line). What goes keeps its number; a marker says
``line`` (its first skipped line) and ``skipped`` (how many), so each marker covers one exact
run of numbers, and the follower can check that numbers go on where the last event ended.
Skips that are not one run (lines lost on the bus between them) get a marker each.

Hysteresis: a stream that had to skip stays skipping until its allowance is back to
``RESUME`` of its burst. A follower of a flood then sees runs of consecutive lines, each
followed by one ``[N lines skipped]``, rather than a line and a marker taking turns.
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


MARKER_FIELDS = ("id", "template", "stream", "ts")
"""What a marker keeps of the output event it stands for (besides its ``line`` and counts)."""


def marker(data: dict[str, Any], line: int, skipped: int, skipped_bytes: int) -> dict[str, Any]:
    """A skip marker for output event ``data``: ``skipped`` lines from number ``line`` (0:
    unnumbered output, and then the marker has no ``line``)."""
    out = {key: data[key] for key in MARKER_FIELDS if key in data}
    if line:
        out["line"] = line
    out["skipped"] = skipped
    out["skipped_bytes"] = skipped_bytes
    return out


@dataclass
class _Stream:
    allowance: Allowance
    skipped: int = 0
    skipped_bytes: int = 0
    first: int = 0
    """Number of the first line of the skipped run (0: unnumbered)."""
    meta: dict[str, Any] | None = None
    active: bool = False


class Followers:
    """Per followed stream: its allowance and what it skipped since its last marker.

    ``offer`` takes one output event (``data`` with ``text``, and ``lines``, its number of
    lines, when the capture counted them: never forwarded) and returns the events to send
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
        line = data.get("line", 0)
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
        total = data.get("lines")
        if count:
            self._marker(out, topic, state, data["ts"])
            wire = {k: v for k, v in data.items() if k != "lines"} if total is not None else data
            out.append((topic, {**wire, "text": text[:end]} if short else wire))
            self.sent_lines += count
        if short:
            first = line + count if line else 0
            if state.skipped and first != (state.first + state.skipped if state.first else 0):
                self._marker(out, topic, state, data["ts"])
            if not state.skipped:
                state.first = first
            if type(total) is int:
                skipped = total - count  # the capture counted them: no second pass over a flood
            else:
                skipped = text.count("\n", end + 1) + 1
            state.skipped += skipped
            state.skipped_bytes += text_bytes(text) - size
            self.skipped_lines += skipped
        state.meta = data
        return out

    def markers(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """A marker for every stream that skipped lines and has been quiet since the last call."""
        out = []
        for topic, state in list(self._streams.items()):
            if state.active:
                state.active = False
                continue
            if not self._marker(out, topic, state, None) and refill(self.stream_limit, state.allowance, now) == self.stream_limit.full(now):
                del self._streams[topic]
        return out

    @staticmethod
    def _marker(
        out: list[tuple[str, dict[str, Any]]], topic: str, state: _Stream, ts: float | None
    ) -> bool:
        """Append the marker ``state`` owes (stamped ``ts`` if given) to ``out``; whether it
        owed one."""
        if not state.skipped:
            return False
        data = marker(state.meta or {}, state.first, state.skipped, state.skipped_bytes)
        if ts is not None:
            data["ts"] = ts
        out.append((topic, data))
        state.skipped = state.skipped_bytes = state.first = 0
        return True

    def owes_markers(self) -> bool:
        """Whether some stream skipped lines that no marker has reported yet."""
        return any(state.skipped for state in self._streams.values())

    def __len__(self) -> int:
        return len(self._streams)


MAX_LOST_RUNS = 1_000
"""Separate runs of lost lines the link keeps markers for; past it, runs of a stream merge
(the count stays exact, the marker's ``line`` is then that of the first)."""


class Lost:
    """Output the link took on but could not send (its queue overflowed, the socket was full):
    a marker per run of lost lines, to be sent before anything newer.

    ``add`` takes an output event (lines or a marker) that will not go; ``take`` returns the
    markers for all of it, in the order the lines were lost, and forgets them. Consecutive
    losses of a stream whose numbers follow on make one marker.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[str, dict[str, Any]]] = []
        self._last: dict[str, dict[str, Any]] = {}
        self.lines = 0

    def add(self, topic: str, data: dict[str, Any]) -> None:
        if "text" in data:
            text = data["text"]
            skipped, skipped_bytes = text.count("\n") + 1, text_bytes(text)
        else:
            skipped, skipped_bytes = data.get("skipped", 0), data.get("skipped_bytes", 0)
        if not skipped:
            return
        self.lines += skipped
        line = data.get("line", 0)
        last = self._last.get(topic)
        if last is not None and (
            (line and last.get("line", 0) + last["skipped"] == line) or len(self._runs) >= MAX_LOST_RUNS
        ):
            last["skipped"] += skipped
            last["skipped_bytes"] += skipped_bytes
            return
        run = marker(data, line, skipped, skipped_bytes)
        self._last[topic] = run
        self._runs.append((topic, run))

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        runs, self._runs = self._runs, []
        self._last.clear()
        return runs

    def __bool__(self) -> bool:
        return bool(self._runs)
