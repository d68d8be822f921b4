"""The resuming client's core (gaffer.client.resume) on a simulated controller: no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.client import EventsLost, ReceivedEvent, Snapshot
from gaffer.client.resume import MAX_PENDING, SUSPECT_TICKS, Replay, Resume, SnapshotPage, cover
from gaffer.common.errors import ConfigError, ProtocolError
from tests.unit.resume_harness import Driver
from budget import examples

TOPICS = ("a.x", "a.y", "b.z", "ab.q", "c.w", "a.x.1")
PREFIXES = ("a.", "b.", "a.x", "", "c", "ab")


def check_stream(driver: Driver, since: int | None) -> None:
    """Every matching event after the start exactly once and in order, except inside an
    EventsLost range the controller really could not answer for, which a Snapshot follows."""
    prefixes = driver.resume.prefixes
    published = {e["seq"]: e for e in driver.controller.published}
    matching = sorted(s for s, e in published.items() if e["topic"].startswith(prefixes))
    items = driver.delivered
    if since is None:
        first = next((i for i in items if isinstance(i, ReceivedEvent)), None)
        position = first.seq - 1 if first is not None else driver.controller.last
    else:
        position = since
    for index, item in enumerate(items):
        if isinstance(item, ReceivedEvent):
            assert item.seq > position, f"{item} not after {position}"
            sent = published[item.seq]
            assert (item.topic, item.data) == (sent["topic"], sent["data"])
            skipped = [s for s in matching if position < s < item.seq]
            assert not skipped, f"matching events {skipped} never delivered"
            position = item.seq
        elif isinstance(item, EventsLost):
            # first - 1 is the client's position: past its last event when a replay moved it on
            assert position < item.first <= item.last
            skipped = [s for s in matching if position < s < item.first]
            assert not skipped, f"matching events {skipped} neither delivered nor reported lost"
            assert (item.first - 1, item.last) in driver.lost_at_ask, "a loss the controller did not report"
            following = items[index + 1] if index + 1 < len(items) else None
            assert isinstance(following, Snapshot), "EventsLost without its Snapshot"
        else:
            assert isinstance(items[index - 1], EventsLost), "a Snapshot without a loss before it"
            assert item.position >= items[index - 1].last
            assert (len(item.nodes), len(item.templates), len(item.instances)) == (2, 2, 2)
            position = item.position
    left = [s for s in matching if s > position]
    assert not left, f"matching events {left} never delivered"


PUBLISH = st.tuples(st.just("pub"), st.sampled_from(TOPICS), st.booleans(), st.booleans())
ANSWER = st.tuples(st.just("answer"))
ACTIONS = st.one_of(
    PUBLISH, PUBLISH, PUBLISH, PUBLISH, ANSWER, ANSWER, ANSWER,
    st.tuples(st.sampled_from(["cut", "reconnect", "quiet", "fail"])),
    st.tuples(st.just("restart"), st.integers(0, 5), st.booleans(), st.booleans()),
)


def play(driver: Driver, actions: list[tuple]) -> None:
    for action in actions:
        kind = action[0]
        if kind == "pub":
            driver.publish(action[1], drop=action[2], hold=action[3])
        elif kind == "answer" and driver.ask is not None:
            driver.answer()
        elif kind == "cut":
            driver.cut()
        elif kind == "reconnect":
            driver.reconnect()
        elif kind == "quiet":
            driver.quiet()
        elif kind == "fail":
            driver.fail()
        elif kind == "restart":
            driver.cut()
            driver.fail()
            driver.controller.restart(action[1], clean=action[2], keep=action[3])
            driver.reconnect()
    driver.reconnect()
    # The stream ends with one event the client receives, then the client goes quiet.
    driver.publish(next(t for t in TOPICS if t.startswith(driver.resume.cover)) if any(
        t.startswith(driver.resume.cover) for t in TOPICS) else "c.w")
    driver.settle()


class TestStreamProperties:
    @settings(max_examples=examples(400), deadline=None)
    @given(
        prefixes=st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
        before=st.lists(st.sampled_from(TOPICS), max_size=8),
        start=st.one_of(st.none(), st.integers(0, 8)),
        buffer=st.integers(2, 40),
        omit_prev=st.booleans(),
        limit=st.integers(1, 5),
        actions=st.lists(ACTIONS, min_size=20, max_size=120),
    )
    def test_each_matching_event_once_in_order_or_an_exact_loss(self, prefixes, before, start, buffer, omit_prev, limit, actions):
        """Drops, cuts, failed requests, restarts and evictions: each matching event once and in
        order, or an EventsLost of the exact range the controller lacks, then a Snapshot."""
        since = None if start is None else min(start, len(before))
        driver = Driver.start(tuple(prefixes), since, tuple(before), buffer=buffer, omit_prev=omit_prev)
        driver.resume.limit = limit  # answers cut by the limit, continued from their upto
        play(driver, actions)
        check_stream(driver, since)

    @settings(max_examples=examples(300), deadline=None)
    @given(
        prefixes=st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
        start=st.one_of(st.none(), st.just(0)),
        actions=st.lists(
            st.one_of(
                PUBLISH, PUBLISH, PUBLISH, ANSWER, ANSWER,
                st.tuples(st.sampled_from(["cut", "reconnect", "quiet", "fail"])),
                st.tuples(st.just("restart"), st.integers(0, 5), st.just(True), st.just(True)),
            ),
            min_size=20, max_size=120,
        ),
    )
    def test_filtered_or_dropped_events_are_never_reported_lost_while_the_controller_holds_them(self, prefixes, start, actions):
        """With nothing evicted (clean restarts keep the buffer), no EventsLost at all."""
        driver = Driver.start(tuple(prefixes), start, buffer=100_000)
        play(driver, actions)
        check_stream(driver, start)
        assert driver.losses() == []


def live(driver: Driver, topic: str) -> None:
    driver.publish(topic)


class TestGapRule:
    def test_an_event_after_the_last_one_is_delivered_without_asking(self):
        """seq == position + 1: nothing can lie between, so no replay."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        assert driver.ask is None and [e.seq for e in driver.events()] == [1]

    def test_a_prev_at_or_below_the_position_proves_only_filtered_events_lie_between(self):
        """Filtered-out events in between cost no request and are not reported."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        driver.controller.publish("b.z")
        driver.controller.publish("c.w")
        live(driver, "a.y")
        assert driver.ask is None and [e.seq for e in driver.events()] == [1, 4]

    def test_a_prev_past_the_position_replays_the_missing_event_first(self):
        """A dropped matching event is fetched by replay and delivered before the later one."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        driver.publish("a.x", drop=True)
        live(driver, "a.y")
        assert driver.ask == Replay(0, ("a.",))
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2] and driver.losses() == []

    def test_an_unknown_prev_is_checked_by_replay(self):
        """prev 0 (a feed just subscribed): the client cannot know, so it asks."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        driver.controller.publish("b.z")
        live(driver, "a.x")
        assert driver.controller.batch_prev == 0
        assert driver.ask == Replay(0, ("a.",))
        driver.answer()
        assert [e.seq for e in driver.events()] == [2]

    def test_several_prefixes_share_one_chain(self):
        """'a.' and 'b.' are one feed: a jump over other topics needs no request, and a dropped
        b-event is replayed before the a-event after it (once, per-prefix checks replayed every
        jump of such a subscription)."""
        driver = Driver.start(("a.", "b."), 0)
        driver.answer()
        live(driver, "b.z")
        driver.controller.publish("c.w")
        live(driver, "a.x")
        assert driver.ask is None and [e.seq for e in driver.events()] == [1, 3]
        driver.publish("b.z", drop=True)
        live(driver, "a.x")
        assert driver.ask == Replay(3, ("a.", "b."))
        driver.answer()
        assert [e.topic for e in driver.events()] == ["b.z", "a.x", "b.z", "a.x"]

    def test_a_batch_after_a_dropped_batch_replays_the_gap_once_and_in_order(self):
        """Batches [1 2 3] got, [4 5] dropped, [6 7] got: 4..7 delivered once each, in order,
        by one replay; a batch arriving while it is asked for adds nothing twice."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        for held in ("a.x", "a.y", "a.x"):
            driver.publish(held, hold=True)
        driver.flush()
        driver.publish("a.x", hold=True)
        driver.publish("a.y", hold=True)
        driver.flush(drop=True)
        driver.publish("a.x", hold=True)
        driver.publish("b.z", hold=True)
        driver.publish("a.y", hold=True)
        driver.flush()
        assert driver.ask == Replay(3, ("a.",))
        driver.publish("a.x")
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2, 3, 4, 5, 6, 8, 9] and driver.ask is None

    def test_a_batch_reaching_past_the_position_delivers_only_what_follows_it(self):
        """Position 4 (a replay brought 3 and 4), then a live batch [3 4 5] chained from 2:
        only 5, with no request (nothing can lie between 4 and 5 in the batch's chain)."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        live(driver, "a.x")
        driver.publish("a.x", drop=True)
        driver.publish("a.x", hold=True)
        driver.quiet()
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2, 3, 4]
        driver.controller.take()
        events = [[seq, "a.x", float(seq), {"n": seq}] for seq in (3, 4, 5)]
        driver.carry(driver.resume.published(2, events))
        assert [e.seq for e in driver.events()] == [1, 2, 3, 4, 5] and driver.ask is None

    def test_a_covered_prefix_is_left_out_of_the_gap_rule(self):
        """'a.' covers 'a.x': one prefix for prev and replays, both still subscribed."""
        assert cover(("a.x", "a.", "b.", "a.")) == ("a.", "b.")
        assert cover(("", "a.")) == ("",)
        assert Resume(("a.x", "a.")).prefixes == ("a.x", "a.")

    def test_a_duplicate_or_older_event_is_dropped(self):
        """An event at or below the position was delivered already."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        driver.controller.publish("a.x")
        batch = driver.controller.take()
        assert batch is not None
        driver.carry(driver.resume.published(*batch))
        driver.carry(driver.resume.published(*batch))
        assert [e.seq for e in driver.events()] == [1]

    def test_since_none_starts_at_the_first_live_event_without_asking(self):
        """Live from now: nothing is replayed before the first event."""
        driver = Driver.start(("a.",), None, ("a.x", "a.y"))
        assert driver.ask is None
        live(driver, "a.x")
        assert [e.seq for e in driver.events()] == [3] and driver.ask is None


