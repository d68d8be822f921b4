"""Batched event feeds: each subscription's events packed several to a PUB message.

A subscriber pays for every message it reads (the receive calls, the envelope), so the hub
packs the events one subscription wants into *batches*. ZMQ filters subscriptions by prefix
on the first frame, and a message of mixed topics has no topic frame that reaches exactly the
subscribers that want it, so a batch is keyed by the subscription itself, not by a topic: a
client subscribes to its *feed key*, ``FEED_MARK`` followed by its list of topic prefixes
packed with msgpack (``wire.feed_key``). msgpack is prefix-free (every value says where it
ends), so no key starts with another one: a batch framed with a key reaches exactly the
subscribers of that key, and topics never start with ``FEED_MARK``, so no per-event
subscriber sees batches (except one to everything, ``""``, which must skip them by kind).

::

    publish(position, topic, ts, data)
        for each feed whose prefixes the topic matches: the event, packed once, joins its
        pending batch ──► a batch of BATCH_EVENTS (or BATCH_BYTES) is framed at once
    flush() (the hub calls it once per loop turn) ──► every pending batch framed

A batch is ``[key, envelope]``; the envelope is a ``batch`` message ``{prev, events}``
(``docs/PROTOCOL.md``): ``events`` are ``[seq, topic, ts, data]`` arrays, ascending, and *every*
event matching the feed between the first and the last is among them; ``prev`` is the position
of the newest event matching the feed before the first (0: none known to this hub, as for a
feed just subscribed). So one number chains a whole subscription, several prefixes included:
a reader whose position is at least ``prev`` missed nothing matching, and a dropped batch shows
as a ``prev`` past the reader's position.

Pure: no socket, no clock; the hub sends the frames.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import msgpack

from gaffer.common import protocol

log = logging.getLogger("gaffer.controller.feeds")

FEED_MARK = b"\x01"
"""The first byte of a feed key (a topic never starts with it)."""
BATCH_EVENTS = 128
"""Events of one batch at most: enough to make a message's cost vanish per event, few enough
that a subscriber's queue at the XPUB (``PUB_HWM`` messages) stays a bounded number of events."""
BATCH_BYTES = 64 * 1024
"""Packed event bytes of one batch at most, unless one event alone is bigger."""
MAX_FEED_PREFIXES = 64
MAX_KEY = 64 * 260
MAX_PACKED = protocol.MAX_MESSAGE - 1024
"""An event packed bigger than this fits no message (the per-event path refuses it too)."""
_HEAD = msgpack.packb(protocol.PROTOCOL_VERSION) + msgpack.packb("batch")
packb = msgpack.packb


def parse_key(key: bytes) -> tuple[str, ...] | None:
    """The prefixes of a feed key (``FEED_MARK`` + msgpack list of 1..64 strings of at most
    256 characters), or None for anything else (a subscription that is not a feed key, or one
    that does not decode: no batch is kept for it)."""
    if not key.startswith(FEED_MARK) or len(key) > MAX_KEY:
        return None
    try:
        prefixes = msgpack.unpackb(key[1:], raw=False, max_str_len=1024, max_bin_len=0,
                                   max_array_len=MAX_FEED_PREFIXES, max_map_len=0, max_ext_len=0)
    except Exception:  # the unpacker's failures share no base class
        return None
    if (type(prefixes) is not list or not 1 <= len(prefixes) <= MAX_FEED_PREFIXES
            or any(type(p) is not str or len(p) > 256 for p in prefixes)):
        return None
    return tuple(prefixes)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def batch_frame(prev: int, last: int, packed: list[bytes]) -> bytes:
    """The ``batch`` envelope ``[version, "batch", last, {prev, events}]`` around events already
    packed (``[seq, topic, ts, data]`` each), without packing them again."""
    return b"".join((
        b"\x94", _HEAD, msgpack.packb(last), b"\x82\xa4prev", msgpack.packb(prev),
        b"\xa6events", _array_header(len(packed)), *packed,
    ))


class Feed:
    """One feed key: the subscribers holding it, its chain, and its pending batch."""

    __slots__ = ("key", "prefixes", "holders", "latest", "prev", "items", "size")

    def __init__(self, key: bytes, prefixes: tuple[str, ...]) -> None:
        self.key = key
        self.prefixes = prefixes
        self.holders = 0
        self.latest = 0
        """The newest position matching the feed (0: none yet)."""
        self.prev = 0
        """``latest`` when the pending batch began."""
        self.items: list[bytes] = []
        self.size = 0

    def take(self) -> list[bytes]:
        """The pending batch as ``[key, envelope]``, and nothing pending any more."""
        frame = batch_frame(self.prev, self.latest, self.items)
        self.items, self.size = [], 0
        return [self.key, frame]


class Feeds:
    """Every feed key subscribers hold; events in, batch messages out."""

    def __init__(self) -> None:
        self._feeds: dict[bytes, Feed] = {}
        self._pending: list[Feed] = []

    def __bool__(self) -> bool:
        return bool(self._feeds)

    def subscribe(self, key: bytes, prefixes: tuple[str, ...]) -> None:
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = Feed(key, prefixes)
        feed.holders += 1

    def unsubscribe(self, key: bytes) -> None:
        feed = self._feeds.get(key)
        if feed is None:
            return
        feed.holders -= 1
        if feed.holders <= 0:
            del self._feeds[key]
            if feed in self._pending:
                self._pending.remove(feed)

    def prefixes(self) -> set[str]:
        """Every prefix some feed holds."""
        return {p for feed in self._feeds.values() for p in feed.prefixes}

    def add(self, position: int, topic: str, ts: float, data: dict[str, Any]) -> list[list[bytes]]:
        """Put one event into the pending batch of each feed it matches; the batches that
        became full (messages to send now, in order). Pending is anything left for ``flush``."""
        packed = None
        full: list[list[bytes]] = []
        for feed in self._feeds.values():
            if not topic.startswith(feed.prefixes):
                continue
            if packed is None:
                try:
                    packed = packb([position, topic, ts, data], use_bin_type=True)
                except (TypeError, ValueError, OverflowError):
                    log.exception("event %s could not be packed; not in any batch", topic)
                    return self._skip(position, topic)
                if len(packed) > MAX_PACKED:
                    log.error("event %s is %d bytes packed, more than a message holds; not in any batch",
                              topic, len(packed))
                    return self._skip(position, topic)
            if feed.items and feed.size + len(packed) > BATCH_BYTES:
                self._pending.remove(feed)
                full.append(feed.take())
            if not feed.items:
                feed.prev = feed.latest
                self._pending.append(feed)
            feed.items.append(packed)
            feed.size += len(packed)
            feed.latest = position
            if len(feed.items) >= BATCH_EVENTS:
                self._pending.remove(feed)
                full.append(feed.take())
        return full

    def _skip(self, position: int, topic: str) -> list[list[bytes]]:
        """An event no batch can carry: each matching feed sends what it has and chains past
        the event, so its readers see a ``prev`` they lack and replay."""
        full = []
        for feed in self._feeds.values():
            if topic.startswith(feed.prefixes):
                if feed.items:
                    self._pending.remove(feed)
                    full.append(feed.take())
                feed.latest = position
        return full

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> list[list[bytes]]:
        """Every pending batch, as messages to send."""
        pending, self._pending = self._pending, []
        return [feed.take() for feed in pending if feed.items]

