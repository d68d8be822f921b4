"""The batched ZMQ channel: no message is ever left unread while a receiver waits."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from gaffer.common.transport import Channel, new_socket
from gaffer.testing import loop_turn


async def test_a_send_never_swallows_the_wakeup_of_a_waiting_receiver():
    """A reply that lands just before the same socket sends again still wakes the reader.

    Any call on a ZMQ socket, a send included, may consume the edge-triggered signal that
    input arrived; over inproc the echo lands synchronously, so this race happens every round.
    """
    ctx = zmq.asyncio.Context()
    server = ctx.socket(zmq.ROUTER)
    server.bind("inproc://echo")
    raw_server = zmq.Socket.shadow(server.underlying)
    client = Channel(new_socket(ctx, zmq.DEALER))
    client.sock.connect("inproc://echo")
    stuck = 0
    try:
        for _ in range(50):
            reader = asyncio.ensure_future(client.recv_batch())
            await loop_turn()  # so the reader is now waiting
            client.send([b"ping"])
            assert raw_server.poll(1000)
            raw_server.send_multipart(raw_server.recv_multipart())
            client.send([b"again"])
            assert raw_server.poll(1000)
            raw_server.recv_multipart()
            try:
                batch = await asyncio.wait_for(reader, 1.0)
            except asyncio.TimeoutError:
                stuck += 1
            else:
                assert [f.bytes for f in batch[0]] == [b"ping"]
    finally:
        client.close()
        server.close(0)
        ctx.destroy(linger=0)
    assert stuck == 0


async def test_recv_batch_times_out_empty():
    """With nothing to read, recv_batch returns an empty batch after its timeout."""
    ctx = zmq.asyncio.Context()
    sock = new_socket(ctx, zmq.DEALER)
    sock.connect("tcp://127.0.0.1:9")
    channel = Channel(sock)
    try:
        assert await channel.recv_batch(timeout=0.05) == []
    finally:
        channel.close()
        ctx.destroy(linger=0)


async def test_cancelling_a_receiver_as_input_arrives_cancels_it():
    """A receive cancelled in the same loop turn as its input arrives still ends (#7).

    ``asyncio.wait_for`` before Python 3.12 swallowed such a cancellation and the receiver ran
    on, so an agent told to stop while output flooded in sometimes never stopped.
    """
    ctx = zmq.asyncio.Context()
    server = ctx.socket(zmq.ROUTER)
    server.bind("inproc://cancel")
    client = Channel(new_socket(ctx, zmq.DEALER))
    client.sock.connect("inproc://cancel")
    survived = 0
    try:
        for _ in range(20):
            reader = asyncio.ensure_future(client.recv_batch(timeout=30.0))
            await loop_turn()  # so the reader is now waiting
            client._readable.set()
            reader.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(reader), 1.0)
            except asyncio.CancelledError:
                continue
            except asyncio.TimeoutError:
                reader.cancel()
            survived += 1
    finally:
        client.close()
        server.close(0)
        ctx.destroy(linger=0)
    assert survived == 0
