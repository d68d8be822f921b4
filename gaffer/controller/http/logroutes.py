"""``GET /v1/instances/{id}/logs`` and ``GET /v1/templates/{name}/logs``: recent output as
JSON, or with ``?follow=1`` as Server-Sent Events that go on with the live output.

A follower holds the topic prefix ``output.<target>.`` on the hub (``EventHub.hold``), which
makes the agents forward that output, as a ``gafferctl logs -f`` subscription does. It reads the
hub like the event stream does (``streams.Reader``): each line is one message (``data: {"id",
"node", "stream", "ts", "line", "number"}``), the last line of each output event carries the
event's position as ``id`` (a reconnect with ``Last-Event-ID`` goes on from there), lines the
agents or the stream could not deliver are ``event: skipped`` (``{"skipped": count, "number":
first}``), and output the controller no longer holds for a resume is ``event: lost``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gaffer.common import arguments as arg
from gaffer.common.limits import MAX_LINES
from gaffer.common.roles import Role
from gaffer.controller.http.context import CONTEXT, Route
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.loglines import LineJoin
from gaffer.controller.http.sse import SseWriter, StreamEnded, message
from gaffer.controller.http.streams import Reader, query_flag, query_int, run_stream, since_of

DEFAULT_LINES = 100


def logs_args(request: web.Request, target: str, key: str) -> dict[str, Any]:
    """The ``logs`` arguments of a request: its target (checked) and ``?lines=`` / ``?stream=``."""
    args: dict[str, Any] = {"target": target}
    if key == "name":
        arg.name({"name": target})
    else:
        arg.target({"id": target}, "id")
    lines = query_int(request, "lines", 0, MAX_LINES)
    args["lines"] = DEFAULT_LINES if lines is None else lines
    stream = request.query.get("stream")
    if stream is not None:
        args["stream"] = stream
        arg.stream(args)
    return args


async def instance_logs(request: web.Request) -> web.StreamResponse:
    return await logs(request, logs_args(request, request.match_info["id"], "id"))


async def template_logs(request: web.Request) -> web.StreamResponse:
    return await logs(request, logs_args(request, request.match_info["name"], "name"))


async def logs(request: web.Request, args: dict[str, Any]) -> web.StreamResponse:
    if not query_flag(request, "follow"):
        return json_response(await call(request, "logs", args))
    since = since_of(request)
    hub = request.app[CONTEXT].controller.hub
    prefix = f"output.{args['target']}."
    hub.hold(prefix)
    reader = Reader(hub, [prefix])
    try:
        recent = [] if since is not None else await call(request, "logs", args)
        join = LineJoin()
        writer = SseWriter(request)
        await writer.start()
        if since is not None:
            reader.position = since
        elif recent:
            await writer.write(join.recent(recent))

        async def lost(first: int, last: int) -> tuple[bytes, int]:
            return message({"first": first, "last": last}, event="lost"), last

        await run_stream(writer, reader, join.frame, lost)
    except StreamEnded:
        pass
    finally:
        reader.close()
        hub.release(prefix)
    return writer.response


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/instances/{id}/logs", instance_logs, Role.VIEWER),
        Route("GET", "/v1/templates/{name}/logs", template_logs, Role.VIEWER),
    ]
