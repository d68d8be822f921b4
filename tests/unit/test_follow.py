"""Following output under a rate limit: token buckets, whole-line cuts, exact skip counts."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.follow import (
    RESUME,
    Allowance,
    Followers,
    Limit,
    cut,
    refill,
    room,
    spend,
    text_bytes,
)
from budget import examples

TOPIC = "output.web.1.out"
line_text = st.text(alphabet="ab\r\u00e9\u20ac", max_size=12)
texts = st.lists(line_text, min_size=1, max_size=12).map("\n".join)


def reference_cut(text: str, lines: int, nbytes: int) -> tuple[int, int]:
    """Lines and bytes of the longest run of whole leading lines within both budgets, one
    line at a time."""
    count = size = 0
    for line in text.split("\n"):
        cost = len(line.encode()) + 1
        if count + 1 > lines or size + cost > nbytes:
            break
        count += 1
        size += cost
    return count, size


class TestCut:
    @settings(max_examples=examples(500), deadline=None)
    @given(texts, st.integers(-1, 15), st.integers(-1, 120))
    def test_cut_takes_the_longest_run_of_whole_lines_that_fits(
        self, text: str, lines: int, nbytes: int
    ) -> None:
        """cut matches a line-at-a-time reference, and its end is where those lines stop."""
        end, count, size = cut(text, lines, nbytes)
        assert (count, size) == reference_cut(text, lines, nbytes)
        if count == 0:
            assert end == -1
        else:
            assert text[:end].split("\n") == text.split("\n")[:count]
            assert end == len(text) or text[end] == "\n"
            assert size == text_bytes(text[:end])

    def test_a_flood_is_cut_without_counting_every_line(self) -> None:
        """The first 3 of a million lines, by line budget and by byte budget."""
        flood = "y\n" * 1_000_000 + "y"
        assert cut(flood, 3, 10**9) == (5, 3, 6)
        assert cut(flood, 10**9, 7) == (5, 3, 6)


class TestBucket:
    def test_a_new_stream_starts_with_a_full_burst(self) -> None:
        """No allowance yet means a full one, at now."""
        limit = Limit(lines=10, bytes=100, burst=2)
        assert refill(limit, None, 5.0) == Allowance(20, 200, 5.0)

    def test_refill_is_capped_and_time_going_back_gives_nothing(self) -> None:
        """Tokens come at the rate, never past the burst; an earlier now adds none."""
        limit = Limit(lines=10, bytes=100)
        empty = Allowance(0, 0, 10.0)
        assert refill(limit, empty, 10.5) == Allowance(5, 50, 10.5)
        assert refill(limit, empty, 99.0) == Allowance(10, 100, 99.0)
        assert refill(limit, empty, 3.0) == Allowance(0, 0, 10.0)

    def test_skipping_lasts_until_the_allowance_is_back_to_resume(self) -> None:
        """A stream that had to skip sends nothing until RESUME of its burst is back."""
        limit = Limit(lines=10, bytes=1000)
        skipping = spend(Allowance(0, 1000, 0.0), 0, 0, short=True)
        almost = refill(limit, skipping, RESUME - 0.01)
        assert almost.skipping and room(almost) == (0, 0)
        back = refill(limit, skipping, RESUME)
        assert not back.skipping and room(back) == (5, 1000)

    @pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "10"])
    def test_a_limit_must_be_a_finite_positive_number(self, bad: Any) -> None:
        """NaN, infinities, zero, negatives and non-numbers are refused with the field named."""
        with pytest.raises(ValueError, match="Limit.lines"):
            Limit(lines=bad, bytes=1)


def replay(events: list[tuple[str, dict[str, Any]]], lines: list[str]) -> int:
    """Walk the forwarded events against the lines offered: text events must be the next lines,
    markers must count the lines missing exactly there. Returns how many lines were accounted."""
    at = 0
    for topic, data in events:
        assert topic == TOPIC
        if "skipped" in data:
            assert data["skipped"] > 0
            missing = lines[at : at + data["skipped"]]
            assert data["skipped_bytes"] == sum(len(ln.encode()) + 1 for ln in missing)
            at += data["skipped"]
        else:
            sent = data["text"].split("\n")
            assert sent == lines[at : at + len(sent)]
            at += len(sent)
    return at


def run(
    followers: Followers, offers: list[tuple[float, str]], allowed: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    now = 0.0
    for dt, text in offers:
        now += dt
        out += followers.offer(TOPIC, {"id": "web.1", "ts": now, "text": text}, now, allowed)
        out += followers.markers(now)
    out += followers.markers(now + 1)
    out += followers.markers(now + 2)
    return out


offers = st.lists(st.tuples(st.floats(0, 0.3), texts), max_size=30)
limits = st.builds(
    Limit, st.integers(1, 20), st.integers(1, 200), st.sampled_from([0.5, 1.0, 2.0])
)


class TestFollowers:
    @settings(max_examples=examples(300), deadline=None)
    @given(offers, limits, limits)
    def test_every_line_is_sent_or_counted_where_it_went_missing(
        self, offers: list[tuple[float, str]], stream: Limit, agent: Limit
    ) -> None:
        """Lines sent are the lines offered, in order; markers account for every gap exactly."""
        followers = Followers(stream, agent)
        events = run(followers, offers)
        lines = [ln for _, text in offers for ln in text.split("\n")]
        assert replay(events, lines) == len(lines)
        assert not followers.owes_markers()

    @settings(max_examples=examples(300), deadline=None)
    @given(offers, limits, limits)
    def test_what_is_sent_never_exceeds_either_budget(
        self, offers: list[tuple[float, str]], stream: Limit, agent: Limit
    ) -> None:
        """Over any span, lines and bytes sent stay within burst + rate x elapsed of both limits."""
        followers = Followers(stream, agent)
        events = run(followers, offers)
        sent = [data["text"] for _, data in events if "text" in data]
        elapsed = sum(dt for dt, _ in offers)
        lines = sum(t.count("\n") + 1 for t in sent)
        nbytes = sum(text_bytes(t) for t in sent)
        for limit in (stream, agent):
            assert lines <= limit.lines * (limit.burst + elapsed) + 1e-6
            assert nbytes <= limit.bytes * (limit.burst + elapsed) + 1e-6

    @settings(max_examples=100, deadline=None)
    @given(st.lists(texts, max_size=20))
    def test_output_within_budget_goes_through_untouched(self, chunks: list[str]) -> None:
        """A stream that stays under its budget is forwarded whole, with no marker."""
        followers = Followers(Limit(lines=1000, bytes=100_000), Limit(lines=1000, bytes=100_000))
        events = run(followers, [(1.0, text) for text in chunks])
        assert all("skipped" not in data for _, data in events)
        assert "\n".join(data["text"] for _, data in events) == "\n".join(chunks)

    def test_without_a_controller_everything_is_skipped_and_counted(self) -> None:
        """allowed=False sends nothing; once allowed again a marker says how much went."""
        followers = Followers()
        assert followers.offer(TOPIC, {"ts": 0.0, "text": "a\nb"}, 0.0, allowed=False) == []
        events = followers.offer(TOPIC, {"ts": 1.0, "text": "c"}, 1.0)
        assert [data.get("skipped", data.get("text")) for _, data in events] == [2, "c"]

    def test_a_flood_gets_runs_of_lines_and_one_marker_per_resume(self) -> None:
        """10 s of a flood at 100 reads/s: about the budget sent, markers at most 2 per second."""
        limit = Limit(lines=1000, bytes=10**9)
        followers = Followers(limit, Limit(lines=10**6, bytes=10**9))
        chunk = "\n".join(f"line {i}" for i in range(5000))
        events = run(followers, [(0.01, chunk)] * 1000)
        sent = sum(data["text"].count("\n") + 1 for _, data in events if "text" in data)
        markers = sum(1 for _, data in events if "skipped" in data)
        assert 10_000 <= sent <= 11_000
        assert markers <= 10 / RESUME + 1
        assert replay(events, chunk.split("\n") * 1000) == 5_000_000

    def test_quiet_streams_are_forgotten(self) -> None:
        """A stream with nothing owed and a full allowance leaves the table."""
        followers = Followers()
        followers.offer(TOPIC, {"ts": 0.0, "text": "hi"}, 0.0)
        assert len(followers) == 1
        followers.markers(0.0)
        followers.markers(100.0)
        assert len(followers) == 0
