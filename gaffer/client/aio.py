"""``AsyncClient``: the controller's client for asyncio code (the daemons, tests, benches).

It shares every frame and answer with the blocking ``Client`` (``wire``) and differs in how it
waits: one reader task matches replies to requests by id, on the caller's loop.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, AsyncIterator, Iterable

import zmq
import zmq.asyncio

from gaffer.client import wire
from gaffer.client.resume import QUIET, Item, Replay, Resume, Step
from gaffer.client.wire import DEFAULT_TIMEOUT, PAGE, Credentials, check_timeout
from gaffer.common.endpoints import check_reachable, parse_endpoint
from gaffer.common.errors import ControllerUnreachable
from gaffer.common.transport import Channel, connect, make_curve_client, new_socket


class AsyncClient:
    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._endpoint = parse_endpoint(endpoint, "controller")
        self.endpoint = str(self._endpoint)
        self.credentials = credentials
        self.timeout = check_timeout(timeout)
        self._ctx = zmq.asyncio.Context()
        self._channel: Channel | None = None
        self._ids = itertools.count(1)
        self._seq = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = new_socket(self._ctx, kind)
        if self.credentials is not None:
            make_curve_client(sock, self.credentials.keys, self.credentials.controller_key)
        return sock

    def _ensure_connected(self) -> Channel:
        if self._channel is None:
            check_reachable(self._endpoint)
            sock = self._socket(zmq.DEALER)
            connect(sock, self._endpoint)
            self._channel = Channel(sock)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._channel))
        return self._channel

    async def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Ask the controller to do ``op``; its result, or the GafferError it reported."""
        channel = self._ensure_connected()
        request_id = next(self._ids)
        self._seq += 1
        frame = wire.request_frame(self._seq, request_id, op, args)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        wait = self.timeout if timeout is None else check_timeout(timeout)
        try:
            channel.send([frame])
            async with asyncio.timeout(wait):
                body = await future
        except TimeoutError:
            self._reset()
            raise wire.unreachable(self.endpoint, wait, self.credentials is not None) from None
        finally:
            self._pending.pop(request_id, None)
        return wire.result_of(body)

    async def apply(self, templates: list[dict[str, Any]], source: str | None = None) -> Any:
        """Apply templates (plain data) all or nothing, however many: an apply too big for one
        message goes in parts to a stage that the last request commits (see the controller's
        ``staging``)."""
        result = None
        for op, args in wire.apply_requests(templates, source):
            result = await self.call(op, **args)
        return result

    async def listing(self, op: str, page: int = PAGE, **args: Any) -> list[dict[str, Any]]:
        """Every item of a listing (``nodes``, ``templates``, ``ps``), fetched ``page`` at a
        time so a listing of any size fits the wire."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            extra = {"continue": token} if token is not None else {}
            result = await self.call(op, limit=page, **args, **extra)
            items.extend(result["items"])
            token = result["continue"]
            if token is None:
                return items

    async def _read(self, channel: Channel) -> None:
        while True:
            for frames in await channel.recv_batch():
                body = wire.reply_body(frames[-1].buffer)
                if body is None:
                    continue
                future = self._pending.get(body["id"])
                if future is not None and not future.done():
                    future.set_result(body)

    def _reset(self) -> None:
        """Drop the socket after a timeout so a late reply cannot answer a later request."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def events(
        self, prefixes: Iterable[str] = ("",), since: int | None = None, endpoint: str | None = None
    ) -> AsyncIterator[Item]:
        """The events whose topics start with one of ``prefixes``, each once and in order, from
        ``since`` (a position; None: from now); an ``EventsLost`` and a ``Snapshot`` where the
        controller no longer holds what this subscriber missed (see ``resume``). ``endpoint``
        names the event endpoint instead of asking ``status`` for it."""
        resume = Resume(prefixes, since)
        if endpoint is None:
            endpoint = wire.events_endpoint(await self.call("status"))
        events = parse_endpoint(endpoint, "events endpoint")
        check_reachable(events)
        sock = self._socket(zmq.SUB)
        monitor = Channel(sock.get_monitor_socket(wire.LINK_EVENTS))
        sock.setsockopt(zmq.SUBSCRIBE, wire.feed_key(resume.prefixes))
        connect(sock, events)
        channel = Channel(sock)
        link = wire.LinkWatch()
        try:
            for item in await self._carry(resume, resume.start()):
                yield item
            while True:
                batch = await channel.recv_batch(timeout=QUIET)
                steps = [resume.reconnected() for frames in monitor.drain() if link.saw([f.bytes for f in frames])]
                if not batch and not steps:
                    steps.append(resume.quiet())
                for step in steps:
                    for item in await self._carry(resume, step):
                        yield item
                for frames in batch:
                    body = wire.batch_body(frames[-1].buffer)
                    if body is None:
                        continue
                    step = resume.published(body["prev"], body["events"])
                    for item in step.deliver if step.ask is None else await self._carry(resume, step):
                        yield item
        finally:
            monitor.close()
            channel.close()

    async def _carry(self, resume: Resume, step: Step) -> list[Item]:
        """What a step delivers, with the answers to what it asks, until a step asks nothing.
        A controller that does not answer leaves the request for the next quiet tick."""
        items = list(step.deliver)
        while step.ask is not None:
            op = "replay" if isinstance(step.ask, Replay) else "snapshot"
            try:
                answer = await self.call(op, **step.ask.args())
            except ControllerUnreachable:
                resume.failed()
                break
            step = resume.replayed(answer) if op == "replay" else resume.snapshot_page(answer)
            items.extend(step.deliver)
        return items

    async def close(self) -> None:
        self._reset()
        self._ctx.destroy(linger=0)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
