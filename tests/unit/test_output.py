"""Captured output: splitting bytes into lines, the bounded ring buffer, rotated log files."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent import output
from gaffer.agent.output import (
    MAX_LINE,
    Chunk,
    Line,
    LineSplitter,
    RingBuffer,
    RotatingLog,
    format_log_chunk,
    format_log_line,
)
from budget import examples


class SimpleSplitter:
    """The reference: one line at a time, as obviously right as possible (the bulk splitter
    must give exactly these lines for any chunking of the same bytes)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        if not data:
            rest, self._partial = self._partial, b""
            return self._pieces(rest) if rest else []
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()
        lines = []
        for part in parts:
            lines.extend(self._pieces(part[:-1] if part.endswith(b"\r") else part))
        while len(self._partial) > output.MAX_LINE + 1:
            lines.append(self._partial[: output.MAX_LINE].decode("utf-8", "replace"))
            self._partial = self._partial[output.MAX_LINE :]
        return lines

    @staticmethod
    def _pieces(raw: bytes) -> list[str]:
        size = output.MAX_LINE
        return [raw[i : i + size].decode("utf-8", "replace") for i in range(0, max(len(raw), 1), size)]


def lines_of(block: str | None) -> list[str]:
    return [] if block is None else block.split("\n")


def split_all(chunks: list[bytes]) -> list[str]:
    """Feed every chunk, then EOF, and collect every line."""
    splitter = LineSplitter()
    lines: list[str] = []
    for chunk in chunks:
        lines.extend(lines_of(splitter.feed(chunk)))
    return lines + lines_of(splitter.feed(b""))


def split_simply(chunks: list[bytes]) -> list[str]:
    splitter = SimpleSplitter()
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.feed(b"")


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