class TestReplay:
    def test_since_replays_what_the_buffer_holds_then_goes_live(self):
        """since=1: events 2.. first (matching only), then live ones."""
        driver = Driver.start(("a.",), 1, ("a.x", "b.z", "a.y"))
        driver.answer()
        live(driver, "a.x")
        assert [e.seq for e in driver.events()] == [3, 4] and driver.losses() == []

    def test_since_zero_with_everything_held_reports_no_loss(self):
        """since=0 while the buffer still holds position 1: all of it, no EventsLost."""
        driver = Driver.start(("",), 0, ("a.x", "b.z"))
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2] and driver.losses() == []

    def test_an_answer_cut_by_the_limit_continues_from_its_upto(self):
        """upto < last: the next replay starts at upto."""
        resume = Resume(("a.",), 0)
        resume.start()
        answer = {"events": [{"seq": 1, "topic": "a.x", "ts": 1.0, "data": {}}], "upto": 1, "last": 9,
                  "horizon": 0, "too_old": False}
        step = resume.replayed(answer)
        assert [e.seq for e in step.deliver] == [1] and step.ask == Replay(1, ("a.",))

    def test_live_events_that_come_while_asking_wait_and_are_not_repeated(self):
        """Events arriving during a replay are delivered after it, never twice."""
        driver = Driver.start(("a.",), 0)
        live(driver, "a.x")
        live(driver, "a.y")
        assert driver.events() == []
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2]

    def test_too_many_waiting_events_are_dropped_and_replayed(self):
        """Past MAX_PENDING the waiting list overflows: one more replay brings them."""
        driver = Driver.start(("a.",), 0, buffer=MAX_PENDING + 10)
        for _ in range(MAX_PENDING + 5):
            live(driver, "a.x")
        driver.answer()
        driver.settle()
        assert [e.seq for e in driver.events()] == list(range(1, MAX_PENDING + 6))

    def test_a_since_beyond_the_controllers_last_position_goes_on_from_its_head(self):
        """Asked from the future: the client does not wait for positions that may never come."""
        driver = Driver.start(("a.",), 50, ("a.x",))
        driver.answer()
        live(driver, "a.x")
        assert [e.seq for e in driver.events()] == [2]

    def test_a_malformed_answer_is_a_protocol_error_naming_the_field(self):
        """A bad replay answer is refused, not acted on."""
        resume = Resume(("a.",), 0)
        resume.start()
        with pytest.raises(ProtocolError, match=r"replay answer\.upto"):
            resume.replayed({"events": [], "upto": "x", "last": 1, "horizon": 0, "too_old": False})
        with pytest.raises(ProtocolError, match="ascending"):
            resume.replayed({"events": [{"seq": 2, "topic": "a", "ts": 1.0, "data": {}},
                                        {"seq": 1, "topic": "a", "ts": 1.0, "data": {}}],
                             "upto": 2, "last": 2, "horizon": 0, "too_old": False})


