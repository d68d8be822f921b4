"""The HTTP event stream, ``GET /v1/events``, as Server-Sent Events.

The stream reads the controller's own event log, in process: positions are the log's, and a
resume (``?since=N`` or ``Last-Event-ID: N``) is a replay of the log from N, the same replay
the ``replay`` operation answers. Nothing is lost between the replay and the live events: the
stream subscribes to the hub's local bus first and then reads the log from its position, so
the bus only says *when* to read, and the log says *what*. When the log no longer holds the
events after N, the stream says so (``event: lost`` with the positions) and sends the state
instead (``event: snapshot``, stamped with its position), then goes on from there: the same
Clone pattern as ``gaffer.client.resume``, without its gap rule, which a reader of the log
itself does not need.

::

    subscribe(bus, prefixes, bounded) ─► position = since | snapshot | head
       loop: log.replay(position) ─► id: <position> / data: {...}   (or lost + snapshot)
             wait: a bus event ─► read the log again
                   15 s quiet  ─► ": keepalive"
                   5 s (stats) ─► event: stats

Each stream's bus queue is bounded (STREAM_QUEUE): a stream whose reader does not keep up
fills it while it waits in a write, the bus cuts it off, and the stream ends; so does a write
that waits longer than ``sse.WRITE_STALL``. The hub and the other streams never wait for it;
its client reconnects with ``Last-Event-ID`` and replays from the log.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from aiohttp import web

from gaffer.common.bus import Event, Subscription
from gaffer.common.errors import InvalidArgument, SubscriberTooSlow, SubscriptionClosed
from gaffer.common.limits import MAX_INT
from gaffer.common.roles import Role
from gaffer.controller.eventops import prefixes as check_prefixes
from gaffer.controller.http.context import CONTEXT, Route
from gaffer.controller.http.sse import SseWriter, StreamEnded, comment, message

STREAM_QUEUE = 2_000
"""Events one stream may fall behind the hub (while its reader is slow) before it is ended."""
KEEPALIVE = 15.0
"""Seconds of quiet before a ``: keepalive`` comment."""
STATS_EVERY = 5.0
"""Seconds between two ``event: stats`` (``?stats=1``): the agents' default push interval."""
GONE_CHECK = 1.0
"""Seconds between two looks at whether a quiet stream's client hung up (its hold released)."""
REPLAY_BATCH = 1_000
SNAPSHOT_PAGE = 2_000

Frame = Callable[[Event], bytes]
Lost = Callable[[int, int], Awaitable[tuple[bytes, int]]]
"""``(first, last)`` positions lost -> what to send, and the position to go on from."""


def query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    """Query parameter ``name`` as an integer in ``low..high`` (None when absent)."""
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidArgument(name, f"must be an integer in {low}..{high}, got {text[:40]!r}")
    return int(text)


def query_flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "0")
    if text not in ("0", "1", "true", "false"):
        raise InvalidArgument(name, f"must be 1 or 0, got {text[:40]!r}")
    return text in ("1", "true")


def since_of(request: web.Request) -> int | None:
    """Where to resume: ``?since=N``, else the ``Last-Event-ID`` header a reconnect sends."""
    since = query_int(request, "since", 0, MAX_INT)
    if since is not None:
        return since
    last = request.headers.get("Last-Event-ID")
    if last is None or last == "":
        return None
    if not last.isdigit() or int(last) > MAX_INT:
        raise InvalidArgument("Last-Event-ID", f"must be an event position (an integer >= 0), got {last[:40]!r}")
    return int(last)


def event_message(event: Event) -> bytes:
    """``id: <position>`` and ``{"position", "topic", "ts", "event"}`` (``event``: the payload)."""
    body = {"position": event.seq, "topic": event.topic, "ts": event.ts, "event": event.data}
    return message(body, ident=event.seq)


async def snapshot(ops: Any) -> dict[str, Any]:
    """Nodes, templates and instances at one position, every page of ``snapshot`` joined."""
    rows: dict[str, list[Any]] = {"node": [], "template": [], "instance": []}
    args: dict[str, Any] = {"limit": SNAPSHOT_PAGE}
    while True:
        page = await ops["snapshot"](args)
        for item in page["items"]:
            rows[item["kind"]].append(item["data"])
        if page["continue"] is None:
            break
        args = {"limit": SNAPSHOT_PAGE, "continue": page["continue"]}
    return {"position": page["position"], "nodes": rows["node"], "templates": rows["template"],
            "instances": rows["instance"]}


