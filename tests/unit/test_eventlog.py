"""The controller's event log: positions, bounds, horizon and replay (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.eventlog import EVENT_OVERHEAD, EventLog, event_size
from budget import examples

TOPICS = ("node.a.up", "node.b.down", "proc.web.spawn", "proc.web.exit", "output.web.1.out", "template.web.created")
PREFIXES = ("", "node.", "node.a", "proc.", "proc.web.e", "output.", "template.web", "nothing.")


def filled(count: int, **bounds) -> EventLog:
    log = EventLog(**bounds)
    for index in range(count):
        log.append(TOPICS[index % len(TOPICS)], float(index), {"i": index})
    return log


class TestPositions:
    def test_positions_are_dense_from_first(self):
        """Events are numbered first, first + 1, ... and last is the newest."""
        log = EventLog(first=11, horizon=7)
        seqs = [log.append("a", 0.0, {}).seq for _ in range(3)]
        assert seqs == [11, 12, 13]
        assert log.last == 13

    def test_last_is_the_horizon_before_anything_is_appended(self):
        """A fresh incarnation's last position is what it knows: its horizon."""
        log = EventLog(first=2**20 + 1, horizon=42)
        assert log.last == 42
        assert log.replay(42, [""], 10).upto == 42

    def test_horizon_must_lie_below_first(self):
        """A horizon at or past the first position is refused."""
        with pytest.raises(ValueError):
            EventLog(first=5, horizon=5)


class TestBounds:
    def test_count_bound_evicts_the_oldest_and_moves_the_horizon(self):
        """Past capacity the oldest event goes and the horizon is its position."""
        log = filled(10, capacity=4)
        assert len(log) == 4
        assert log.oldest == 7
        assert log.horizon == 6
        assert log.evicted == 6

    def test_text_bound_evicts_the_oldest_but_never_the_newest(self):
        """More text than max_bytes drops old events first; a lone big event stays."""
        log = EventLog(max_bytes=1_000)
        for index in range(5):
            log.append("output.w.1.out", 0.0, {"text": "x" * 300, "i": index})
        assert log.bytes <= 1_000
        assert log.oldest == 4  # each counts 378: two fit in 1,000
        log.append("output.w.1.out", 0.0, {"text": "y" * 5_000})
        assert len(log) == 1 and log.oldest == 6

    def test_event_size_counts_topic_and_text(self):
        """Only the topic and a string text count, beside a fixed overhead."""
        assert event_size("ab", {"text": "xyz", "n": 1}) == EVENT_OVERHEAD + 5
        assert event_size("ab", {"text": 5}) == EVENT_OVERHEAD + 2

    def test_compaction_keeps_positions_findable(self):
        """After many evictions (the list compacted) a replay still finds the right events."""
        log = filled(20_000, capacity=100)
        got = log.replay(19_950, [""], 1_000)
        assert [e.seq for e in got.events] == list(range(19_951, 20_001))


class TestReplay:
    def test_too_old_exactly_below_the_horizon(self):
        """since < horizon is too_old with no events; since == horizon is answered."""
        log = filled(10, capacity=4)
        old = log.replay(5, [""], 10)
        assert old.too_old and old.events == () and old.horizon == 6
        fresh = log.replay(6, [""], 10)
        assert not fresh.too_old and [e.seq for e in fresh.events] == [7, 8, 9, 10]

    def test_prefixes_filter_and_upto_says_how_far_it_is_settled(self):
        """Only matching topics come back; a limit cuts at the last returned position."""
        log = filled(12)
        page = log.replay(0, ["proc."], 2)
        assert [e.topic for e in page.events] == ["proc.web.spawn", "proc.web.exit"]
        assert page.upto == page.events[-1].seq == 4
        rest = log.replay(page.upto, ["proc."], 10)
        assert [e.seq for e in rest.events] == [9, 10]
        assert rest.upto == rest.last == 12

    def test_scan_budget_cuts_at_the_last_position_looked_at(self):
        """A narrow prefix over a long log stops after the scan budget, saying where."""
        log = filled(100)
        got = log.replay(0, ["nothing."], 10, scan=30)
        assert got.events == () and got.upto == 30 and not got.too_old

    def test_byte_budget_returns_at_least_one_event(self):
        """A reply's text budget cuts the answer but never to nothing."""
        log = EventLog()
        for _ in range(3):
            log.append("output.w.1.out", 0.0, {"text": "z" * 500})
        got = log.replay(0, [""], 10, max_bytes=100)
        assert [e.seq for e in got.events] == [1] and got.upto == 1

    def test_since_between_horizon_and_first_is_answered(self):
        """After a clean restart, a since in the unused gap of positions loses nothing."""
        log = EventLog(first=2**20 + 1, horizon=50)
        log.append("a", 0.0, {})
        got = log.replay(60, [""], 10)
        assert not got.too_old and [e.seq for e in got.events] == [2**20 + 1]

    def test_to_wire_has_the_contract_fields(self):
        """The op's result carries events as maps and the four numbers."""
        wire = filled(2).replay(0, [""], 10).to_wire()
        assert wire == {
            "events": [
                {"seq": 1, "topic": "node.a.up", "ts": 0.0, "data": {"i": 0}},
                {"seq": 2, "topic": "node.b.down", "ts": 1.0, "data": {"i": 1}},
            ],
            "upto": 2, "last": 2, "horizon": 0, "too_old": False,
        }


appends = st.lists(st.sampled_from(TOPICS), max_size=120)


@settings(max_examples=examples(200), deadline=None)
@given(
    topics=appends,
    first=st.integers(1, 10**6),
    gap=st.integers(1, 50),
    capacity=st.integers(1, 40),
    since=st.integers(0, 10**6 + 200),
    prefixes=st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3),
    limit=st.integers(1, 30),
)
def test_replay_is_a_filter_over_everything_appended(topics, first, gap, capacity, since, prefixes, limit):
    """Replay equals filtering a reference list; never returns since or older; too_old
    exactly when since < horizon; upto settles every matching event up to it."""
    horizon = max(0, first - gap)
    log = EventLog(first=first, horizon=horizon, capacity=capacity)
    reference = [log.append(topic, 0.0, {}) for topic in topics]
    since = min(since, first + len(topics) + 5)
    got = log.replay(since, prefixes, limit)
    assert got.too_old == (since < log.horizon)
    assert log.horizon == (reference[-capacity - 1].seq if len(reference) > capacity else horizon)
    if got.too_old:
        assert got.events == ()
        return
    assert all(event.seq > since for event in got.events)
    wanted = [e for e in reference if e.seq > since and e.topic.startswith(tuple(prefixes))]
    assert list(got.events) == [e for e in wanted if e.seq <= got.upto]
    assert len(got.events) <= limit
    if len(got.events) < limit:
        assert got.upto == log.last


@settings(max_examples=100, deadline=None)
@given(topics=appends, capacity=st.integers(1, 20), prefixes=st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3))
def test_paging_by_upto_gets_every_matching_event_once(topics, capacity, prefixes):
    """Asking again from upto until upto reaches last yields each held match once, in order."""
    log = EventLog(capacity=capacity)
    for topic in topics:
        log.append(topic, 0.0, {})
    since, seen = log.horizon, []
    for _ in range(len(topics) + 2):
        page = log.replay(since, prefixes, 3)
        seen.extend(page.events)
        since = page.upto
        if since >= log.last:
            break
    held = [e for e in log.replay(log.horizon, [""], 10**6).events if e.topic.startswith(tuple(prefixes))]
    assert seen == held
