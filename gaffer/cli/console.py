"""The foreground console of ``gaffer start``: every line prefixed and coloured per template.

Writing to a terminal or a pipe can block (a paused pager, a full pipe), and the event loop
must never wait for it: lines go through a bounded queue to one writer thread, and when that
queue is full new lines are dropped and counted: ``[N lines skipped]`` takes their place in the
queue (one marker per run of dropped lines, so the queue stays bounded) and is printed where
they went missing. Output arrives in chunks of many lines (one per read); a chunk is formatted
with a few string operations, and only as many of its lines as the queue has room for, so a
flood costs the loop little more than the lines the terminal can actually show. Output events
are numbered (``line``), so lines the console's bus subscription lost (it was cut off as too
slow) are counted the same way, from the jump in numbers.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, TextIO

from gaffer.common.bus import Event

COLORS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")
SYSTEM_COLOR = "37;1"
RESET = "\x1b[0m"
QUEUE_LINES = 10_000
SKIP_HEAD = "gaffer |"


class _Skipped:
    """A run of dropped lines in the writer's queue, printed as ``head [N lines skipped]``;
    ``who`` is the instance whose lines they are (None: several, or gaffer's own)."""

    __slots__ = ("head", "who", "count")

    def __init__(self, head: str, who: str | None, count: int) -> None:
        self.head = head
        self.who = who
        self.count = count

    def text(self) -> str:
        return f"{self.head} [{self.count} lines skipped]\n"


def use_color(stream: TextIO, forced: bool | None) -> bool:
    if forced is not None:
        return forced
    if os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


class ConsoleWriter:
    """A bounded line queue drained by one daemon thread into ``stream``."""

    def __init__(self, stream: TextIO, limit: int = QUEUE_LINES) -> None:
        self._stream = stream
        self._limit = limit
        self._lines: collections.deque[str | _Skipped] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="gaffer-console", daemon=True)
        self._thread.start()

    def room(self) -> int:
        """Lines that may still be queued (a hint: the writer only ever makes more room)."""
        return self._limit - self._queued

    def write(self, text: str, lines: int = 1) -> None:
        """Queue ``text`` (``lines`` formatted lines, each ending in a newline), or drop it all."""
        with self._cond:
            if self._queued + lines > self._limit:
                self._skip(lines, SKIP_HEAD, None)
                return
            self._lines.append(text)
            self._queued += lines
            self._cond.notify()

    def drop(self, lines: int, head: str = SKIP_HEAD, who: str | None = None) -> None:
        """Count lines (of instance ``who``) that were not even formatted (no room, or lost
        before they came here): a ``head [N lines skipped]`` line is printed in their place."""
        with self._cond:
            self._skip(lines, head, who)
            self._cond.notify()

    def _skip(self, lines: int, head: str, who: str | None) -> None:
        if lines <= 0:
            return
        self.dropped += lines
        last = self._lines[-1] if self._lines else None
        if isinstance(last, _Skipped):
            # one marker per gap between queued lines, so the queue stays bounded; it names
            # an instance only while the lines are all that instance's
            last.count += lines
            if who is None or last.who != who:
                last.head, last.who = SKIP_HEAD, None
        else:
            self._lines.append(_Skipped(head, who, lines))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if not self._lines and self._closed:
                    return
                batch = [item if isinstance(item, str) else item.text() for item in self._lines]
                self._lines.clear()
                self._queued = 0
            try:
                self._stream.write("".join(batch))
                self._stream.flush()
            except (OSError, ValueError):
                return

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)


