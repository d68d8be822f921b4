"""Output events as log lines for an HTTP log stream: recent lines first, then live ones, each
line once, and every gap said where it happened.

Lines are numbered per instance and stream from 1 (``gaffer.agent.capture``). The stream sends
the recent lines (the ``logs`` operation) and then the live ``output.`` events, which may
overlap them (the agent starts forwarding before the recent lines are read). ``LineJoin`` keeps,
per instance and stream, the number of the next line due: a live event that starts before it,
the first time, is trimmed; one that starts past it reveals lost lines (``event: skipped``);
a skip marker becomes ``event: skipped`` for the lines it covers that were not counted yet.
Numbers that go back (an agent restarted and numbers afresh) are taken as a fresh start.

The same rule as ``gafferctl logs -f`` (``gaffer.cli.logfollow``), kept here because the
controller does not import the command line. Pure: no socket, no clock.
"""

from __future__ import annotations

from typing import Any, Iterable

from gaffer.common.bus import Event
from gaffer.controller.http.sse import message

Key = tuple[str, str]


def _number(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


class LineJoin:
    """Per instance and stream, the number of the next line due."""

    def __init__(self) -> None:
        self._next: dict[Key, int] = {}
        self._recent: set[Key] = set()

    def recent(self, rows: Iterable[dict[str, Any]]) -> bytes:
        """The recent lines (rows of ``logs``), one message each; they set the numbers due."""
        out = []
        for row in rows:
            key = (str(row.get("id")), str(row.get("stream")))
            number = _number(row.get("number"))
            if number:
                self._next[key] = max(self._next.get(key, 0), number + 1)
                self._recent.add(key)
            out.append(message({
                "id": key[0], "node": row.get("node"), "stream": key[1], "ts": row.get("ts"),
                "line": row.get("line"), "number": number,
            }))
        return b"".join(out)

    def frame(self, event: Event) -> bytes:
        """A live ``output.`` event as line messages; the last one carries the event's position."""
        data = event.data
        key = (str(data.get("id")), str(data.get("stream")))
        head = {"id": key[0], "node": data.get("node"), "stream": key[1], "ts": data.get("ts")}
        line = _number(data.get("line"))
        due = self._next.get(key)
        fresh = key in self._recent
        self._recent.discard(key)
        if "skipped" in data:
            count = _number(data.get("skipped"))
            missing = count if not line or due is None else max(0, line + count - due)
            if line:
                self._next[key] = line + count if due is None else max(due, line + count)
            return self._skipped(head, line, missing, event.seq)
        text = data.get("text")
        if not isinstance(text, str):
            return b""
        texts = text.split("\n")
        out = b""
        if line and due is not None:
            if line > due:
                out = self._skipped(head, due, line - due, None)
            elif line < due and fresh:
                texts, line = texts[due - line:], due
        if line:
            self._next[key] = line + len(texts)
        last = len(texts) - 1
        return out + b"".join(
            message({**head, "line": t, "number": line + i if line else 0}, ident=event.seq if i == last else None)
            for i, t in enumerate(texts)
        )

    @staticmethod
    def _skipped(head: dict[str, Any], first: int, count: int, ident: int | None) -> bytes:
        if count <= 0:
            return b""
        return message({**head, "skipped": count, "number": first}, event="skipped", ident=ident)
