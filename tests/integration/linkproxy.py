"""A TCP proxy between agents and the controller whose agent -> controller direction can pause.

While paused, what agents send is held here, in order (the controller hears nothing and, after
its timeout, holds the node down), and what the controller sends still reaches them; ``resume``
delivers the held bytes, late, as a slow network would. ZMQ's framing runs end to end through
it, so both sides see one ordinary TCP connection each.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Pair:
    def __init__(self, writer: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.upstream = upstream
        self.held: list[bytes] = []
        self.ended = False
        """The agent closed its side: close ours once the held bytes are delivered."""


class LinkProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._pairs: list[_Pair] = []
        self._tasks: set[asyncio.Task] = set()
        self.paused = False
        self.endpoint = ""

    @classmethod
    def to(cls, endpoint: str) -> LinkProxy:
        """A proxy to a ``tcp://host:port`` endpoint."""
        host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
        return cls(host, int(port))

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.endpoint = f"tcp://127.0.0.1:{port}"
        return self.endpoint

    def pause(self) -> None:
        """Hold what agents send from now on."""
        self.paused = True

    def resume(self) -> None:
        """Deliver what was held, in order, and forward again."""
        self.paused = False
        for pair in list(self._pairs):
            for chunk in pair.held:
                pair.upstream.write(chunk)
            pair.held.clear()
            if pair.ended:
                self._close(pair)

    def held(self) -> bytes:
        """Everything held so far, all connections."""
        return b"".join(chunk for pair in self._pairs for chunk in pair.held)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pair in list(self._pairs):
            self._close(pair)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, upstream = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pair = _Pair(writer, upstream)
        self._pairs.append(pair)
        for pump in (self._up(reader, pair), self._down(up_reader, pair)):
            task = asyncio.get_running_loop().create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _up(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Agent -> controller, held while paused; ends with the agent's side."""
        while chunk := await reader.read(65_536):
            if self.paused:
                pair.held.append(chunk)
            else:
                pair.upstream.write(chunk)
        pair.ended = True
        if not pair.held:
            self._close(pair)

    async def _down(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Controller -> agent, never held; ends with the controller's side."""
        while chunk := await reader.read(65_536):
            pair.writer.write(chunk)
        self._close(pair)

    def _close(self, pair: _Pair) -> None:
        if pair in self._pairs:
            self._pairs.remove(pair)
        pair.writer.close()
        pair.upstream.close()
