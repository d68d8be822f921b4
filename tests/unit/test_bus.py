"""The in-process event bus: prefix subscriptions, sequence numbers, bounded queues."""

from __future__ import annotations

import asyncio
import itertools
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.bus import Event, EventBus, topic_matches
from gaffer.common.errors import SubscriberTooSlow, SubscriptionClosed
from budget import examples

TIMEOUT = 5.0


def fake_clock() -> Callable[[], float]:
    ticks = itertools.count(1000)
    return lambda: float(next(ticks))


def drain(sub) -> list[Event]:
    out = []
    while (event := sub.get_nowait()) is not None:
        out.append(event)
    return out


def drain_until_error(sub) -> list[Event]:
    """Read what is queued without touching the end-of-queue behaviour."""
    out = []
    while sub.pending():
        out.append(sub.get_nowait())
    return out


class TestMatching:
    @pytest.mark.parametrize(
        ("topic", "prefix", "matches"),
        [
            ("proc.web.spawn", "", True),
            ("proc.web.spawn", "proc", True),
            ("proc.web.spawn", "proc.web", True),
            ("proc.web.spawn", "proc.web.spawn", True),
            ("proc.webapp.spawn", "proc.web", True),
            ("proc.webapp.spawn", "proc.web.", False),
            ("proc.web.spawn", "proc.web.spawn.x", False),
            ("node.a.up", "proc", False),
            ("proc", "Proc", False),
        ],
    )
    def test_topic_prefix_matching(self, topic: str, prefix: str, matches: bool) -> None:
        """A prefix selects a topic when the topic starts with it, character for character."""
        assert topic_matches(topic, prefix) is matches
        bus = EventBus()
        sub = bus.subscribe(prefix)
        bus.publish(topic, {})
        assert [e.topic for e in drain(sub)] == ([topic] if matches else [])

    def test_several_prefixes_in_one_subscription(self) -> None:
        """A subscription with several prefixes receives the union, each event once."""
        bus = EventBus()
        sub = bus.subscribe(["proc.web.", "node.", "proc."])
        for topic in ("proc.web.spawn", "template.web.created", "node.a.up", "proc.db.exit"):
            bus.publish(topic, {})
        assert [e.topic for e in drain(sub)] == ["proc.web.spawn", "node.a.up", "proc.db.exit"]

    def test_empty_prefix_list_means_everything(self) -> None:
        """subscribe([]) is the same as subscribing to all topics."""
        bus = EventBus()
        sub = bus.subscribe([])
        bus.publish("anything", {})
        assert len(drain(sub)) == 1

    @settings(max_examples=examples(150), deadline=None)
    @given(
        st.lists(st.sampled_from(["proc.web.spawn", "proc.web.exit", "proc.db.exit", "node.a.up", "x"]),
                 max_size=40),
        st.lists(st.sampled_from(["", "proc", "proc.web", "node.", "y"]), max_size=3),
    )
    def test_subscriber_sees_exactly_its_topics_in_order(
        self, topics: list[str], prefixes: list[str]
    ) -> None:
        """Whatever is published, a subscriber gets the matching events in publish order."""
        bus = EventBus()
        sub = bus.subscribe(prefixes)
        published = [bus.publish(topic, {"i": i}) for i, topic in enumerate(topics)]
        wanted = [e for e in published if any(e.topic.startswith(p) for p in (prefixes or [""]))]
        assert drain(sub) == wanted


class TestSequence:
    def test_seq_strictly_increases_across_topics(self) -> None:
        """One counter per bus, so numbers never repeat or go back, whoever listens."""
        bus = EventBus()
        events = [bus.publish(topic, {}) for topic in ("a", "b", "a", "c")]
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert bus.seq == 4

    def test_seq_advances_even_with_no_subscriber(self) -> None:
        """Events nobody receives still take a number, so a later subscriber can see it missed some."""
        bus = EventBus()
        bus.publish("a", {})
        sub = bus.subscribe("a")
        bus.publish("b", {})
        bus.publish("a", {})
        assert [e.seq for e in drain(sub)] == [3]

    def test_event_carries_clock_time_and_data(self) -> None:
        """The timestamp comes from the bus clock; to_dict is the wire form."""
        bus = EventBus(clock=fake_clock())
        event = bus.publish("proc.web.spawn", {"pid": 42})
        assert event.to_dict() == {"seq": 1, "topic": "proc.web.spawn", "ts": 1000.0, "data": {"pid": 42}}


class TestWants:
    def test_wants_follows_subscriptions(self) -> None:
        """wants() is true exactly while a matching subscription is open."""
        bus = EventBus()
        assert not bus.wants("output.web.1.out")
        sub = bus.subscribe("output.web.")
        other = bus.subscribe("proc.")
        assert bus.wants("output.web.1.out")
        assert not bus.wants("output.db.1.out")
        sub.close()
        assert not bus.wants("output.web.1.out")
        assert bus.wants("proc.web.exit")
        other.close()
        assert bus.subscribers == 0

    def test_context_manager_closes(self) -> None:
        """Leaving a with-block unsubscribes."""
        bus = EventBus()
        with bus.subscribe("a") as sub:
            assert bus.wants("a")
        assert sub.closed and not bus.wants("a")


