"""The REST API under ``/v1``: each route turns a path, its query and its body into the
arguments of one operation (``Api.ops()``) and answers its result as JSON."""

from __future__ import annotations

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.context import Route


async def status(request: web.Request) -> web.Response:
    return json_response(await call(request, "status", {}))


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/status", status, Role.VIEWER),
    ]
