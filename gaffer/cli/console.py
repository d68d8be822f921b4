"""The foreground console of ``gaffer start``: every line prefixed and coloured per template.

Writing to a terminal or a pipe can block (a paused pager, a full pipe), and the event loop
must never wait for it: lines go through a bounded queue to one writer thread, and when that
queue is full new lines are dropped and counted, then reported once the writer catches up.
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
        self._lines: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="gaffer-console", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        with self._cond:
            if len(self._lines) >= self._limit:
                self.dropped += 1
                return
            self._lines.append(line)
            self._cond.notify()

    def _run(self) -> None:
        reported = 0
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if not self._lines and self._closed:
                    return
                batch = list(self._lines)
                self._lines.clear()
                dropped = self.dropped
            if dropped > reported:
                batch.append(f"gaffer | {dropped - reported} output lines dropped: console too slow\n")
                reported = dropped
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

    def register(self, names: list[str]) -> None:
        for name in names:
            if name not in self._colors:
                self._colors[name] = COLORS[len(self._colors) % len(COLORS)]

    def fit(self, ids: list[str]) -> None:
        self.width = max([self.width, *(len(i) for i in ids)])

    def line(self, prefix: str, text: str, color: str | None, ts: float | None = None) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(ts if ts is not None else time.time()))
        head = f"{stamp} {prefix:<{self.width}} |"
        if self._color and color:
            head = f"\x1b[{color}m{head}{RESET}"
        self._writer.write(f"{head} {text}\n")

    def system(self, text: str) -> None:
        self.line("gaffer", text, SYSTEM_COLOR)

    def show(self, event: Event) -> None:
        data = event.data
        topic = event.topic
        if topic.startswith("output."):
            self.line(data["id"], data["line"], self._colors.get(data["template"]), data.get("ts"))
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