class TestLineSplitter:
    def test_partial_lines_join_across_chunks(self) -> None:
        """A line is emitted once its newline arrives, whatever the chunking."""
        splitter = LineSplitter()
        assert splitter.feed(b"hel") is None
        assert splitter.feed(b"lo\nwor") == "hello"
        assert splitter.feed(b"ld\n") == "world"

    def test_several_lines_in_one_chunk_and_empty_lines(self) -> None:
        """Blank lines are lines too: one block carries them all, joined by newlines."""
        assert LineSplitter().feed(b"a\n\nb\n") == "a\n\nb"
        assert LineSplitter().feed(b"\n") == ""

    def test_crlf_is_one_line_ending(self) -> None:
        """CRLF ends a line like LF, even when split between chunks."""
        assert split_all([b"a\r\nb\r", b"\nc\n"]) == ["a", "b", "c"]

    def test_carriage_returns_inside_a_line_are_kept(self) -> None:
        """Only the CR of a CRLF is removed; progress-bar CRs stay in the text."""
        assert split_all([b"10%\r50%\r100%\n", b"x\r\r\n"]) == ["10%\r50%\r100%", "x\r"]

    def test_invalid_utf8_is_replaced(self) -> None:
        """Bytes that are not UTF-8 become U+FFFD instead of failing."""
        assert split_all([b"ok \xff\xfe bad\n"]) == ["ok \ufffd\ufffd bad"]

    def test_multibyte_character_split_across_chunks_survives(self) -> None:
        """Decoding happens per line, so a character cut by the pipe is not mangled."""
        encoded = "héllo €\n".encode()
        assert split_all([encoded[:2], encoded[2:8], encoded[8:]]) == ["héllo €"]

    def test_eof_flushes_the_unfinished_line(self) -> None:
        """At EOF the last line without newline comes out, and only once."""
        splitter = LineSplitter()
        assert splitter.feed(b"done\nno newline") == "done"
        assert splitter.feed(b"") == "no newline"
        assert splitter.feed(b"") is None

    def test_long_unfinished_line_is_cut_at_max_line(self) -> None:
        """A line that never ends comes out in MAX_LINE pieces instead of growing without bound."""
        splitter = LineSplitter()
        out = splitter.feed(b"x" * (2 * MAX_LINE + 10))
        assert lines_of(out) == ["x" * MAX_LINE, "x" * MAX_LINE]
        assert splitter.feed(b"y\n") == "x" * 10 + "y"

    def test_long_line_among_short_ones_in_one_read_is_cut(self) -> None:
        """One over-long line in a block of short ones is cut; its neighbours are untouched."""
        block = b"a\n" * 3 + b"L" * (MAX_LINE + 5) + b"\n" + b"b\n"
        assert split_all([block]) == ["a"] * 3 + ["L" * MAX_LINE, "L" * 5, "b"]

    def test_a_flood_of_short_lines_is_one_block_per_read(self) -> None:
        """256 KiB of two-byte lines come back as one string, not a Python object per line."""
        block = LineSplitter().feed(b"y\n" * 131072)
        assert isinstance(block, str) and len(block) == 2 * 131072 - 1

    def test_long_complete_line_in_one_chunk_is_cut_too(self) -> None:
        """A huge line arriving in one read is cut at the same MAX_LINE boundaries."""
        assert split_all([b"z" * (MAX_LINE * 2 + 1) + b"\n"]) == ["z" * MAX_LINE] * 2 + ["z"]

    def test_line_of_exactly_max_line_is_one_line(self) -> None:
        """MAX_LINE bytes fit in one line, also when its CRLF straddles two reads."""
        assert split_all([b"a" * MAX_LINE + b"\r", b"\n"]) == ["a" * MAX_LINE]
        assert split_all([b"a" * MAX_LINE + b"\r\n"]) == ["a" * MAX_LINE]

    @settings(max_examples=examples(200), deadline=None)
    @given(
        st.lists(
            st.sampled_from([b"a", b"\xc3\xa9", b"\n", b"\r", b"\r\n", b"\xff", b"bcdefg"]), max_size=40
        ),
        st.lists(st.integers(0, 60), max_size=8),
    )
    def test_chunking_never_changes_the_lines(self, tokens: list[bytes], cuts: list[int]) -> None:
        """Any split of the same bytes yields the same lines, none longer than MAX_LINE."""
        stream = b"".join(tokens)
        chunks = chunked(stream, cuts)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(output, "MAX_LINE", 8)  # small, so cuts happen in short examples
            whole = split_all([stream] if stream else [])
            assert split_all(chunks) == whole
        assert all(len(line) <= 8 for line in whole)
        if b"\r" not in stream and b"\xff" not in stream and len(stream) <= 8:
            assert "\n".join(whole) == stream.decode().removesuffix("\n")

    @settings(max_examples=examples(500), deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [b"a", b"xyz", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f\x98", b"\x80",
                 b"\n", b"\r", b"\r\n", b"\n\n", b"\xff", b"0123456789"]
            ),
            max_size=60,
        ),
        st.lists(st.integers(0, 200), max_size=12),
        st.integers(1, 12),
    )
    def test_bulk_splitter_gives_the_simple_splitters_lines(
        self, tokens: list[bytes], cuts: list[int], max_line: int
    ) -> None:
        """For any bytes, any chunking and any MAX_LINE: exactly the lines of the reference."""
        stream = b"".join(tokens)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(output, "MAX_LINE", max_line)
            reference = split_simply([stream] if stream else [])
            assert split_all(chunked(stream, cuts)) == reference
            assert split_all([bytes([b]) for b in stream]) == reference


def line(text: str, stream: str = "out", ts: float = 0.0) -> Line:
    return Line(ts, stream, text)


