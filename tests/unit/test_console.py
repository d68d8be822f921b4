"""What `gaffer start` prints for process events and log records: each thing once."""

from __future__ import annotations

import logging

from gaffer.agent.manager import SHOWN_AS_EVENT
from gaffer.cli.console import ConsoleLogHandler, describe_proc_event


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
