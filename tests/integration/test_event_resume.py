"""A subscriber on real sockets misses nothing: cut and reconnected, or too slow for the PUB
high-water mark, it gets every matching event once and in order (issue 10; needs the
controller's replay and snapshot operations)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

import gaffer.controller.controller as controller_module
from gaffer.client import AsyncClient, EventsLost, ReceivedEvent, Snapshot
from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.testing import loop_turn, poll_until


class CuttableProxy:
    """A TCP forwarder in front of the controller's event endpoint; ``cut`` closes every
    connection through it while it keeps listening, so the SUB socket reconnects through it."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()
        self.accepted = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            owned = asyncio.get_running_loop().create_task(task)
            self._tasks.add(owned)
            owned.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


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


class Reader:
    """Reads a client's event stream in a task the test owns; ``paused`` stops it reading."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.items: list[Any] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self._stream = stream
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for item in self._stream:
            self.items.append(item)
            await self.reading.wait()

    def events(self, prefix: str = "") -> list[ReceivedEvent]:
        return [i for i in self.items if isinstance(i, ReceivedEvent) and i.topic.startswith(prefix)]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._stream.aclose()  # type: ignore[attr-defined]


def publish(controller: Controller, count: int, start: int) -> list[int]:
    """``count`` matching events, each followed by one the subscriber filters out; their numbers."""
    for n in range(start, start + count):
        controller.hub.publish("test.event", {"n": n})
        controller.hub.publish("other.event", {"n": n})
    return list(range(start, start + count))


async def test_a_subscriber_cut_and_reconnected_misses_nothing(controller: Controller):
    """Events published while the SUB connection is cut arrive after it reconnects, once and in
    order, with no EventsLost, and the filtered-out ones are never reported."""
    host, port = controller.pub_endpoint.removeprefix("tcp://").rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    client = AsyncClient(controller.endpoint)
    reader = Reader(client.events(["test."], since=0, endpoint=f"tcp://127.0.0.1:{proxy.port}"))
    try:
        sent = publish(controller, 10, 1)
        await poll_until(lambda: len(reader.events()) == 10, 10, "the first ten events")
        await poll_until(lambda: controller.hub.holds("test."), 10, "the subscription")
        proxy.cut()
        sent += publish(controller, 10, 11)
        await poll_until(lambda: proxy.accepted >= 2, 10, "the SUB socket to reconnect")
        await poll_until(lambda: len(reader.events()) >= 20, 15, "the events published while cut")
        sent += publish(controller, 10, 21)
        await poll_until(lambda: len(reader.events()) >= 30, 10, "the events after the reconnect")
        assert [e.data["n"] for e in reader.events()] == sent
        seqs = [e.seq for e in reader.events()]
        assert seqs == sorted(set(seqs))
        assert not [i for i in reader.items if isinstance(i, (EventsLost, Snapshot))]
    finally:
        await reader.close()
        await client.close()
        await proxy.close()


async def test_a_subscriber_that_stops_reading_past_the_high_water_mark_misses_nothing(tmp_path, monkeypatch):
    """A reader that stalls while far more events than the PUB and SUB queues hold go by gets
    every one of them when it reads again, in order, with no EventsLost."""
    monkeypatch.setattr(controller_module, "PUB_HWM", 50)
    ctl = Controller(ControllerSettings(
        bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "data", insecure=True,
    ))
    await ctl.start()
    client = AsyncClient(ctl.endpoint)
    reader = Reader(client.events(["test."], since=0))
    try:
        sent = publish(ctl, 1, 1)
        await poll_until(lambda: len(reader.events()) == 1 and ctl.hub.holds("test."), 10, "the subscription")
        reader.reading.clear()
        for start in range(2, 20_002, 1_000):
            sent += publish(ctl, 1_000, start)
            await loop_turn()  # the XPUB queue fills and overflows, as in a busy loop
        reader.reading.set()
        await poll_until(lambda: len(reader.events()) >= len(sent), 30, "every event")
        assert [e.data["n"] for e in reader.events()] == sent
        assert not [i for i in reader.items if isinstance(i, (EventsLost, Snapshot))]
    finally:
        await reader.close()
        await client.close()
        await ctl.stop()