class TestRingBuffer:
    def test_oldest_lines_are_dropped_past_the_bound(self) -> None:
        """Text plus one byte per line stays within max_bytes."""
        ring = RingBuffer(max_bytes=10)
        for text in ["aaaa", "bbbb", "cccc"]:
            ring.append(line(text))
        assert [ln.text for ln in ring.tail()] == ["bbbb", "cccc"]
        assert len(ring) == 2

    def test_a_chunk_is_trimmed_line_by_line(self) -> None:
        """Past the bound, leading lines of the oldest chunk go, not the whole chunk."""
        ring = RingBuffer(max_bytes=9)
        ring.add(Chunk(1.0, "out", "aa\nbb\ncc"))
        ring.add(Chunk(2.0, "err", "dd\nee"))
        assert [(ln.ts, ln.stream, ln.text) for ln in ring.tail()] == [
            (1.0, "out", "cc"), (2.0, "err", "dd"), (2.0, "err", "ee"),
        ]
        assert len(ring) == 3

    def test_a_single_huge_line_is_kept(self) -> None:
        """The newest line always stays, even if it alone exceeds the bound."""
        ring = RingBuffer(max_bytes=4)
        ring.append(line("short"))
        ring.append(line("x" * 100))
        assert [ln.text for ln in ring.tail()] == ["x" * 100]
        ring.add(Chunk(0.0, "out", "a\nb\n" + "y" * 100))
        assert [ln.text for ln in ring.tail()] == ["y" * 100]

    def test_tail_by_count_and_stream(self) -> None:
        """tail(count, stream) gives the last count lines of that stream, oldest first."""
        ring = RingBuffer()
        for i in range(6):
            ring.append(line(f"{i}", "out" if i % 2 == 0 else "err"))
        assert [ln.text for ln in ring.tail(2)] == ["4", "5"]
        assert [ln.text for ln in ring.tail(2, "err")] == ["3", "5"]
        assert [ln.text for ln in ring.tail(None, "out")] == ["0", "2", "4"]
        assert [ln.text for ln in ring.tail(100)] == [str(i) for i in range(6)]
        assert ring.tail(0) == [] and ring.tail(-3) == []
        assert ring.tail(stream="nope") == []

    @settings(max_examples=examples(300), deadline=None)
    @given(
        st.integers(1, 50),
        st.lists(
            st.tuples(st.lists(st.text(alphabet="ab\r\u00e9", max_size=8), min_size=1, max_size=5),
                      st.sampled_from(["out", "err"])),
            max_size=20,
        ),
        st.one_of(st.none(), st.integers(-1, 60)),
        st.sampled_from([None, "out", "err"]),
    )
    def test_ring_holds_the_suffix_a_line_at_a_time_ring_would(
        self, max_bytes: int, chunks: list[tuple[list[str], str]], count: int | None, stream: str | None
    ) -> None:
        """Fed in chunks, the ring holds the newest lines that fit, as if fed line by line."""
        ring = RingBuffer(max_bytes=max_bytes)
        appended: list[Line] = []
        for ts, (texts, s) in enumerate(chunks):
            ring.add(Chunk(float(ts), s, "\n".join(texts)))
            appended.extend(Line(float(ts), s, text) for text in texts)
        kept: list[Line] = []
        size = 0
        for ln in reversed(appended):
            if kept and size + len(ln.text) + 1 > max_bytes:
                break
            kept.insert(0, ln)
            size += len(ln.text) + 1
        assert ring.tail() == kept
        assert len(ring) == len(kept)
        expected = [ln for ln in kept if stream is None or ln.stream == stream]
        if count is not None:
            expected = expected[-count:] if count > 0 else []
        assert ring.tail(count, stream) == expected


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (out|err) .*\n")


