"""`gaffer start`'s console: output chunks become prefixed lines as far as there is room, and
process events and log records are each printed once."""

from __future__ import annotations

import io
import logging
import threading
import time

from gaffer.agent.manager import SHOWN_AS_EVENT
from gaffer.cli.console import Console, ConsoleLogHandler, ConsoleWriter, describe_proc_event
from gaffer.testing import poll_until


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def system(self, text: str) -> None:
        self.lines.append(text)


def test_a_repeated_spawn_error_is_not_printed_again() -> None:
    """The first spawn error of a run is a line; its repeats (``again``) are not."""
    first = {"id": "web.1", "error": "command 'x' not found", "again": 0}
    assert describe_proc_event("proc.web.exit", first) == "web.1 failed to start: command 'x' not found"
    assert describe_proc_event("proc.web.exit", {**first, "again": 3}) is None


def test_log_records_that_repeat_an_event_are_left_out() -> None:
    """A record logged with SHOWN_AS_EVENT is not printed: the event line says it."""
    recorder = Recorder()
    handler = ConsoleLogHandler(recorder)  # type: ignore[arg-type]
    logger = logging.getLogger("test.console")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("web.1: command 'x' not found", extra=SHOWN_AS_EVENT)
        logger.warning("web.1: command 'x' not found (again, 4 times)")
    finally:
        logger.removeHandler(handler)
    assert recorder.lines == ["web.1: command 'x' not found (again, 4 times)"]


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
    """A chunk larger than the queue's room is cut at the room; the rest is counted and said in
    place."""
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
    assert texts == ["held", "a", "b", "c", "[3 lines skipped]"]


async def test_dropped_lines_are_said_where_they_went_missing() -> None:
    """Lines dropped for room, then more queued: `[N lines skipped]` sits between them."""
    stream = HeldStream()
    writer = ConsoleWriter(stream, limit=2)
    console = Console(writer, color=False, width=5)
    console.lines("web.1", "held", None, 0.0)
    assert stream.entered.wait(10)
    console.lines("web.1", "a\nb\nc", None, 0.0)
    stream.release.set()
    await poll_until(lambda: writer.room() == 2, 10.0, "the writer to take its queue")
    console.lines("web.1", "d", None, 0.0)
    writer.close()
    texts = [line.split("| ", 1)[1] for line in stream.getvalue().splitlines()]
    assert texts == ["held", "a", "b", "[1 lines skipped]", "d"]


def test_a_jump_in_line_numbers_is_said_in_place() -> None:
    """Output events whose numbers jump (lost on the bus) print the gap, per instance and stream;
    a marker's lines are counted once."""
    stream = io.StringIO()
    writer = ConsoleWriter(stream)
    console = Console(writer, color=False, width=5)
    base = {"id": "web.1", "template": "web", "stream": "out", "ts": 0.0}
    console.output({**base, "line": 1, "text": "a\nb"})
    console.output({**base, "line": 6, "text": "f"})
    console.output({**base, "stream": "err", "line": 1, "text": "e"})
    console.output({**base, "line": 7, "skipped": 3, "skipped_bytes": 6})
    console.output({**base, "line": 10, "text": "j"})
    writer.close()
    texts = [line.split("| ", 1)[1] for line in stream.getvalue().splitlines()]
    assert texts == ["a", "b", "[3 lines skipped]", "f", "e", "[3 lines skipped]", "j"]



def test_a_gap_of_several_instances_is_said_once_as_gaffers() -> None:
    """Dropped lines of two instances in one gap: one `gaffer | [N lines skipped]`."""
    stream = HeldStream()
    writer = ConsoleWriter(stream, limit=1)
    console = Console(writer, color=False, width=5)
    console.lines("web.1", "held", None, 0.0)
    assert stream.entered.wait(10)
    console.lines("web.1", "a\nb", None, 0.0)
    console.lines("web.2", "c", None, 0.0)
    stream.release.set()
    writer.close()
    lines = stream.getvalue().splitlines()
    assert [line.split("| ", 1)[1] for line in lines[:2]] == ["held", "a"]
    assert lines[2:] == ["gaffer | [2 lines skipped]"]
