"""``Client``: the controller's client for plain scripts and ``gafferctl``, blocking.

It speaks exactly what ``AsyncClient`` speaks (``wire``) over plain pyzmq sockets, waiting with
``zmq_poll``: no event loop, so a one-shot command never imports asyncio or uvloop (about a
third of ``gafferctl``'s start-up once) and Ctrl-C lands in a plain blocking call.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Iterator, TypeVar

import zmq

from gaffer.client import wire
from gaffer.client.resume import QUIET, Item, Replay, Resume, Step
from gaffer.client.wire import DEFAULT_TIMEOUT, PAGE, Credentials, check_timeout
from gaffer.common.endpoints import Endpoint, check_reachable, parse_endpoint
from gaffer.common.errors import ControllerUnreachable
from gaffer.common.sockets import connect, make_curve_client, new_socket

if TYPE_CHECKING:
    import asyncio

    from gaffer.client.aio import AsyncClient

T = TypeVar("T")
RECV_BATCH = 1_000


class Client:
    """A blocking client (one DEALER for requests, a SUB per ``events`` loop)."""

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
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: AsyncClient | None = None

    def _socket(self, kind: int, endpoint: Endpoint) -> zmq.Socket:
        check_reachable(endpoint)
        sock = new_socket(self._ctx, kind)
        try:
            if self.credentials is not None:
                make_curve_client(sock, self.credentials.keys, self.credentials.controller_key)
            if kind == zmq.SUB:
                return sock
            connect(sock, endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Ask the controller to do ``op``; its result, or the GafferError it reported."""
        if self._sock is None:
            self._sock = self._socket(zmq.DEALER, self._endpoint)
        sock = self._sock
        request_id = next(self._ids)
        self._seq += 1
        frame = wire.request_frame(self._seq, request_id, op, args)
        wait = self.timeout if timeout is None else check_timeout(timeout)
        deadline = time.monotonic() + wait
        if _wait(sock, zmq.POLLOUT, deadline):
            sock.send(frame, zmq.NOBLOCK)
            while _wait(sock, zmq.POLLIN, deadline):
                body = wire.reply_body(sock.recv_multipart(zmq.NOBLOCK)[-1])
                if body is not None and body["id"] == request_id:
                    return wire.result_of(body)
        self._reset()
        raise wire.unreachable(self.endpoint, wait, self.credentials is not None)

    def listing(self, op: str, page: int = PAGE, **args: Any) -> list[dict[str, Any]]:
        """Every item of a listing (``nodes``, ``templates``, ``ps``), ``page`` at a time."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            extra = {"continue": token} if token is not None else {}
            result = self.call(op, limit=page, **args, **extra)
            items.extend(result["items"])
            token = result["continue"]
            if token is None:
                return items

    def apply(self, templates: list[dict[str, Any]], source: str | None = None) -> Any:
        """Apply templates (plain data) all or nothing, in parts when too big for one message."""
        result = None
        for op, args in wire.apply_requests(templates, source):
            result = self.call(op, **args)
        return result

    def events(self, prefixes: Iterable[str] = ("",), since: int | None = None) -> Iterator[Item]:
        """Blocking iterator over the events whose topics start with one of ``prefixes``, each
        once and in order, from ``since`` (a position; None: from now). Where the controller no
        longer holds what this subscriber missed: an ``EventsLost`` and a ``Snapshot`` (see
        ``resume``). Ctrl-C, or leaving the loop, ends it and closes its sockets."""
        resume = Resume(prefixes, since)
        endpoint = parse_endpoint(wire.events_endpoint(self.call("status")), "events endpoint")
        sock = self._socket(zmq.SUB, endpoint)
        monitor = sock.get_monitor_socket(wire.LINK_EVENTS)
        try:
            sock.setsockopt(zmq.SUBSCRIBE, wire.feed_key(resume.prefixes))
            connect(sock, endpoint)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            link = wire.LinkWatch()
            yield from self._carry(resume, resume.start())
            while True:
                ready = dict(poller.poll(int(QUIET * 1000)))
                if not ready:
                    yield from self._carry(resume, resume.quiet())
                    continue
                while monitor in ready and _readable(monitor):
                    if link.saw(monitor.recv_multipart(zmq.NOBLOCK)):
                        yield from self._carry(resume, resume.reconnected())
                for _ in range(RECV_BATCH):
                    body = _read_batch(sock)
                    if body is _NONE_WAITING:
                        break
                    if body is not None:
                        step = resume.published(body["prev"], body["events"])
                        if step.ask is None:
                            yield from step.deliver
                        else:
                            yield from self._carry(resume, step)
        finally:
            # No disable_monitor(): after Client.close() the socket is gone already, and closing
            # both (a no-op then) ends the monitor too.
            monitor.close(linger=0)
            sock.close(linger=0)

    def _carry(self, resume: Resume, step: Step) -> Iterator[Item]:
        """Deliver a step and answer what it asks, until a step asks nothing. A controller
        that does not answer leaves the request for the next quiet tick or reconnect."""
        while True:
            yield from step.deliver
            ask = step.ask
            if ask is None:
                return
            op = "replay" if isinstance(ask, Replay) else "snapshot"
            try:
                answer = self.call(op, **ask.args())
            except ControllerUnreachable:
                resume.failed()
                return
            step = resume.replayed(answer) if op == "replay" else resume.snapshot_page(answer)

    def run(self, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run ``work(async_client)`` to completion on a private event loop, for what needs
        several things at once (``gafferctl run``: output, stdin, signals, lease). The loop and
        the ``AsyncClient`` (its own connection) are made on first use, and only then are
        asyncio and uvloop imported."""
        if self._loop is None:
            import uvloop

            from gaffer.client.aio import AsyncClient

            self._loop = uvloop.new_event_loop()
            self._async = AsyncClient(self.endpoint, self.credentials, self.timeout)
        assert self._async is not None
        return self._loop.run_until_complete(work(self._async))

    def _reset(self) -> None:
        """Drop the socket after a timeout so a late reply cannot answer a later request."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        """Close the sockets (and ``run``'s loop); a second call does nothing. An ``events``
        iterator left by ``break`` holds no loop: its socket simply goes with the context."""
        if self._loop is not None and not self._loop.is_closed():
            assert self._async is not None
            self._loop.run_until_complete(self._async.close())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
        self._reset()
        if not self._ctx.closed:
            self._ctx.destroy(linger=0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NONE_WAITING: Any = object()


def _read_batch(sock: zmq.Socket) -> dict[str, Any] | None:
    """The next published batch's body (None: a message that is not one, dropped), or
    ``_NONE_WAITING``.

    The hub sends each batch as two frames, feed key and body, and they are read as two plain
    copied ``recv`` calls: ``recv_multipart`` asks ZMQ_RCVMORE after every frame, and that
    asking cost four times the reading (2.6 vs 0.5 us a message). A message of another shape
    is found by its body not decoding; the rest of it is then drained, so the reader is in
    step again (what it lost, replay recovers).
    """
    try:
        sock.recv(zmq.NOBLOCK)
    except zmq.Again:
        return _NONE_WAITING
    try:
        frame = sock.recv(zmq.NOBLOCK)
    except zmq.Again:
        return None
    body = wire.batch_body(frame)
    if body is None:
        while sock.getsockopt(zmq.RCVMORE):
            sock.recv(zmq.NOBLOCK)
    return body


def _readable(sock: zmq.Socket) -> bool:
    return bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def _wait(sock: zmq.Socket, event: int, deadline: float) -> bool:
    """Until ``sock`` is ready for ``event`` (True) or ``deadline`` passes (False)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if sock.poll(max(1, math.ceil(left * 1000)), event):
            return True