class Console:
    """Formats bus events as prefixed, coloured lines."""

    def __init__(self, writer: ConsoleWriter, color: bool, width: int = 6) -> None:
        self._writer = writer
        self._color = color
        self._colors: dict[str, str] = {}
        self.width = width
        self._due: dict[tuple[str, str], int] = {}
        """Per instance and stream, the number of the next output line due."""

    def register(self, names: list[str]) -> None:
        for name in names:
            if name not in self._colors:
                self._colors[name] = COLORS[len(self._colors) % len(COLORS)]

    def fit(self, ids: list[str]) -> None:
        self.width = max([self.width, *(len(i) for i in ids)])

    def line(self, prefix: str, text: str, color: str | None, ts: float | None = None) -> None:
        self._writer.write(f"{self._head(prefix, color, ts)} {text}\n")

    def lines(
        self, prefix: str, text: str, color: str | None, ts: float | None = None, count: int | None = None
    ) -> int:
        """Every line of ``text`` (lines joined by newlines; ``count`` of them, if known) with
        the same head, as far as the writer has room; the rest is counted as dropped without
        being formatted. Returns how many lines ``text`` has."""
        if count is None:
            count = text.count("\n") + 1
        room = self._writer.room()
        if room <= 0:
            self._writer.drop(count, self._head(prefix, color, ts), prefix)
            return count
        head = self._head(prefix, color, ts)
        if count > room:
            text = "\n".join(text.split("\n", room)[:room])
        self._writer.write(head + " " + text.replace("\n", "\n" + head + " ") + "\n", min(count, room))
        if count > room:
            self._writer.drop(count - room, head, prefix)
        return count

    def output(self, data: dict[str, Any]) -> None:
        """An ``output.`` event: its lines, after a ``[N lines skipped]`` if its numbers jump."""
        ident, color, ts = data["id"], self._colors.get(data["template"]), data.get("ts")
        key = (ident, data.get("stream", ""))
        line = data.get("line")
        numbered = type(line) is int and line > 0
        due = self._due.get(key)
        if "skipped" in data:
            count = data["skipped"]
            if numbered and due is not None:
                count = max(0, line + count - due)
            self._writer.drop(count, self._head(ident, color, ts), ident)
            if numbered:
                self._due[key] = max(due or 0, line + data["skipped"])
            return
        if numbered and due is not None and line > due:
            self._writer.drop(line - due, self._head(ident, color, ts), ident)
        known = data.get("lines")
        count = self.lines(ident, data["text"], color, ts, known if type(known) is int else None)
        if numbered:
            self._due[key] = line + count

    def _head(self, prefix: str, color: str | None, ts: float | None) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(ts if ts is not None else time.time()))
        head = f"{stamp} {prefix:<{self.width}} |"
        if self._color and color:
            head = f"\x1b[{color}m{head}{RESET}"
        return head

    def system(self, text: str) -> None:
        self.line("gaffer", text, SYSTEM_COLOR)

    def show(self, event: Event) -> None:
        data = event.data
        topic = event.topic
        if topic.startswith("output."):
            if "text" in data or "skipped" in data:
                self.output(data)
        elif topic.startswith("proc.") and not topic.endswith(".running"):
            text = describe_proc_event(topic, data)
            if text is not None:
                self.system(text)
        elif topic.startswith("template."):
            self.system(f"template {data.get('name')} {topic.rsplit('.', 1)[1]}")


def describe_proc_event(topic: str, data: dict[str, Any]) -> str | None:
    """One console line for a proc event; None for a spawn error repeated (``again``): it
    was shown the first time, and the Manager logs the count when the repeats end."""
    kind = topic.rsplit(".", 1)[1]
    ident = data.get("id") or data.get("template")
    if kind == "spawn":
        return f"{ident} started (pid {data.get('pid')})"
    if kind in ("exit", "stop"):
        verb = "stopped" if kind == "stop" else "exited"
        if data.get("error") and data.get("again"):
            return None
        if data.get("error"):
            return f"{ident} failed to start: {data['error']}"
        if data.get("signal"):
            return f"{ident} {verb}: killed by {data['signal']}"
        return f"{ident} {verb} with status {data.get('status')}"
    if kind == "flap":
        return (
            f"{ident} is flapping: respawns suspended for {data.get('retry_in')}s "
            f"(retry {data.get('retries')} of {data.get('max_retry')})"
        )
    if kind == "failed":
        return f"{ident} failed: {data.get('reason')}"
    return f"{ident} {kind}"


class ConsoleLogHandler(logging.Handler):
    """Routes gaffer's own log records to the console as ``gaffer`` lines, except those that
    only repeat an event the console prints anyway (``gaffer_event`` in their ``extra``)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "gaffer_event", False):
            return
        try:
            self._console.system(self.format(record))
        except Exception:  # a log handler must never raise into the caller
            self.handleError(record)