class TestLogFormat:
    @pytest.mark.parametrize(
        ("ts", "stamp"),
        [
            (0.0, "1970-01-01T00:00:00.000Z"),
            (0.5, "1970-01-01T00:00:00.500Z"),
            (1.001, "1970-01-01T00:00:01.001Z"),
            (1700000000.123, "2023-11-14T22:13:20.123Z"),
            (1700000000.9996, "2023-11-14T22:13:20.999Z"),
        ],
    )
    def test_timestamp_is_utc_with_milliseconds(self, ts: float, stamp: str) -> None:
        """Each line reads ``YYYY-MM-DDTHH:MM:SS.mmmZ stream text``; milliseconds truncate."""
        assert format_log_line(Line(ts, "err", "boom")) == f"{stamp} err boom\n"

    @settings(max_examples=examples(200), deadline=None)
    @given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
    def test_any_timestamp_matches_the_format(self, ts: float) -> None:
        """The stamp always has the fixed shape."""
        assert LOG_LINE.fullmatch(format_log_line(Line(ts, "out", "x")))

    def test_line_to_dict(self) -> None:
        """The wire form of a line."""
        assert Line(1.5, "out", "hi", 7).to_dict() == {"ts": 1.5, "stream": "out", "line": "hi", "number": 7}

    @settings(max_examples=examples(200), deadline=None)
    @given(
        st.lists(
            st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=10), min_size=1, max_size=8
        ),
        st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
    )
    def test_a_chunk_formats_as_its_lines_would(self, texts: list[str], ts: float) -> None:
        """format_log_chunk is format_log_line of each line, in one string operation."""
        expected = "".join(format_log_line(Line(ts, "err", text)) for text in texts)
        assert format_log_chunk(Chunk(ts, "err", "\n".join(texts))) == expected.encode("utf-8", "replace")


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def texts(lines: list[str]) -> list[str]:
    return [ln.split(" ", 2)[2] for ln in lines]


def write_lines(log: RotatingLog, lines: list[Line]) -> None:
    """Each run of lines of one stream and time as one chunk, as the Manager writes them."""
    start = 0
    for end in range(1, len(lines) + 1):
        if end == len(lines) or (lines[end].ts, lines[end].stream) != (lines[start].ts, lines[start].stream):
            text = "\n".join(ln.text for ln in lines[start:end])
            log.write_chunk(Chunk(lines[start].ts, lines[start].stream, text))
            start = end


