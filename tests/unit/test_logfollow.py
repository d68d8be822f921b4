"""`gafferctl logs -f`: numbered output becomes lines and in-place gaps, every line accounted for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.cli.logfollow import LogFollow, Shown, parse_since, render
from budget import examples

BASE = {"id": "web.1", "stream": "out", "node": "n1"}


def text_event(line: int, *texts: str) -> dict[str, Any]:
    return {**BASE, "line": line, "text": "\n".join(texts)}


def marker(line: int, skipped: int) -> dict[str, Any]:
    return {**BASE, "line": line, "skipped": skipped, "skipped_bytes": 2 * skipped}


def shown(items: list[Shown]) -> list[Any]:
    """Lines as their text, gaps as ("skip", N)."""
    return [item.text if item.text is not None else ("skip", item.skipped) for item in items]


class TestLogFollow:
    def test_contiguous_events_print_their_lines(self) -> None:
        """Lines that follow on print as they are, with their numbers."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a", "b")) + follow.event(2.0, text_event(3, "c"))
        assert shown(out) == ["a", "b", "c"]
        assert [item.number for item in out] == [1, 2, 3]
        assert follow.skipped == 0

    def test_a_jump_in_numbers_prints_a_gap_in_place(self) -> None:
        """Lines lost without a marker (PUB, slow subscriber) show as a gap where they went."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a")) + follow.event(2.0, text_event(5, "e"))
        assert shown(out) == ["a", ("skip", 3), "e"]

    def test_a_marker_prints_its_count_once(self) -> None:
        """A marker in place is a gap; a marker for lines already counted as a gap adds nothing."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a"))
        out += follow.event(2.0, marker(2, 3))
        out += follow.event(3.0, text_event(5, "e"))
        assert shown(out) == ["a", ("skip", 3), "e"]
        late = LogFollow()
        out = late.event(1.0, text_event(1, "a")) + late.event(2.0, text_event(5, "e"))
        out += late.event(3.0, marker(2, 3))
        assert shown(out) == ["a", ("skip", 3), "e"]
        assert late.skipped == 3

    def test_a_marker_after_a_silent_loss_counts_both(self) -> None:
        """Lines 2-3 lost silently, 4-6 skipped with a marker: one gap of 5."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a")) + follow.event(2.0, marker(4, 3))
        assert shown(out) == ["a", ("skip", 5)]

    def test_recent_lines_join_live_ones_without_repeats(self) -> None:
        """Live lines already printed from the ring are left out the first time."""
        follow = LogFollow()
        rows = [{"id": "web.1", "stream": "out", "ts": 0.5, "node": "n1", "line": t, "number": n}
                for n, t in ((1, "a"), (2, "b"))]
        out = follow.recent(rows) + follow.event(1.0, text_event(2, "b", "c"))
        assert shown(out) == ["a", "b", "c"]

    def test_numbers_going_back_start_afresh(self) -> None:
        """An agent that restarted numbers from 1 again: its lines print, nothing is skipped."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a", "b")) + follow.event(2.0, text_event(1, "x"))
        out += follow.event(3.0, text_event(2, "y"))
        assert shown(out) == ["a", "b", "x", "y"]
        assert follow.skipped == 0

    def test_streams_and_instances_are_numbered_apart(self) -> None:
        """out and err, web.1 and web.2 each have their own numbers."""
        follow = LogFollow()
        out = follow.event(1.0, text_event(1, "a"))
        out += follow.event(1.0, {**BASE, "stream": "err", "line": 1, "text": "e"})
        out += follow.event(1.0, {**BASE, "id": "web.2", "line": 7, "text": "w"})
        out += follow.event(1.0, text_event(2, "b"))
        assert shown(out) == ["a", "e", "w", "b"]

    def test_unnumbered_output_prints_as_it_comes(self) -> None:
        """Events without line numbers (an older agent): lines print, markers give their count."""
        follow = LogFollow()
        out = follow.event(1.0, {**BASE, "text": "a"}) + follow.event(2.0, {**BASE, "skipped": 4})
        assert shown(out) == ["a", ("skip", 4)]

    def test_json_form_says_the_node(self) -> None:
        """--json lines and gaps carry id, stream, ts and node."""
        follow = LogFollow()
        line, gap = follow.event(1.0, text_event(3, "c"))[0], follow.event(2.0, text_event(9, "i"))[0]
        assert line.to_dict() == {"id": "web.1", "stream": "out", "ts": 1.0, "node": "n1", "line": "c", "number": 3}
        assert gap.to_dict() == {"id": "web.1", "stream": "out", "ts": 2.0, "node": "n1", "skipped": 5}

    @settings(max_examples=examples(300), deadline=None)
    @given(
        st.lists(st.tuples(st.integers(1, 6), st.sampled_from(["send", "mark", "lose"])), max_size=40),
    )
    def test_every_line_is_printed_or_counted_once(self, runs: list[tuple[int, str]]) -> None:
        """After a first line, any mix of delivered runs, marked skips and silent losses:
        printed + skipped = written."""
        follow = LogFollow()
        follow.event(0.0, text_event(1, "first"))
        line, printed = 2, [1]
        for size, fate in runs:
            if fate == "send":
                printed += range(line, line + size)
                items = follow.event(0.0, text_event(line, *(str(i) for i in range(line, line + size))))
                assert [int(item.text) for item in items if item.text is not None] == list(range(line, line + size))
            elif fate == "mark":
                follow.event(0.0, marker(line, size))
            line += size
        follow.event(0.0, text_event(line, "end"))
        assert len(printed) + follow.skipped == line - 1