class TestLoss:
    def test_too_old_gives_the_exact_lost_range_then_a_snapshot_then_newer_events(self):
        """Evicted events: EventsLost(position+1, horizon), a Snapshot, then events after it."""
        driver = Driver.start(("a.",), 0, buffer=3)
        driver.answer()
        live(driver, "a.x")
        for _ in range(5):
            driver.publish("a.x", drop=True)
        live(driver, "a.y")
        driver.answer()
        assert driver.delivered[1] == EventsLost(2, 4)
        assert driver.ask == SnapshotPage()
        driver.settle()
        snapshot = driver.delivered[2]
        assert isinstance(snapshot, Snapshot) and snapshot.position == 7
        assert [e.seq for e in driver.events()] == [1]
        live(driver, "a.x")
        assert [e.seq for e in driver.events()] == [1, 8]

    def test_a_snapshot_of_several_pages_is_one_snapshot(self):
        """Pages are gathered under one position."""
        resume = Resume(("a.",), 0)
        resume.start()
        step = resume.replayed({"events": [], "upto": 9, "last": 9, "horizon": 5, "too_old": True})
        assert step.deliver == (EventsLost(1, 5),)
        step = resume.snapshot_page({"position": 9, "items": [{"kind": "node", "data": {"n": 1}}], "continue": "t"})
        assert step.deliver == () and step.ask == SnapshotPage("t")
        step = resume.snapshot_page({"position": 9, "items": [{"kind": "instance", "data": {"i": 1}}], "continue": None})
        assert step.deliver == (Snapshot(9, [{"n": 1}], [], [{"i": 1}]),)
        assert step.ask == Replay(9, ("a.",))

    def test_a_clean_restart_loses_nothing_for_a_caught_up_client(self):
        """Positions jump; the new incarnation knows nothing lies in between: no EventsLost."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        driver.controller.restart(1_000, clean=True, keep=False)
        driver.carry(driver.resume.reconnected())
        driver.answer()
        live(driver, "a.x")
        driver.settle()
        assert [e.seq for e in driver.events()] == [1, 1_002] and driver.losses() == []

    def test_a_crash_restart_reports_the_unknown_range(self):
        """kill -9: the range up to the new first position is unknown, reported once."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        driver.controller.restart(1_000, clean=False, keep=False)
        driver.carry(driver.resume.reconnected())
        driver.answer()
        assert driver.losses() == [EventsLost(2, 1_001)]


