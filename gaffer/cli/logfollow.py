"""What ``gafferctl logs`` prints: recent lines, then live output, with every gap said in place.

Output lines are numbered per instance and stream from 1 (``gaffer.agent.capture``): a live
``output.`` event carries ``line``, the number of its first line, and a skip marker carries
``line`` (its first skipped line) and ``skipped``. Lines can go missing at several places (the
agent's follow budget and its link, which send markers; the controller's PUB socket and a slow
subscriber, which cannot), so the follower trusts the numbers, not the markers alone:
``LogFollow`` keeps, per instance and stream, the number of the next line due, and turns each
event into what to print:

    event starts at the line due              its lines
    event starts past it (lines lost)         a gap of the missing lines, then its lines
    marker                                    a gap of the lines it covers that were not
                                              already counted (nothing if it is all behind)
    recent lines, then the first live event   the live lines already printed are left out
    numbers go back (the agent restarted and  its lines, counting afresh from there
    numbers its lines from 1 again)

Pure: no socket, no clock; ``gaffer.cli.ctl`` prints what it returns.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

Key = tuple[str, str]

MAX_SINCE = 30 * 86_400.0
"""The longest ``--since``: 30 days."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}


def parse_since(text: str) -> float:
    """Seconds of a duration such as ``90``, ``90s``, ``10m``, ``1.5h`` or ``2d`` (> 0, at
    most 30 days); ValueError saying what is wrong otherwise."""
    shown = repr(text) if len(text) <= 40 else f"of {len(text)} characters"
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 10m, 2h or 1d, got {shown}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {shown}")
    if not math.isfinite(seconds) or seconds > MAX_SINCE:
        raise ValueError(f"must be at most 30d, got {shown}")
    return seconds


@dataclass(frozen=True, slots=True)
class Shown:
    """One thing to print: a line (``text``) or a gap of ``skipped`` lines."""

    id: str
    stream: str
    ts: float | None
    node: str | None = None
    text: str | None = None
    number: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: a line is ``{id, stream, ts, node, line, number}``; a gap is
        ``{id, stream, ts, node, skipped}``."""
        out: dict[str, Any] = {"id": self.id, "stream": self.stream, "ts": self.ts, "node": self.node}
        if self.text is None:
            out["skipped"] = self.skipped
        else:
            out["line"] = self.text
            out["number"] = self.number
        return out


def _number(value: Any) -> int:
    """A line number from the wire (0: none, from an agent that does not number its lines)."""
    return value if type(value) is int and value > 0 else 0


class LogFollow:
    """Per instance and stream, the number of the next line due; see the module docstring."""

    def __init__(self) -> None:
        self._next: dict[Key, int] = {}
        self._recent: set[Key] = set()
        """Streams whose last number came from the recent lines (no live event seen yet)."""
        self.skipped = 0
        """Lines reported missing so far."""

    def recent(self, rows: Iterable[dict[str, Any]]) -> list[Shown]:
        """The recent lines (from the ``logs`` request) to print; they set the numbers due."""
        out = []
        for row in rows:
            key = (str(row.get("id")), str(row.get("stream")))
            number = _number(row.get("number"))
            if number:
                self._next[key] = max(self._next.get(key, 0), number + 1)
                self._recent.add(key)
            out.append(Shown(key[0], key[1], row.get("ts"), row.get("node"), str(row.get("line", "")), number))
        return out

    def event(self, ts: float | None, data: dict[str, Any]) -> list[Shown]:
        """A live ``output.`` event's ``data`` (published at ``ts``): what to print for it."""
        key = (str(data.get("id")), str(data.get("stream")))
        node = data.get("node")
        line = _number(data.get("line"))
        due = self._next.get(key)
        fresh = key in self._recent
        self._recent.discard(key)
        if "skipped" in data:
            count = data["skipped"] if type(data["skipped"]) is int and data["skipped"] > 0 else 0
            # lines line .. line+count-1 and any before them since ``due`` are missing, less
            # what was already counted (a gap seen when later lines overtook this marker)
            missing = count if not line or due is None else max(0, line + count - due)
            if line:
                self._next[key] = line + count if due is None else max(due, line + count)
            return self._gap(key, ts, node, missing)
        text = data.get("text")
        if not isinstance(text, str):
            return []
        texts = text.split("\n")
        out: list[Shown] = []
        if line and due is not None:
            if line > due:
                out = self._gap(key, ts, node, line - due)
            elif line < due and fresh:
                texts = texts[due - line :]
                line = due
        if line:
            self._next[key] = line + len(texts)
        out.extend(
            Shown(key[0], key[1], ts, node, t, line + i if line else 0) for i, t in enumerate(texts)
        )
        return out

    def _gap(self, key: Key, ts: float | None, node: Any, count: int) -> list[Shown]:
        if count <= 0:
            return []
        self.skipped += count
        return [Shown(key[0], key[1], ts, node, None, 0, count)]


def render(items: Iterable[Shown], with_id: bool, as_json: bool) -> list[tuple[str, bool]]:
    """``(text, to_stderr)`` runs to write for ``items``, in order, each text ending in a
    newline: consecutive lines for the same place are joined into one run.

    Human: a line is ``id | text`` (``with_id``, several instances) or its bare text (its err
    lines then go to stderr); a gap is ``[N lines skipped]`` on stderr (after ``id | `` too).
    JSON: one object per line or gap, on stdout.
    """
    runs: list[tuple[str, bool]] = []
    pending: list[str] = []
    pending_err = False
    for item in items:
        if as_json:
            text, err = json.dumps(item.to_dict(), sort_keys=True), False
        else:
            head = f"{item.id} | " if with_id else ""
            if item.text is None:
                text, err = f"{head}[{item.skipped} lines skipped]", True
            else:
                text, err = head + item.text, not with_id and item.stream == "err"
        if pending and err != pending_err:
            runs.append(("\n".join(pending) + "\n", pending_err))
            pending = []
        pending.append(text)
        pending_err = err
    if pending:
        runs.append(("\n".join(pending) + "\n", pending_err))
    return runs
