"""Captured output: bytes from pipes become timestamped blocks of lines, kept in a bounded ring
buffer and, optionally, in size-rotated log files.

A process can print far faster than Python can handle one object per line (``yes`` writes
tens of millions of two-byte lines a second), so everything here works on *chunks*: the
complete lines of one read, decoded and kept as one string joined by ``"\\n"``. Splitting,
decoding, stripping ``\\r``, formatting log lines and trimming the ring are done with bulk
``bytes``/``str`` methods, so the cost per line is a few machine instructions in C, not a
Python object. Individual ``Line`` objects are only made for what a reader asks for (``tail``).

Memory per instance is bounded (``RING_BYTES``) whatever the process prints, and a line
longer than ``MAX_LINE`` is cut into pieces rather than buffered without end.
"""

from __future__ import annotations

import collections
import errno
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
    number: int = 0
    """Its number in its instance's stream, from 1 (0: a line gaffer added, not the process's)."""

    def to_dict(self) -> dict:
        return {"ts": self.ts, "stream": self.stream, "line": self.text, "number": self.number}


@dataclass(frozen=True, slots=True)
class Chunk:
    """Lines of one stream captured together: ``text`` is them joined by ``"\\n"`` (no
    trailing newline; ``""`` is one empty line). Lines never contain ``"\\n"``.

    ``last`` is the number of its last line in its instance's stream (0: not numbered, a note
    of gaffer's own). The ring trims chunks from the front, which leaves ``last`` exact, so
    that is the number a chunk keeps; ``first`` counts back from it when asked.
    """

    ts: float
    stream: str
    text: str
    last: int = 0

    @property
    def first(self) -> int:
        return self.last - self.text.count("\n") if self.last else 0

    @property
    def count(self) -> int:
        return self.text.count("\n") + 1

    def lines(self) -> list[Line]:
        texts = self.text.split("\n")
        first = self.last - len(texts) + 1 if self.last else 0
        return [
            Line(self.ts, self.stream, text, first + i if first else 0) for i, text in enumerate(texts)
        ]


