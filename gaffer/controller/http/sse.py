"""Server-Sent Events: the framing, and a writer that never lets a stuck reader hold on.

A message is ``id:``, ``event:`` and ``data:`` lines and a blank line (the HTML standard's
"event stream" format). ``id`` is the event's position, so a browser's ``Last-Event-ID`` (or a
``fetch`` reader that sends it back) resumes exactly where it stopped. A comment line (``:
keepalive``) now and then keeps proxies and idle timers from closing a quiet stream.

The writer bounds how long one write may wait for the reader: a client that stops reading fills
its socket buffers, and then the next write would wait forever. Past ``WRITE_STALL`` seconds the
stream is ended; the client reconnects with ``Last-Event-ID`` and replays what it missed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gaffer.controller.http.handlers import dumps

WRITE_STALL = 10.0
"""Seconds one write may wait for a reader that does not read before the stream is ended."""
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}
"""``X-Accel-Buffering: no`` keeps a buffering reverse proxy (nginx) from holding events back."""
OPEN_STREAMS = web.AppKey("open_streams", set)
"""The handler tasks of the streams now open (``build_app`` sets it, ``SseWriter.start`` fills it)."""


async def end_streams(app: web.Application) -> None:
    """The server stops: end every open stream now. A stream never returns on its own, so
    aiohttp would otherwise wait its whole shutdown timeout, twice, for each one (Ctrl-C on
    ``gaffer start`` with a dashboard open took 4 s)."""
    for task in list(app[OPEN_STREAMS]):
        task.cancel()


def message(data: Any, event: str | None = None, ident: int | None = None) -> bytes:
    """One SSE message: ``data`` as one line of compact JSON (JSON escapes newlines, so a
    message is never split), with its ``event`` type and ``id`` when given."""
    head = ""
    if ident is not None:
        head += f"id: {ident}\n"
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {dumps(data)}\n\n".encode()


def comment(text: str) -> bytes:
    """A comment line, which readers ignore: ``: keepalive``."""
    return f": {text}\n\n".encode()


def decode(block: str) -> dict[str, Any]:
    """One message block back to ``{"id", "event", "data"}`` (data parsed as JSON; None for a
    comment): for tests and tools reading a stream."""
    out: dict[str, Any] = {"id": None, "event": None, "data": None, "comment": None}
    data: list[str] = []
    for line in block.split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            out["comment"] = value
        elif field == "data":
            data.append(value)
        elif field in ("id", "event"):
            out[field] = value
    if data:
        out["data"] = json.loads("\n".join(data))
    return out


class StreamEnded(Exception):
    """The reader is gone or stopped reading: the stream ends here."""


class SseWriter:
    """An SSE response, prepared on the first write."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200, headers=HEADERS)
        self.written = 0

    async def start(self) -> None:
        await self.response.prepare(self.request)
        task = asyncio.current_task()
        if task is not None:
            streams = self.request.app[OPEN_STREAMS]
            streams.add(task)
            task.add_done_callback(streams.discard)

    def gone(self) -> bool:
        """Whether the client hung up (its connection is closed or closing)."""
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Send ``data``; StreamEnded when the reader went away or did not take it within
        WRITE_STALL seconds (its connection is then closed)."""
        try:
            await asyncio.wait_for(self.response.write(data), WRITE_STALL)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise StreamEnded(str(exc) or type(exc).__name__) from None
        self.written += len(data)