class TestRotatingLog:
    LINE_BYTES = len(format_log_line(Line(0.0, "out", "line-000")))

    def write_numbered(self, log: RotatingLog, count: int, batch: int = 1) -> None:
        numbered = [Line(1700000000.0 + i // batch, "out", f"line-{i:03d}") for i in range(count)]
        for start in range(0, count, batch):
            write_lines(log, numbered[start : start + batch])

    @pytest.mark.parametrize("batch", [1, 7])
    def test_rotation_keeps_backups_and_newest_lines_in_order(self, tmp_path: Path, batch: int) -> None:
        """Past max_bytes the file shifts to .1 ... .N; no file passes max_bytes; order holds."""
        path = tmp_path / "logs" / "web.1.log"
        per_file = 1024 // self.LINE_BYTES
        log = RotatingLog(path, max_bytes=1024, backups=3)
        self.write_numbered(log, per_file * 6 + 5, batch)
        log.close()
        files = [path.with_name(f"web.1.log.{i}") for i in (3, 2, 1)] + [path]
        assert all(f.exists() and f.stat().st_size <= 1024 for f in files)
        assert not path.with_name("web.1.log.4").exists()
        kept = texts([ln for f in files for ln in read_lines(f)])
        total = per_file * 6 + 5
        assert kept == [f"line-{i:03d}" for i in range(total - len(kept), total)]
        assert len(read_lines(path)) == 5
        assert all(len(read_lines(f)) == per_file for f in files[:-1])
        assert log.errors == 0

    def test_backups_zero_truncates_in_place(self, tmp_path: Path) -> None:
        """Without backups the file starts over and no .1 appears."""
        path = tmp_path / "web.1.log"
        per_file = 1024 // self.LINE_BYTES
        log = RotatingLog(path, max_bytes=1024, backups=0)
        self.write_numbered(log, per_file + 2)
        log.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["web.1.log"]
        assert texts(read_lines(path)) == [f"line-{per_file:03d}", f"line-{per_file + 1:03d}"]

    def test_existing_file_size_counts_after_reopen(self, tmp_path: Path) -> None:
        """A log reopened after a restart appends and still rotates at max_bytes."""
        path = tmp_path / "web.1.log"
        per_file = 1024 // self.LINE_BYTES
        first = RotatingLog(path, max_bytes=1024, backups=1)
        self.write_numbered(first, per_file)
        first.close()
        second = RotatingLog(path, max_bytes=1024, backups=1)
        write_lines(second, [Line(0.0, "err", "after restart")])
        second.close()
        assert len(read_lines(path.with_name("web.1.log.1"))) == per_file
        assert texts(read_lines(path)) == ["after restart"]

    def test_line_larger_than_max_bytes_gets_a_file_of_its_own(self, tmp_path: Path) -> None:
        """Lines are never split across files, even one bigger than the limit."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=2)
        write_lines(log, [Line(0.0, "out", "small")])
        write_lines(log, [Line(0.0, "out", "B" * 2000)])
        log.close()
        assert texts(read_lines(path.with_name("web.1.log.1"))) == ["small"]
        assert texts(read_lines(path)) == ["B" * 2000]

    def test_every_line_has_stamp_stream_and_text(self, tmp_path: Path) -> None:
        """The file holds one formatted line per captured line, both streams mixed."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=1)
        write_lines(log, [Line(0.25, "out", "hello"), Line(0.5, "err", "oops é")])
        log.close()
        assert path.read_text() == (
            "1970-01-01T00:00:00.250Z out hello\n1970-01-01T00:00:00.500Z err oops é\n"
        )

    def test_writes_after_close_are_ignored(self, tmp_path: Path) -> None:
        """A closed log drops lines instead of raising into the Manager."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=1)
        log.close()
        write_lines(log, [Line(0.0, "out", "late")])
        log.close()
        assert path.read_text() == ""


def test_rotating_log_recovers_after_its_directory_vanishes(tmp_path: Path) -> None:
    """A failed write is counted and logging resumes once the directory is back."""
    import shutil

    directory = tmp_path / "logs"
    log = RotatingLog(directory / "a.log", max_bytes=64, backups=1)
    write_lines(log, [Line(0.0, "out", "x" * 40)])
    shutil.rmtree(directory)
    write_lines(log, [Line(0.0, "out", "y" * 40)])
    assert log.errors == 1
    write_lines(log, [Line(0.0, "out", "z")])
    assert (directory / "a.log").read_text().endswith("out z\n")
    log.close()


class LineAtATimeLog:
    """The reference for rotation: a line goes to the current file if it fits or the file is
    empty, else the file rotates first (files kept as lists of lines)."""

    def __init__(self, max_bytes: int, backups: int) -> None:
        self.max_bytes = max_bytes
        self.backups = backups
        self.files: list[list[bytes]] = [[]]

    def write(self, blob: bytes) -> None:
        size = sum(map(len, self.files[-1]))
        if size and size + len(blob) > self.max_bytes:
            self.files.append([])
        self.files[-1].append(blob)

    def kept(self) -> list[bytes]:
        return [b"".join(f) for f in self.files[-(self.backups + 1) :]]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet="ab\u00e9", max_size=30), min_size=1, max_size=6), max_size=12),
    st.integers(40, 200),
    st.integers(0, 3),
)
def test_chunks_rotate_exactly_as_single_lines_would(
    chunks: list[list[str]], max_bytes: int, backups: int
) -> None:
    """Writing chunks gives the same files, byte for byte, as writing their lines one by one."""
    reference = LineAtATimeLog(max_bytes, backups)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.log"
        log = RotatingLog(path, max_bytes=max_bytes, backups=backups)
        for ts, texts_ in enumerate(chunks):
            log.write_chunk(Chunk(float(ts), "out", "\n".join(texts_)))
            for text in texts_:
                reference.write(format_log_line(Line(float(ts), "out", text)).encode())
        log.close()
        names = [path.with_name(f"a.log.{i}") for i in range(backups, 0, -1)] + [path]
        files = [f.read_bytes() for f in names if f.exists()]
        expected = reference.kept() if backups else reference.kept()[-1:]
        assert files == expected