class TestSlowSubscribers:
    def test_slow_subscriber_is_cut_off_fast_one_gets_everything(self) -> None:
        """A full queue cuts its subscriber off; a subscriber that keeps up is untouched."""
        bus = EventBus()
        slow = bus.subscribe("", maxsize=3)
        fast = bus.subscribe("", maxsize=3)
        received = []
        for i in range(100):
            bus.publish("t", {"i": i})
            received.extend(drain(fast))
        assert [e.data["i"] for e in received] == list(range(100))
        assert not fast.closed
        assert slow.too_slow and slow.closed
        assert bus.cut_off == 1
        assert bus.subscribers == 1

    def test_cut_off_subscriber_drains_then_raises(self) -> None:
        """What was queued is still delivered; the next read raises SubscriberTooSlow."""
        bus = EventBus()
        slow = bus.subscribe("", maxsize=3)
        for i in range(5):
            bus.publish("t", {"i": i})
        assert [e.data["i"] for e in drain_until_error(slow)] == [0, 1, 2]
        with pytest.raises(SubscriberTooSlow) as info:
            slow.get_nowait()
        assert info.value.code == "subscriber_too_slow"
        assert "fell 3 events behind" in info.value.message

    async def test_cut_off_wakes_a_waiting_reader_with_the_error(self) -> None:
        """An async reader of a cut-off subscription ends with SubscriberTooSlow, not a hang."""
        bus = EventBus()
        sub = bus.subscribe("", maxsize=2)
        first = asyncio.Event()
        seen: list[int] = []

        async def reader() -> None:
            async for event in sub:
                seen.append(event.seq)
                first.set()

        task = asyncio.create_task(reader())
        bus.publish("t", {})
        await asyncio.wait_for(first.wait(), TIMEOUT)
        for _ in range(3):
            bus.publish("t", {})
        with pytest.raises(SubscriberTooSlow):
            await asyncio.wait_for(task, TIMEOUT)
        assert seen == [1, 2, 3]

    def test_publishing_never_blocks_and_memory_stays_bounded(self) -> None:
        """A subscriber that never reads costs at most maxsize events; publish just returns."""
        bus = EventBus()
        idle = bus.subscribe("", maxsize=10)
        for i in range(50_000):
            bus.publish("t", {"i": i})
        assert bus.published == 50_000
        assert idle.pending() == 10
        assert bus.subscribers == 0

    async def test_fast_async_reader_receives_everything(self) -> None:
        """A reader that keeps pace is never cut off, even with a tiny queue."""
        bus = EventBus()
        sub = bus.subscribe("t", maxsize=4)
        acked: asyncio.Queue[int] = asyncio.Queue()

        async def reader() -> None:
            async for event in sub:
                await acked.put(event.data["i"])

        task = asyncio.create_task(reader())
        for burst in range(25):
            for i in range(4):
                bus.publish("t", {"i": burst * 4 + i})
            for _ in range(4):
                await asyncio.wait_for(acked.get(), TIMEOUT)
        sub.close()
        await asyncio.wait_for(task, TIMEOUT)
        assert not sub.too_slow
        assert sub.delivered == 100


class TestClose:
    async def test_close_ends_a_waiting_iteration(self) -> None:
        """close() wakes a reader blocked in async-for and ends its loop cleanly."""
        bus = EventBus()
        sub = bus.subscribe("")
        first = asyncio.Event()
        seen: list[int] = []

        async def reader() -> None:
            async for event in sub:
                seen.append(event.seq)
                first.set()

        task = asyncio.create_task(reader())
        bus.publish("a", {})
        await asyncio.wait_for(first.wait(), TIMEOUT)
        sub.close()
        await asyncio.wait_for(task, TIMEOUT)
        assert seen == [1]
        assert not sub.too_slow

    async def test_closed_subscription_delivers_queued_events_then_stops(self) -> None:
        """Events queued before close are not lost; then iteration ends."""
        bus = EventBus()
        sub = bus.subscribe("")
        bus.publish("a", {})
        bus.publish("b", {})
        sub.close()
        bus.publish("c", {})
        assert [e.topic async for e in sub] == ["a", "b"]

    def test_close_twice_is_harmless(self) -> None:
        """Closing is idempotent."""
        bus = EventBus()
        sub = bus.subscribe("")
        sub.close()
        sub.close()
        assert bus.subscribers == 0

    async def test_get_after_close_raises_subscription_closed(self) -> None:
        """A direct read of a drained, closed subscription says it is closed."""
        sub = EventBus().subscribe("")
        sub.close()
        with pytest.raises(SubscriptionClosed):
            await sub.get()
        with pytest.raises(SubscriptionClosed):
            sub.get_nowait()

    def test_get_nowait_on_empty_open_subscription_is_none(self) -> None:
        """Nothing queued yet is not an error."""
        assert EventBus().subscribe("").get_nowait() is None