class LineSplitter:
    """Turns a byte stream into blocks of complete lines; keeps at most MAX_LINE + 1 bytes of a
    partial one.

    A line ends at "\\n" or "\\r\\n". Lines longer than MAX_LINE come out in MAX_LINE pieces,
    cut at the same places however the stream was chunked (one spare byte is held back so a
    "\\r" at a cut can still turn out to be half of a "\\r\\n"). ``feed`` gives exactly the lines
    a line-at-a-time splitter would, joined by "\\n": decoding the block at once is the same as
    decoding each line, because "\\n" is never part of a multi-byte UTF-8 sequence, so an
    invalid sequence before it is replaced the same way either way.
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> str | None:
        """The lines completed by ``data`` joined by "\\n", or None if it completed none.

        ``b""`` means EOF and flushes the unfinished line.
        """
        if not data:
            rest, self._partial = self._partial, b""
            return "\n".join(_pieces(rest)) if rest else None
        buf = self._partial + data if self._partial else data
        end = buf.rfind(b"\n")
        blocks = []
        if end >= 0:
            blocks.append(_block(buf[:end]))
            self._partial = buf[end + 1 :]
        else:
            self._partial = buf
        while len(self._partial) > MAX_LINE + 1:
            blocks.append(_decode(self._partial[:MAX_LINE]))
            self._partial = self._partial[MAX_LINE:]
        if not blocks:
            return None
        return blocks[0] if len(blocks) == 1 else "\n".join(blocks)


def _block(raw: bytes) -> str:
    """Complete lines separated by "\\n" (the last one's newline already removed) as text."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    if len(raw) > MAX_LINE and _has_long_line(raw):
        return "\n".join(piece for line in raw.split(b"\n") for piece in _pieces(line))
    return _decode(raw)


def _has_long_line(raw: bytes) -> bool:
    """Whether a line of ``raw`` is longer than MAX_LINE: jumps from line to line a window of
    MAX_LINE at a time (a C search per window, not a Python step per line)."""
    start = 0
    while len(raw) - start > MAX_LINE:
        newline = raw.rfind(b"\n", start, start + MAX_LINE + 1)
        if newline < 0:
            return True
        start = newline + 1
    return False


def _pieces(raw: bytes) -> list[str]:
    return [_decode(raw[start : start + MAX_LINE]) for start in range(0, max(len(raw), 1), MAX_LINE)]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class RingBuffer:
    """The most recent lines of one instance, at most ``max_bytes`` of text in all.

    Each line counts its characters plus one (its newline). The newest line always stays, even
    alone past the bound. Chunks are kept as they came; when the bound is passed, whole chunks
    go first, then leading lines of the oldest one (cut with one string search). Lines are
    never counted on the way in (counting newlines costs more than decoding them); ``len``
    counts them when asked.
    """

    def __init__(self, max_bytes: int = RING_BYTES) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._size = 0

    def append(self, line: Line) -> None:
        """Add one line (a note of gaffer's own, for instance)."""
        self.add(Chunk(line.ts, line.stream, line.text))

    def add(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk.text) + 1
        while self._size > self.max_bytes and self._trim(self._size - self.max_bytes):
            pass

    def _trim(self, excess: int) -> bool:
        """Drop at least ``excess`` characters of the oldest lines; False if only the newest
        line is left."""
        oldest = self._chunks[0]
        text = oldest.text
        size = len(text) + 1
        cut = -1 if size <= excess else text.find("\n", excess - 1)
        if cut < 0 and len(self._chunks) > 1:
            self._chunks.popleft()
            self._size -= size
            return True
        if cut < 0:
            cut = text.rfind("\n")
            if cut < 0:
                return False
        self._chunks[0] = Chunk(oldest.ts, oldest.stream, text[cut + 1 :], oldest.last)
        self._size -= cut + 1
        return True

    def tail(self, count: int | None = None, stream: str | None = None) -> list[Line]:
        """The last ``count`` lines (all if None) of ``stream`` (both if None), oldest first."""
        if count is not None and count <= 0:
            return []
        newest_first: list[list[Line]] = []
        taken = 0
        for chunk in reversed(self._chunks):
            if stream is not None and chunk.stream != stream:
                continue
            if count is None:
                texts = chunk.text.split("\n")
            else:
                texts = chunk.text.rsplit("\n", count - taken)[-(count - taken) :]
            newest_first.append(_numbered(chunk, texts))
            taken += len(texts)
            if count is not None and taken >= count:
                break
        return [line for lines in reversed(newest_first) for line in lines]

    def __len__(self) -> int:
        return sum(chunk.count for chunk in self._chunks)


def _numbered(chunk: Chunk, texts: list[str]) -> list[Line]:
    """The last ``len(texts)`` lines of ``chunk`` with their numbers (counted back from its last)."""
    if not chunk.last:
        return [Line(chunk.ts, chunk.stream, text) for text in texts]
    first = chunk.last - len(texts) + 1
    return [Line(chunk.ts, chunk.stream, text, first + i) for i, text in enumerate(texts)]


def _stamp(ts: float) -> str:
    # to the microsecond first: 1.001 is stored as 1.000999..., which must still print .001
    seconds, millis = divmod(round(ts * 1_000_000) // 1000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def format_log_line(line: Line) -> str:
    return f"{_stamp(line.ts)} {line.stream} {line.text}\n"


def format_log_chunk(chunk: Chunk) -> bytes:
    """Every line of ``chunk`` as ``format_log_line`` writes it (one stamp: one read's time)."""
    buf, start, end = _log_block(chunk)
    return buf[start:end]


def _log_block(chunk: Chunk) -> tuple[bytes, int, int]:
    """``format_log_chunk`` as ``buf[start:end]``, made by one ``bytes.replace`` and never
    copied again (written through a memoryview).

    On bytes, the replace is about three times faster than on ``str``; that matters when every
    two-byte line of ``yes`` gets a 30-byte head and the block grows fifteenfold."""
    head = f"{_stamp(chunk.ts)} {chunk.stream} ".encode()
    raw = b"\n" + chunk.text.encode("utf-8", errors="replace") + b"\n"
    buf = raw.replace(b"\n", b"\n" + head)
    return buf, 1, len(buf) - len(head)


class RotatingLog:
    """Appends timestamped lines to ``path``; past ``max_bytes`` it shifts path -> path.1 ...

    ``backups`` old files are kept; ``backups = 0`` truncates in place instead. A line is never
    split across files: the file rotates before a line that would take it past ``max_bytes``
    (a line larger than that gets a file of its own). A write or a rotation that fails (disk
    full, directory removed) is counted in ``errors`` and the file is reopened on the next
    write, so logging resumes once the cause is gone.
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

    def write_chunk(self, chunk: Chunk) -> None:
        """Append the lines of ``chunk``, rotating before any line that would not fit."""
        if self._closed:
            return
        buf, start, end = _log_block(chunk)
        view = memoryview(buf)
        try:
            if self._file is None:
                self._open("ab")
            while start < end:
                room = self.max_bytes - self._size
                if end - start <= room:
                    self._write(view[start:end])
                    return
                cut = buf.rfind(b"\n", start, start + room) + 1 if room > 0 else 0
                if not cut and not self._size:
                    cut = buf.find(b"\n", start, end) + 1
                if cut:
                    self._write(view[start:cut])
                    start = cut
                if start < end:
                    self._rotate()
        except OSError:
            self.errors += 1
            self._drop_file()

    def _write(self, data: memoryview) -> None:
        assert self._file is not None
        written = os.write(self._file.fileno(), data)
        self._size += written
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write to {self.path} ({written} of {len(data)} bytes)")

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