class TestReconnectAndQuiet:
    def test_a_reconnect_replays_from_the_position(self):
        """What was published while the SUB socket was cut comes by replay."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        driver.cut()
        driver.publish("a.x")
        driver.reconnect()
        assert driver.ask == Replay(0, ("a.",))
        driver.answer()
        assert [e.seq for e in driver.events()] == [1]

    def test_after_a_reconnect_quiet_ticks_replay_until_a_live_event_proves_the_stream(self):
        """Replays every quiet tick after a reconnect, at most SUSPECT_TICKS, none after a live event."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        driver.quiet()
        driver.answer()
        driver.cut()
        driver.reconnect()
        driver.answer()
        asked = 0
        for _ in range(SUSPECT_TICKS + 3):
            driver.quiet()
            if driver.ask is not None:
                asked += 1
                driver.answer()
        assert asked == SUSPECT_TICKS
        driver.cut()
        driver.reconnect()
        driver.answer()
        live(driver, "a.x")
        driver.quiet()
        driver.answer()
        driver.quiet()
        assert driver.ask is None

    def test_a_quiet_tick_after_activity_catches_a_dropped_tail(self):
        """The last event dropped, nothing after it: the next quiet tick replays it."""
        driver = Driver.start(("a.",), 0)
        driver.answer()
        live(driver, "a.x")
        driver.publish("a.y", drop=True)
        driver.quiet()
        driver.answer()
        assert [e.seq for e in driver.events()] == [1, 2]
        driver.quiet()
        assert driver.ask is None

    def test_a_failed_request_is_asked_again_on_the_next_quiet_tick(self):
        """The controller away: the request waits, then goes again; a snapshot restarts."""
        resume = Resume(("a.",), 0)
        first = resume.start().ask
        resume.failed()
        assert resume.quiet().ask == first
        resume.replayed({"events": [], "upto": 3, "last": 3, "horizon": 2, "too_old": True})
        resume.snapshot_page({"position": 3, "items": [], "continue": "t"})
        resume.failed()
        assert resume.quiet().ask == SnapshotPage()


class TestArguments:
    @pytest.mark.parametrize("prefixes, message", [
        ((), "1..64"), (tuple(f"p{i}" for i in range(65)), "1..64"), ("abc", "not one string"),
        (("x" * 257,), "at most 256"),
    ])
    def test_bad_prefixes_are_refused_naming_the_field(self, prefixes, message):
        """prefixes: 1..64 strings of at most 256 characters."""
        with pytest.raises(ConfigError, match=message):
            Resume(prefixes)

    @pytest.mark.parametrize("since", [-1, True, 1.5, "3"])
    def test_a_bad_since_is_refused(self, since):
        """since: None or an integer >= 0."""
        with pytest.raises(ConfigError, match="since"):
            Resume(("",), since)
