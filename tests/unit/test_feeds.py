"""The hub's batched feeds (gaffer.controller.feeds): pure, no sockets."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.client.wire import feed_key
from gaffer.common import protocol
from gaffer.controller.feeds import BATCH_BYTES, BATCH_EVENTS, Feeds, parse_key
from budget import examples

TOPICS = ("a.x", "a.y", "b.z", "ab.q", "c.w", "a.x.1")
PREFIXES = ("a.", "b.", "a.x", "", "c", "ab")


def decoded(messages: list[list[bytes]]) -> list[tuple[bytes, dict]]:
    """(key, body) of each batch message, through the subscribers' own decoder."""
    out = []
    for key, frame in messages:
        message = protocol.decode(frame, protocol.PUBLISHED)
        assert message.kind == "batch" and message.seq == message.body["events"][-1][0]
        out.append((key, message.body))
    return out


def feeds_of(*prefix_lists: tuple[str, ...]) -> tuple[Feeds, list[bytes]]:
    feeds = Feeds()
    keys = [feed_key(prefixes) for prefixes in prefix_lists]
    for key in keys:
        parsed = parse_key(key)
        assert parsed is not None
        feeds.subscribe(key, parsed)
    return feeds, keys


@settings(max_examples=examples(200), deadline=None)
@given(
    subscriptions=st.lists(st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
                           min_size=1, max_size=3),
    script=st.lists(st.one_of(st.sampled_from(TOPICS), st.just("flush")), max_size=300),
)
def test_each_feed_gets_every_matching_event_once_in_order_chained_by_prev(subscriptions, script):
    """Whatever the bursts: a feed's batches hold exactly the events matching one of its
    prefixes (never another topic), each once, ascending, and each batch's prev is the last
    position of the batch before it (0 for the first)."""
    feeds, keys = feeds_of(*(tuple(s) for s in subscriptions))
    published: list[tuple[int, str]] = []
    messages: list[list[bytes]] = []
    for step in script:
        if step == "flush":
            messages += feeds.flush()
            continue
        position = len(published) + 1
        published.append((position, step))
        messages += feeds.add(position, step, float(position), {"n": position})
    messages += feeds.flush()
    assert not feeds.pending
    for key, prefixes in zip(keys, subscriptions):
        wanted = [seq for seq, topic in published if topic.startswith(tuple(prefixes))]
        got, last = [], 0
        for _, body in (m for m in decoded(messages) if m[0] == key):
            assert body["prev"] == last
            assert all(topic.startswith(tuple(prefixes)) for _, topic, _, _ in body["events"])
            got += [seq for seq, _, _, _ in body["events"]]
            last = body["events"][-1][0]
        assert got == wanted


def test_a_burst_is_cut_into_batches_of_at_most_batch_events():
    """A long burst goes out BATCH_EVENTS at a time as it comes; the rest at the flush."""
    feeds, _ = feeds_of(("",))
    sent = []
    for position in range(1, 2 * BATCH_EVENTS + 6):
        sent += feeds.add(position, "a.x", 1.0, {})
    assert [len(body["events"]) for _, body in decoded(sent)] == [BATCH_EVENTS, BATCH_EVENTS]
    assert [len(body["events"]) for _, body in decoded(feeds.flush())] == [5]


def test_a_batch_stays_within_batch_bytes():
    """Big events: a batch goes out before it would pass BATCH_BYTES."""
    feeds, _ = feeds_of(("",))
    text = "x" * (BATCH_BYTES // 3)
    sent = []
    for position in range(1, 8):
        sent += feeds.add(position, "output.w.1.stdout", 1.0, {"text": text})
    sent += feeds.flush()
    assert all(len(frame) < BATCH_BYTES + 1024 for _, frame in sent)
    assert [seq for _, body in decoded(sent) for seq, *_ in body["events"]] == list(range(1, 8))


def test_an_event_no_batch_can_carry_shows_as_a_gap_in_prev():
    """An event too big for a message is left out, and the next batch's prev points past it,
    so a reader replays instead of missing it silently."""
    feeds, _ = feeds_of(("",))
    feeds.add(1, "a.x", 1.0, {})
    sent = feeds.add(2, "a.x", 1.0, {"text": "x" * protocol.MAX_MESSAGE})
    sent += feeds.add(3, "a.x", 1.0, {})
    sent += feeds.flush()
    assert [(body["prev"], [e[0] for e in body["events"]]) for _, body in decoded(sent)] == [(0, [1]), (2, [3])]


def test_subscribers_of_one_key_share_its_batches_until_the_last_leaves():
    """A key held twice is one feed; it goes when its last holder unsubscribes."""
    feeds, (key,) = feeds_of(("a.",))
    feeds.subscribe(key, ("a.",))
    feeds.unsubscribe(key)
    assert feeds and feeds.prefixes() == {"a."}
    feeds.add(1, "a.x", 1.0, {})
    feeds.unsubscribe(key)
    assert not feeds and not feeds.pending and feeds.flush() == []


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True),
       st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True))
def test_no_feed_key_starts_with_another(first, second):
    """Keys are prefix-free, so ZMQ's prefix filter gives each key exactly its own batches."""
    one, two = feed_key(first), feed_key(second)
    assert parse_key(one) == tuple(first)
    if first != second:
        assert not one.startswith(two) and not two.startswith(one)


def test_a_subscription_that_is_not_a_feed_key_gets_no_feed():
    """Plain topic prefixes, and keys that do not decode to 1..64 short strings, are not feeds."""
    bad = [b"proc.", b"", b"\x01", b"\x01" + msgpack.packb([]), b"\x01" + msgpack.packb([1]),
           b"\x01" + msgpack.packb(["x" * 257]), b"\x01" + msgpack.packb(["a"] * 65),
           b"\x01" + msgpack.packb({"a": 1}), b"\x01\xc1"]
    assert [parse_key(key) for key in bad] == [None] * len(bad)
