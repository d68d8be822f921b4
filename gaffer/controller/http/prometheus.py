"""``GET /metrics``: the controller's Prometheus metrics (``controller/metrics.py``), for a
viewer's token (a Prometheus scrape job sends it: docs/METRICS.md)."""

from __future__ import annotations

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.context import CONTEXT, Route
from gaffer.controller.metrics import exposition


async def metrics(request: web.Request) -> web.Response:
    body, content_type = exposition(request.app[CONTEXT].controller)
    return web.Response(body=body, headers={"Content-Type": content_type})


def routes() -> list[Route]:
    return [Route("GET", "/metrics", metrics, Role.VIEWER)]