class Reader:
    """One stream's view of the hub: a bounded bus subscription that wakes it, and the log it
    reads from ``position`` on."""

    def __init__(self, hub: Any, prefixes: list[str], queue: int | None = None) -> None:
        self.hub = hub
        self.prefixes = tuple(prefixes)
        self.sub: Subscription = hub.bus.subscribe(self.prefixes, maxsize=queue or STREAM_QUEUE)
        self.position: int = hub.log.last

    def close(self) -> None:
        self.sub.close()

    async def catch_up(self, writer: SseWriter, frame: Frame, lost: Lost) -> None:
        """Send every matching event after ``position`` the log holds (or what ``lost`` says
        when it no longer holds them), up to its newest."""
        log = self.hub.log
        while True:
            answer = log.replay(self.position, self.prefixes, REPLAY_BATCH)
            if answer.too_old:
                data, self.position = await lost(self.position + 1, answer.horizon)
                await writer.write(data)
                continue
            if answer.events:
                await writer.write(b"".join(frame(event) for event in answer.events))
            self.position = answer.upto
            if answer.upto >= answer.last:
                return

    async def wait(self, timeout: float) -> bool:
        """Whether an event came within ``timeout`` seconds (the queue is emptied: the log
        has them all). SubscriberTooSlow when the bus cut this stream off."""
        sub = self.sub
        if sub.get_nowait() is None:
            try:
                await asyncio.wait_for(sub.get(), timeout)
            except asyncio.TimeoutError:
                return False
        while sub.get_nowait() is not None:
            pass
        return True


class Ticks:
    """When the quiet stream says it is alive, and when it sends stats (``?stats=1``)."""

    def __init__(self, now: float, stats: Callable[[], bytes | None] | None) -> None:
        self.keepalive = now + KEEPALIVE
        self.stats = stats
        self.next_stats = now if stats is not None else float("inf")

    def timeout(self, now: float) -> float:
        return max(0.0, min(self.keepalive, self.next_stats) - now)

    def due(self, now: float) -> bytes:
        out = b""
        if self.stats is not None and now >= self.next_stats:
            self.next_stats = now + STATS_EVERY
            out += self.stats() or b""
        if out or now >= self.keepalive:
            out = out or comment("keepalive")
            self.keepalive = now + KEEPALIVE
        return out


async def run_stream(writer: SseWriter, reader: Reader, frame: Frame, lost: Lost,
                     stats: Callable[[], bytes | None] | None = None) -> None:
    """Catch up, then follow the hub until the reader leaves, stalls or falls too far behind."""
    loop = asyncio.get_running_loop()
    ticks = Ticks(loop.time(), stats)
    try:
        while True:
            before = writer.written
            await reader.catch_up(writer, frame, lost)
            if writer.written != before:
                ticks.keepalive = loop.time() + KEEPALIVE
            await reader.wait(min(GONE_CHECK, ticks.timeout(loop.time())))
            if writer.gone():
                return
            data = ticks.due(loop.time())
            if data:
                await writer.write(data)
    except (StreamEnded, SubscriberTooSlow, SubscriptionClosed):
        return


def stats_source(controller: Any) -> Callable[[], bytes | None]:
    """``event: stats``: the samples the agents pushed (the controller's stat cache) that are
    newer than the last ones sent, as ``{"instances": {id: {"cpu", "mem", "children"}}}``."""
    sent: dict[str, float] = {}

    def render() -> bytes | None:
        cache = getattr(controller, "stat_cache", None)
        if cache is None:
            return None
        fresh = {}
        for ident, sample in cache.items():
            if sent.get(ident) != sample.sampled_at:
                sent[ident] = sample.sampled_at
                fresh[ident] = {"cpu": sample.cpu, "mem": sample.mem, "children": sample.children}
        return message({"instances": fresh}, event="stats") if fresh else None

    return render


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events?prefix=P&since=N[&snapshot=1][&stats=1]``."""
    wanted = check_prefixes({"prefix": request.query.getall("prefix", [""])}, "prefix")
    since = since_of(request)
    with_snapshot = query_flag(request, "snapshot")
    with_stats = query_flag(request, "stats")
    context = request.app[CONTEXT]
    ops = context.ops

    async def lost(first: int, last: int) -> tuple[bytes, int]:
        state = await snapshot(ops)
        data = message({"first": first, "last": last}, event="lost")
        return data + message(state, event="snapshot", ident=state["position"]), state["position"]

    reader = Reader(context.controller.hub, wanted)
    writer = SseWriter(request)
    try:
        await writer.start()
        if since is not None:
            reader.position = since
        elif with_snapshot:
            state = await snapshot(ops)
            reader.position = state["position"]
            await writer.write(message(state, event="snapshot", ident=state["position"]))
        await run_stream(writer, reader, event_message, lost, stats_source(context.controller) if with_stats else None)
    except StreamEnded:
        pass
    finally:
        reader.close()
    return writer.response


def routes() -> list[Route]:
    return [Route("GET", "/v1/events", events, Role.VIEWER)]
