"""``POST /v1/runs``: a one-off process of a template, as ``gafferctl run`` starts one.

Over HTTP a run is unattended: no lease ties it to the client, and its output is read from the
log routes or the event stream. Body: ``{"name": "web", "args": [...], "env": {...}}``; the
answer names the run's id and the node it runs on (201).
"""

from __future__ import annotations

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.context import Route
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.params import body_object


async def run(request: web.Request) -> web.Response:
    body = await body_object(request, ("name", "args", "env"))
    return json_response(await call(request, "run", body), status=201)


def routes() -> list[Route]:
    return [Route("POST", "/v1/runs", run, Role.OPERATOR)]
