"""The in-memory channels behave as the ZeroMQ ones the code was written for: routed,
bounded, refusing what a real socket refuses, and waking their readers."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from gaffer.common.transport import Channel, MessageChannel, peer_address, user_id
from gaffer.testing.channel import MemoryChannel, MemoryRouter, channel_pair
from gaffer.testing.clock import FakeClock
from gaffer.testing import loop_turn


def members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def test_memory_and_zmq_channels_both_have_the_message_channel_interface():
    """Everything MessageChannel names exists on the real Channel and on the fake."""
    wanted = members(MessageChannel)
    fake = MemoryChannel()
    assert wanted <= set(dir(fake)) | set(vars(fake))
    assert wanted - {"sent", "received", "send_dropped"} <= set(dir(Channel))


async def test_a_router_routes_by_peer_and_stamps_identity():
    """What a DEALER sends arrives as [peer, payload] with its User-Id and address; what the
    router sends to [peer, payload] reaches only that DEALER, as [payload]."""
    router = MemoryRouter()
    one = router.connect(user_id="agent:n1", address="10.0.0.1")
    two = router.connect()
    assert one.send([b"hello"]) and two.send([b"hi"])
    first, second = await router.channel.recv_batch()
    assert first[1].bytes == b"hello" and bytes(first[1].buffer) == b"hello"
    assert user_id(first[1]) == "agent:n1" and peer_address(first[1]) == "10.0.0.1"
    assert user_id(second[1]) is None
    assert router.channel.send([second[0].bytes, b"back"])
    assert [[f.bytes for f in m] for m in await two.recv_batch()] == [[b"back"]]
    assert one.drain() == [] and router.channel.received == 2 and two.received == 1


async def test_the_router_drops_for_a_gone_or_full_peer_without_failing():
    """As a ROUTER without ROUTER_MANDATORY: the send succeeds, the message is lost (counted)."""
    router = MemoryRouter(hwm=2)
    peer = router.connect()
    peer.send([b"x"])
    (frames,) = await router.channel.recv_batch()
    ident = frames[0].bytes
    for _ in range(3):
        assert router.channel.send([ident, b"m"])
    assert peer.queued == 2 and router.lost == 1
    peer.close()
    assert router.channel.send([ident, b"m"]) and router.lost == 2
    assert router.peers() == []


async def test_a_dealer_send_to_a_full_or_closed_end_fails_and_is_counted():
    """Bounded like the real channel: past the high-water mark, send returns False."""
    a, b = channel_pair(hwm=2)
    assert a.send([b"1"]) and a.send([b"2"])
    assert not a.send([b"3"]) and a.send_dropped == 1 and a.sent == 2
    b.close()
    assert not a.send([b"4"]) and a.send_dropped == 2


async def test_an_oversized_message_is_refused_by_the_receiver():
    """Over maxmsgsize the message never arrives (ZMQ_MAXMSGSIZE), and is counted."""
    a, b = channel_pair(maxmsgsize=10)
    assert a.send([b"x" * 11])
    assert b.drain() == [] and b.oversized == 1


async def test_recv_batch_waits_on_the_fake_clock_and_wakes_on_a_message():
    """A timeout elapses only when the clock is advanced; a message wakes the reader first."""
    clock = FakeClock()
    a, b = channel_pair(clock=clock)
    waiting = asyncio.ensure_future(b.recv_batch(timeout=5))
    await loop_turn()
    clock.advance(4.9)
    await loop_turn()
    assert not waiting.done()
    clock.advance(0.1)
    assert await waiting == []
    waiting = asyncio.ensure_future(b.recv_batch(timeout=5))
    await loop_turn()
    a.send([b"now"])
    assert [[f.bytes for f in m] for m in await waiting] == [[b"now"]]


async def test_closing_wakes_the_reader_and_later_reads_fail_as_on_a_closed_socket():
    """A reader blocked in recv_batch gets the ZMQ error a closed Channel gives."""
    _, b = channel_pair()
    waiting = asyncio.ensure_future(b.recv_batch())
    await loop_turn()
    b.close()
    with pytest.raises(zmq.ZMQError):
        await waiting


async def test_on_readable_is_called_on_a_later_turn_not_inside_the_send():
    """A callback reader runs after the sender's call returns, once per burst."""
    a, b = channel_pair()
    calls: list[int] = []
    b.on_readable = lambda: calls.append(len(b.drain()))
    a.send([b"1"])
    a.send([b"2"])
    assert calls == []
    await loop_turn()
    assert calls == [2]
