"""Captured output: splitting bytes into lines, the bounded ring buffer, rotated log files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent import output
from gaffer.agent.output import MAX_LINE, Line, LineSplitter, RingBuffer, RotatingLog, format_log_line


def split_all(chunks: list[bytes]) -> list[str]:
    """Feed every chunk, then EOF, and collect every line."""
    splitter = LineSplitter()
    lines: list[str] = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    return lines + splitter.feed(b"")


class TestLineSplitter:
    def test_partial_lines_join_across_chunks(self) -> None:
        """A line is emitted once its newline arrives, whatever the chunking."""
        splitter = LineSplitter()
        assert splitter.feed(b"hel") == []
        assert splitter.feed(b"lo\nwor") == ["hello"]
        assert splitter.feed(b"ld\n") == ["world"]

    def test_several_lines_in_one_chunk_and_empty_lines(self) -> None:
        """Blank lines are lines too."""
        assert LineSplitter().feed(b"a\n\nb\n") == ["a", "", "b"]

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
        assert splitter.feed(b"done\nno newline") == ["done"]
        assert splitter.feed(b"") == ["no newline"]
        assert splitter.feed(b"") == []

    def test_long_unfinished_line_is_cut_at_max_line(self) -> None:
        """A line that never ends comes out in MAX_LINE pieces instead of growing without bound."""
        splitter = LineSplitter()
        out = splitter.feed(b"x" * (2 * MAX_LINE + 10))
        assert out == ["x" * MAX_LINE, "x" * MAX_LINE]
        assert splitter.feed(b"y\n") == ["x" * 10 + "y"]

    def test_long_complete_line_in_one_chunk_is_cut_too(self) -> None:
        """A huge line arriving in one read is cut at the same MAX_LINE boundaries."""
        assert split_all([b"z" * (MAX_LINE * 2 + 1) + b"\n"]) == ["z" * MAX_LINE] * 2 + ["z"]

    def test_line_of_exactly_max_line_is_one_line(self) -> None:
        """MAX_LINE bytes fit in one line, also when its CRLF straddles two reads."""
        assert split_all([b"a" * MAX_LINE + b"\r", b"\n"]) == ["a" * MAX_LINE]
        assert split_all([b"a" * MAX_LINE + b"\r\n"]) == ["a" * MAX_LINE]

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.sampled_from([b"a", b"\xc3\xa9", b"\n", b"\r", b"\r\n", b"\xff", b"bcdefg"]), max_size=40
        ),
        st.lists(st.integers(0, 60), max_size=8),
    )
    def test_chunking_never_changes_the_lines(self, tokens: list[bytes], cuts: list[int]) -> None:
        """Any split of the same bytes yields the same lines, none longer than MAX_LINE."""
        stream = b"".join(tokens)
        bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
        chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(output, "MAX_LINE", 8)  # small, so cuts happen in short examples
            whole = split_all([stream] if stream else [])
            assert split_all(chunks) == whole
        assert all(len(line) <= 8 for line in whole)
        if b"\r" not in stream and b"\xff" not in stream and len(stream) <= 8:
            assert "\n".join(whole) == stream.decode().removesuffix("\n")


def line(text: str, stream: str = "out", ts: float = 0.0) -> Line:
    return Line(ts, stream, text)


class TestRingBuffer:
    def test_oldest_lines_are_dropped_past_the_bound(self) -> None:
        """Text plus one byte per line stays within max_bytes; the overflow is counted."""
        ring = RingBuffer(max_bytes=10)
        for text in ["aaaa", "bbbb", "cccc"]:
            ring.append(line(text))
        assert [ln.text for ln in ring.tail()] == ["bbbb", "cccc"]
        assert ring.dropped == 1
        assert len(ring) == 2

    def test_a_single_huge_line_is_kept(self) -> None:
        """The newest line always stays, even if it alone exceeds the bound."""
        ring = RingBuffer(max_bytes=4)
        ring.append(line("short"))
        ring.append(line("x" * 100))
        assert [ln.text for ln in ring.tail()] == ["x" * 100]

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

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(1, 50),
        st.lists(st.tuples(st.text(max_size=12), st.sampled_from(["out", "err"])), max_size=40),
        st.one_of(st.none(), st.integers(-1, 50)),
        st.sampled_from([None, "out", "err"]),
    )
    def test_ring_holds_a_bounded_suffix(
        self, max_bytes: int, items: list[tuple[str, str]], count: int | None, stream: str | None
    ) -> None:
        """The ring holds the newest lines that fit; tail filters that suffix."""
        ring = RingBuffer(max_bytes=max_bytes)
        appended = [line(text, s) for text, s in items]
        for ln in appended:
            ring.append(ln)
        held = ring.tail()
        assert held == appended[len(appended) - len(held) :]
        assert sum(len(ln.text) + 1 for ln in held) <= max_bytes or len(held) == 1
        assert ring.dropped == len(appended) - len(held)
        if len(held) < len(appended):
            dropped_last = appended[len(appended) - len(held) - 1]
            assert sum(len(ln.text) + 1 for ln in [dropped_last, *held]) > max_bytes
        expected = [ln for ln in held if stream is None or ln.stream == stream]
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

    @settings(max_examples=200, deadline=None)
    @given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
    def test_any_timestamp_matches_the_format(self, ts: float) -> None:
        """The stamp always has the fixed shape."""
        assert LOG_LINE.fullmatch(format_log_line(Line(ts, "out", "x")))

    def test_line_to_dict(self) -> None:
        """The wire form of a line."""
        assert Line(1.5, "out", "hi").to_dict() == {"ts": 1.5, "stream": "out", "line": "hi"}


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def texts(lines: list[str]) -> list[str]:
    return [ln.split(" ", 2)[2] for ln in lines]


class TestRotatingLog:
    LINE_BYTES = len(format_log_line(Line(0.0, "out", "line-000")))

    def write_numbered(self, log: RotatingLog, count: int, batch: int = 1) -> None:
        numbered = [Line(1700000000.0 + i, "out", f"line-{i:03d}") for i in range(count)]
        for start in range(0, count, batch):
            log.write_lines(numbered[start : start + batch])

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
        second.write_lines([Line(0.0, "err", "after restart")])
        second.close()
        assert len(read_lines(path.with_name("web.1.log.1"))) == per_file
        assert texts(read_lines(path)) == ["after restart"]

    def test_line_larger_than_max_bytes_gets_a_file_of_its_own(self, tmp_path: Path) -> None:
        """Lines are never split across files, even one bigger than the limit."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=2)
        log.write_lines([Line(0.0, "out", "small")])
        log.write_lines([Line(0.0, "out", "B" * 2000)])
        log.close()
        assert texts(read_lines(path.with_name("web.1.log.1"))) == ["small"]
        assert texts(read_lines(path)) == ["B" * 2000]

    def test_every_line_has_stamp_stream_and_text(self, tmp_path: Path) -> None:
        """The file holds one formatted line per captured line, both streams mixed."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=1)
        log.write_lines([Line(0.25, "out", "hello"), Line(0.5, "err", "oops é")])
        log.close()
        assert path.read_text() == (
            "1970-01-01T00:00:00.250Z out hello\n1970-01-01T00:00:00.500Z err oops é\n"
        )

    def test_writes_after_close_are_ignored(self, tmp_path: Path) -> None:
        """A closed log drops lines instead of raising into the Manager."""
        path = tmp_path / "web.1.log"
        log = RotatingLog(path, max_bytes=1024, backups=1)
        log.close()
        log.write_lines([Line(0.0, "out", "late")])
        log.close()
        assert path.read_text() == ""


def test_rotating_log_recovers_after_its_directory_vanishes(tmp_path: Path) -> None:
    """A failed write is counted and logging resumes once the directory is back."""
    import shutil

    from gaffer.agent.output import Line, RotatingLog

    directory = tmp_path / "logs"
    log = RotatingLog(directory / "a.log", max_bytes=64, backups=1)
    log.write_lines([Line(0.0, "out", "x" * 40)])
    shutil.rmtree(directory)
    log.write_lines([Line(0.0, "out", "y" * 40)])
    assert log.errors == 1
    log.write_lines([Line(0.0, "out", "z")])
    assert (directory / "a.log").read_text().endswith("out z\n")
    log.close()
