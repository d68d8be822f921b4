"""The Python client of a gaffer controller: requests and event subscriptions.

``AsyncClient`` is for asyncio code; ``Client`` is the same thing for plain scripts (it runs a
private event loop). Every request has a timeout: an unreachable controller raises
``ControllerUnreachable`` naming the endpoint, never hangs. Errors the controller reports come
back as the same ``GafferError`` classes the controller raised (matched by code).

::

    with Client("tcp://127.0.0.1:6001") as client:
        for node in client.call("nodes"):
            print(node["name"], node["state"])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Iterable, TypeVar

import msgpack
import uvloop
import zmq
import zmq.asyncio

from gaffer.common import protocol
from gaffer.common.endpoints import check_reachable, parse_endpoint
from gaffer.common.errors import ConfigError, ControllerUnreachable, ProtocolError, TemplateError, from_wire
from gaffer.common.keys import KeyPair
from gaffer.common.transport import Channel, connect, make_curve_client, new_socket

DEFAULT_TIMEOUT = 5.0
PAGE = 2_000
APPLY_PART_BYTES = 1024 * 1024
"""Templates per apply request, by encoded size: a quarter of a message, leaving room."""
"""Items per page when a listing is fetched whole (a page stays far below a message)."""
MAX_TIMEOUT = 86_400.0
T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """A client key pair and the controller's public key, for CURVE."""

    keys: KeyPair
    controller_key: bytes


@dataclass(frozen=True)
class ReceivedEvent:
    seq: int
    topic: str
    ts: float
    data: dict[str, Any]
    missed: int = 0
    """How many sequence numbers were skipped since the previous event (0: none)."""


def split_by_size(items: list[Any], budget: int) -> list[list[Any]]:
    """``items`` in order, cut into lists whose encoded size stays within ``budget`` (an item
    bigger than that goes alone)."""
    parts: list[list[Any]] = [[]]
    used = 0
    for item in items:
        size = len(msgpack.packb(item, use_bin_type=True)) + 8
        if parts[-1] and used + size > budget:
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += size
    return parts


def check_timeout(value: float) -> float:
    """A request timeout: a finite number of seconds, 0 < value <= a day (ConfigError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise ConfigError(f"timeout: must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {value!r}")
    return float(value)


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
        frame = protocol.encode("request", self._seq, {"id": request_id, "op": op, "args": args})
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        wait = self.timeout if timeout is None else check_timeout(timeout)
        try:
            channel.send([frame])
            async with asyncio.timeout(wait):
                body = await future
        except TimeoutError:
            self._reset()
            raise ControllerUnreachable(
                f"no answer from the controller at {self.endpoint} within {wait:g}s "
                "(is gaffer-controller running there? check --controller / GAFFER_CONTROLLER"
                + (" and the keys" if self.credentials else "") + ")"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if not body["ok"]:
            raise from_wire(body["error"])
        return body["result"]

    async def apply(self, templates: list[dict[str, Any]], source: str | None = None) -> Any:
        """Apply templates (plain data) all or nothing, however many: an apply too big for one
        message goes in parts to a stage that the last request commits (see the controller's
        ``staging``)."""
        problems = protocol.oversized_templates(templates)
        if problems:
            raise TemplateError(problems, source=source)
        parts = split_by_size(templates, APPLY_PART_BYTES)
        if len(parts) == 1:
            return await self.call("apply", templates=parts[0], source=source)
        stage = secrets.token_urlsafe(24)
        for part in parts[:-1]:
            await self.call("stage_apply", stage=stage, templates=part, source=source)
        return await self.call("apply", stage=stage, templates=parts[-1], source=source)

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
                try:
                    message = protocol.decode(frames[-1].buffer, protocol.CONTROLLER_TO_CLIENT)
                except ProtocolError:
                    continue
                future = self._pending.get(message.body["id"])
                if future is not None and not future.done():
                    future.set_result(message.body)

    def _reset(self) -> None:
        """Drop the socket after a timeout so a late reply cannot answer a later request."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def events(
        self, prefixes: Iterable[str] = ("",), endpoint: str | None = None
    ) -> AsyncIterator[ReceivedEvent]:
        """Events from the controller's hub whose topics start with one of ``prefixes``.

        ``missed`` on each event counts the sequence numbers skipped before it (events this
        subscription filtered out, or ones dropped because it read too slowly).
        """
        if endpoint is None:
            endpoint = (await self.call("status"))["events"]
        events = parse_endpoint(endpoint, "events endpoint")
        check_reachable(events)
        sock = self._socket(zmq.SUB)
        for prefix in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        connect(sock, events)
        channel = Channel(sock)
        last = 0
        try:
            while True:
                for frames in await channel.recv_batch():
                    try:
                        message = protocol.decode(frames[-1].buffer, protocol.PUBLISHED)
                    except ProtocolError:
                        continue
                    body = message.body
                    missed = body["seq"] - last - 1 if last and body["seq"] > last + 1 else 0
                    last = body["seq"]
                    yield ReceivedEvent(body["seq"], body["topic"], body["ts"], body["data"], missed)
        finally:
            channel.close()

    async def close(self) -> None:
        self._reset()
        self._ctx.destroy(linger=0)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """A blocking client for scripts and the CLI (one private event loop)."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = AsyncClient(endpoint, credentials, timeout)
        self._loop = uvloop.new_event_loop()
        self._streams: weakref.WeakSet[Generator[ReceivedEvent, None, None]] = weakref.WeakSet()

    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        return self._loop.run_until_complete(self._client.call(op, timeout=timeout, **args))

    def listing(self, op: str, page: int = PAGE, **args: Any) -> list[dict[str, Any]]:
        return self._loop.run_until_complete(self._client.listing(op, page, **args))

    def apply(self, templates: list[dict[str, Any]], source: str | None = None) -> Any:
        return self._loop.run_until_complete(self._client.apply(templates, source))

    def run(self, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run ``work(async_client)`` to completion on this client's loop."""
        return self._loop.run_until_complete(work(self._client))

    def events(self, prefixes: Iterable[str] = ("",)) -> Iterable[ReceivedEvent]:
        """Blocking iterator over events (Ctrl-C to stop). Leaving the loop early is fine:
        ``close`` ends every iterator still open while the loop can still run its cleanup."""
        stream = self._events(prefixes)
        self._streams.add(stream)
        return stream

    def _events(self, prefixes: Iterable[str]) -> Generator[ReceivedEvent, None, None]:
        stream = self._client.events(prefixes)
        try:
            while True:
                step = asyncio.ensure_future(stream.__anext__(), loop=self._loop)
                try:
                    event = self._loop.run_until_complete(step)
                except BaseException:
                    # Ctrl-C lands while the stream awaits: end that step first, or closing
                    # the stream fails with "asynchronous generator is already running".
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        self._loop.run_until_complete(step)
                    raise
                yield event
        finally:
            if not self._loop.is_closed():
                self._loop.run_until_complete(stream.aclose())

    def close(self) -> None:
        """End open event iterators, the sockets, then the loop (a second call does nothing).

        An iterator left by ``break`` would otherwise be finalized later, by the garbage
        collector, on a closed loop: "RuntimeError: Event loop is closed" (issue 9, item 9)."""
        if self._loop.is_closed():
            return
        for stream in list(self._streams):
            stream.close()
        self._loop.run_until_complete(self._client.close())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