class TestParseSince:
    @pytest.mark.parametrize(
        ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("2d", 172800.0)]
    )
    def test_durations(self, text: str, seconds: float) -> None:
        """Seconds, minutes, hours, days."""
        assert parse_since(text) == seconds

    @pytest.mark.parametrize(
        ("text", "problem"),
        [("", "expected a duration"), ("10x", "expected a duration"), ("-5m", "expected a duration"),
         ("0", "more than 0"), ("31d", "at most 30d"), ("1e9", "expected a duration"),
         ("9" * 400, "at most 30d")],
    )
    def test_bad_durations_say_what_is_wrong(self, text: str, problem: str) -> None:
        """Malformed, zero, too long: a one-line error."""
        with pytest.raises(ValueError, match=problem):
            parse_since(text)


class TestRender:
    def test_human_lines_and_gaps(self) -> None:
        """id | text on stdout; gaps on stderr in place, runs joined."""
        follow = LogFollow()
        items = follow.event(1.0, text_event(1, "a", "b")) + follow.event(2.0, text_event(5, "e"))
        assert render(items, with_id=True, as_json=False) == [
            ("web.1 | a\nweb.1 | b\n", False), ("web.1 | [2 lines skipped]\n", True), ("web.1 | e\n", False),
        ]

    def test_one_instance_sends_err_lines_to_stderr(self) -> None:
        """Without ids, an instance's err lines go to stderr, bare."""
        follow = LogFollow()
        items = follow.event(1.0, {**BASE, "stream": "err", "line": 1, "text": "oops"})
        items += follow.event(1.0, text_event(1, "ok"))
        assert render(items, with_id=False, as_json=False) == [("oops\n", True), ("ok\n", False)]

    def test_json_is_one_object_per_line_or_gap(self) -> None:
        """--json: every line and every gap is an object on stdout."""
        follow = LogFollow()
        items = follow.event(1.0, text_event(1, "a")) + follow.event(2.0, text_event(4, "d"))
        (text, err), = render(items, with_id=True, as_json=True)
        objects = [json.loads(row) for row in text.splitlines()]
        assert not err and [o.get("line", o.get("skipped")) for o in objects] == ["a", 2, "d"]
        assert {o["node"] for o in objects} == {"n1"}
