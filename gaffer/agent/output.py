"""Captured output: bytes from pipes become timestamped lines kept in a bounded ring buffer
and, optionally, in size-rotated log files.

Memory per instance is bounded (``RING_BYTES``) whatever the process prints, and a line
longer than ``MAX_LINE`` is cut into pieces rather than buffered without end.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

RING_BYTES = 256 * 1024
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Line:
    ts: float
    stream: str
    text: str

    def to_dict(self) -> dict:
        return {"ts": self.ts, "stream": self.stream, "line": self.text}


class LineSplitter:
    """Turns a byte stream into complete lines; keeps at most MAX_LINE + 1 bytes of a partial one.

    A line ends at "\n" or "\r\n". Lines longer than MAX_LINE come out in MAX_LINE pieces,
    cut at the same places however the stream was chunked (one spare byte is held back so a
    "\r" at a cut can still turn out to be half of a "\r\n").
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        """Lines completed by ``data``; ``b""`` means EOF and flushes the unfinished line."""
        if not data:
            rest, self._partial = self._partial, b""
            return _pieces(rest) if rest else []
        chunk = self._partial + data
        parts = chunk.split(b"\n")
        self._partial = parts.pop()
        lines = []
        for part in parts:
            lines.extend(_pieces(part[:-1] if part.endswith(b"\r") else part))
        while len(self._partial) > MAX_LINE + 1:
            lines.append(_decode(self._partial[:MAX_LINE]))
            self._partial = self._partial[MAX_LINE:]
        return lines


def _pieces(raw: bytes) -> list[str]:
    return [_decode(raw[start : start + MAX_LINE]) for start in range(0, max(len(raw), 1), MAX_LINE)]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class RingBuffer:
    """The most recent lines of one instance, at most ``max_bytes`` of text in all."""

    def __init__(self, max_bytes: int = RING_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lines: collections.deque[Line] = collections.deque()
        self._size = 0
        self.dropped = 0

    def append(self, line: Line) -> None:
        self._lines.append(line)
        self._size += len(line.text) + 1
        while self._size > self.max_bytes and len(self._lines) > 1:
            old = self._lines.popleft()
            self._size -= len(old.text) + 1
            self.dropped += 1

    def tail(self, count: int | None = None, stream: str | None = None) -> list[Line]:
        lines = [ln for ln in self._lines if stream is None or ln.stream == stream]
        if count is not None:
            lines = lines[-count:] if count > 0 else []
        return lines

    def __len__(self) -> int:
        return len(self._lines)


def format_log_line(line: Line) -> str:
    # to the microsecond first: 1.001 is stored as 1.000999..., which must still print .001
    seconds, millis = divmod(round(line.ts * 1_000_000) // 1000, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z {line.stream} {line.text}\n"


class RotatingLog:
    """Appends timestamped lines to ``path``; past ``max_bytes`` it shifts path -> path.1 ...

    ``backups`` old files are kept; ``backups = 0`` truncates in place instead. A write or a
    rotation that fails (disk full, directory removed) is counted in ``errors`` and the file
    is reopened on the next write, so logging resumes once the cause is gone.
    """

    def __init__(self, path: str | Path, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.errors = 0
        self._closed = False
        self._file: BinaryIO | None = None
        self._size = 0
        self._open("ab")

    def _open(self, mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, mode, buffering=0)
        self._size = self._file.tell()

    def write_lines(self, lines: list[Line]) -> None:
        """Append ``lines``, rotating before any line that would push the file past max_bytes."""
        if self._closed:
            return
        pending: list[bytes] = []
        pending_size = 0
        try:
            if self._file is None:
                self._open("ab")
            for line in lines:
                blob = format_log_line(line).encode("utf-8", errors="replace")
                if self._size + pending_size and self._size + pending_size + len(blob) > self.max_bytes:
                    self._flush(pending)
                    pending, pending_size = [], 0
                    self._rotate()
                pending.append(blob)
                pending_size += len(blob)
            self._flush(pending)
        except OSError:
            self.errors += 1
            self._drop_file()

    def _flush(self, blobs: list[bytes]) -> None:
        if blobs and self._file is not None:
            data = b"".join(blobs)
            self._file.write(data)
            self._size += len(data)

    def _rotate(self) -> None:
        self._drop_file()
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self._open("ab")
        else:
            self._open("wb")

    def _drop_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def close(self) -> None:
        self._closed = True
        self._drop_file()
