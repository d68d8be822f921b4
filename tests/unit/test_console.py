"""`gaffer start`'s console: chunks of output become prefixed lines, as far as there is room."""

from __future__ import annotations

import io
import threading
import time

from gaffer.cli.console import Console, ConsoleWriter


class HeldStream(io.StringIO):
    """A terminal that blocks on its first write until released (a paused pager)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().write(text)


def test_a_chunk_prints_one_prefixed_line_per_line() -> None:
    """Lines joined by newlines come out one per line, each with the instance's head."""
    stream = io.StringIO()
    writer = ConsoleWriter(stream)
    console = Console(writer, color=False, width=5)
    ts = time.mktime((2026, 1, 1, 12, 34, 56, 0, 0, -1))
    console.lines("web.1", "first\n\nthird", None, ts)
    writer.close()
    assert stream.getvalue() == "12:34:56 web.1 | first\n12:34:56 web.1 | \n12:34:56 web.1 | third\n"


def test_lines_beyond_the_writers_room_are_dropped_and_counted() -> None:
    """A chunk larger than the queue's room is cut at the room; the rest is counted, then said."""
    stream = HeldStream()
    writer = ConsoleWriter(stream, limit=3)
    console = Console(writer, color=False, width=5)
    console.lines("web.1", "held", None, 0.0)
    assert stream.entered.wait(10)
    console.lines("web.1", "a\nb\nc\nd\ne", None, 0.0)
    console.lines("web.1", "f", None, 0.0)
    assert writer.dropped == 3
    stream.release.set()
    writer.close()
    texts = [line.split("| ", 1)[1] for line in stream.getvalue().splitlines()]
    assert texts == ["held", "a", "b", "c", "3 output lines dropped: console too slow"]
