"""Events in batches on real sockets: bursts reach each client subscription packed by its feed,
exactly its events, once and in order, beside a plain per-event subscriber (issue 10)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
import zmq
import zmq.asyncio

from gaffer.client import AsyncClient, ReceivedEvent
from gaffer.common import protocol
from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import loop_turn, poll_until

TOPICS = ("test.a.x", "test.b.y", "other.z")
ROUNDS, BURST = 3, 1_000
TIMEOUT = 20.0


@pytest.fixture
async def controller(tmp_path) -> AsyncIterator[Controller]:
    ctl = Controller(ControllerSettings(
        bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "data", insecure=True,
    ))
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


async def _collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


async def test_bursts_reach_each_subscription_exactly_once_in_order_and_nothing_else(controller: Controller):
    """A narrow prefix, everything, and two prefixes, all fed by batches: each gets exactly the
    events its prefixes match, in position order, with no loss marker and no replay needed; a
    plain SUB of a topic prefix still gets one per-event message each, never a batch."""
    client = AsyncClient(controller.endpoint)
    subscriptions = {("test.a.",): [], ("",): [], ("test.a.", "test.b."): []}
    streams = [client.events(list(prefixes)) for prefixes in subscriptions]
    tasks = [asyncio.get_running_loop().create_task(_collect(stream, into))
             for stream, into in zip(streams, subscriptions.values())]
    ctx = zmq.asyncio.Context()
    plain = ctx.socket(zmq.SUB)
    plain.setsockopt(zmq.SUBSCRIBE, b"test.a.")
    plain.connect(controller.pub_endpoint)
    replays = 0
    ops = controller.requests._ops  # type: ignore[union-attr]
    replay = ops["replay"]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal replays
        replays += 1
        return await replay(*args, **kwargs)

    ops["replay"] = counted
    try:
        await poll_until(lambda: len(controller.hub._feeds._feeds) == 3 and "test.a." in controller.hub._prefixes,
                         TIMEOUT, "the subscriptions")
        first = controller.hub.seq + 1
        for _ in range(ROUNDS):
            for n in range(BURST):
                controller.hub.publish(TOPICS[n % len(TOPICS)], {"n": n})
            await loop_turn()
        published = [(seq, TOPICS[(seq - first) % BURST % len(TOPICS)]) for seq in range(first, controller.hub.seq + 1)]
        for prefixes, into in subscriptions.items():
            want = [seq for seq, topic in published if topic.startswith(prefixes)]
            await poll_until(lambda: len(into) >= len(want), TIMEOUT, f"the events of {prefixes}")
            assert all(isinstance(item, ReceivedEvent) for item in into)
            assert [e.seq for e in into] == want
            assert all(e.topic.startswith(prefixes) for e in into)
        kinds, plain_seqs = set(), []
        want_plain = [seq for seq, topic in published if topic.startswith("test.a.")]
        while len(plain_seqs) < len(want_plain):
            frames = await asyncio.wait_for(plain.recv_multipart(), TIMEOUT)
            message = protocol.decode(frames[1], protocol.PUBLISHED)
            kinds.add(message.kind)
            plain_seqs.append(message.body["seq"])
        assert kinds == {"event"}
        assert plain_seqs == want_plain
        assert replays == 0
    finally:
        ops["replay"] = replay
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        plain.close(0)
        ctx.term()
        await client.close()
