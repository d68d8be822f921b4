"""What one instance printed: recent lines in a ring, optionally a log file, across respawns.

The Manager feeds each read of a captured pipe to ``Capture.feed``; a chunk of complete lines
comes back (or None while a line is still incomplete), already in the ring and the log file,
for the Manager to publish as one ``output.`` event. Each new process of the instance starts
with fresh line splitters (``restart``), while the ring and the log file carry on, so
``gafferctl logs`` shows the lines of earlier processes too.

Lines are numbered per instance and stream, from 1, across respawns: every line the process
wrote counts, whether or not anyone follows it, so a follower can tell from the numbers alone
that lines went missing on the way (``Chunk.last``; the ``line`` of an ``output.`` event).
Numbering costs one ``str.count`` per chunk (see ``bench/output.py``). An agent that restarts
and adopts its processes numbers them from 1 again: a follower sees the number go back.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gaffer.agent.output import Chunk, Line, LineSplitter, RingBuffer, RotatingLog
from gaffer.common.template import LogFiles

log = logging.getLogger("gaffer.manager")


class Capture:
    __slots__ = ("ring", "log", "_splitters", "_numbers")

    def __init__(self) -> None:
        self.ring = RingBuffer()
        self.log: RotatingLog | None = None
        self._splitters: dict[str, LineSplitter] = {}
        self._numbers: dict[str, int] = {}

    def restart(self, files: LogFiles | None, instance_id: str) -> None:
        """A new process: split its output afresh; open the log file the first time."""
        if self._splitters:
            self._splitters.clear()
        if files is not None and self.log is None:
            self.log = _open_log(files, instance_id)

    def feed(self, stream: str, data: bytes, ts: float) -> Chunk | None:
        """Bytes read from ``stream`` at ``ts``: the complete lines they end, kept here."""
        splitter = self._splitters.get(stream)
        if splitter is None:
            splitter = self._splitters[stream] = LineSplitter()
        text = splitter.feed(data)
        if text is None:
            return None
        last = self._numbers.get(stream, 0) + text.count("\n") + 1
        self._numbers[stream] = last
        chunk = Chunk(ts, stream, text, last)
        self.ring.add(chunk)
        if self.log is not None:
            self.log.write_chunk(chunk)
        return chunk

    def lines(self, stream: str) -> int:
        """How many lines of ``stream`` this instance has printed (the number of the last)."""
        return self._numbers.get(stream, 0)

    def note(self, line: Line) -> None:
        """A line gaffer adds itself (what was lost while no agent ran)."""
        self.ring.append(line)

    def tail(self, count: int | None = 100, stream: str | None = None) -> list[Line]:
        return self.ring.tail(count, stream)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _open_log(files: LogFiles, instance_id: str) -> RotatingLog | None:
    path = Path(files.dir) / f"{instance_id}.log"
    try:
        return RotatingLog(path, files.max_bytes, files.backups)
    except OSError as exc:
        log.error("%s: cannot open log file %s: %s", instance_id, path, exc)
        return None
