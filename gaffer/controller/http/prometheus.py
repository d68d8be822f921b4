"""``GET /metrics``: the controller's Prometheus metrics (``controller/metrics.py``), for a
viewer's token (a Prometheus scrape job sends it: docs/METRICS.md).

``metrics.py`` and prometheus_client (about 4 MB) are imported at the first scrape: a dashboard
or the REST API alone never needs them."""

from __future__ import annotations

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.context import CONTEXT, Route


async def metrics(request: web.Request) -> web.Response:
    from gaffer.controller.metrics import exposition

    body, content_type = exposition(request.app[CONTEXT].controller)
    return web.Response(body=body, headers={"Content-Type": content_type})


def routes() -> list[Route]:
    return [Route("GET", "/metrics", metrics, Role.VIEWER)]
