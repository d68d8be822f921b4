"""The HTTP application: its routes, the middlewares every request passes, and the way a route
calls an operation.

A route is a ``Route`` value (method, path, handler, least role); route modules list theirs in
``routes()`` and ``build_app`` registers those of ``route_modules()``. Two middlewares wrap
every handler: ``problems`` (outermost) turns any failure into an RFC 9457 problem, ``access``
(``access.py``) checks the bearer token against the route's role. Handlers call operations
through ``handlers.call``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

from aiohttp import web

from gaffer.common.errors import GafferError
from gaffer.controller.http import access
from gaffer.controller.http.context import CONTEXT, ROUTES, Handler, HttpContext
from gaffer.controller.http.problems import problem, problem_response
from gaffer.controller.http.sse import OPEN_STREAMS, end_streams

log = logging.getLogger("gaffer.controller.http")

MAX_BODY = 1024 * 1024
"""Largest request body (``client_max_size``): a template file far bigger belongs in ``gafferctl
apply``, which sends it in slices."""


def build_app(context: HttpContext, modules: Iterable[Any] | None = None) -> web.Application:
    """The application: every route of ``modules`` (default ``route_modules()``) behind the
    problem and access middlewares."""
    app = web.Application(middlewares=[problems, access.middleware], client_max_size=MAX_BODY)
    app[CONTEXT] = context
    app[ROUTES] = {}
    app[OPEN_STREAMS] = set()
    app.on_shutdown.append(end_streams)
    for module in modules if modules is not None else route_modules():
        for route in module.routes():
            added = app.router.add_route(route.method, route.path, route.handler)
            app[ROUTES][added] = route
    return app


def route_modules() -> list[Any]:
    """The modules whose ``routes()`` make the API (imported here, not at module load, so a
    controller without ``--http`` never imports them)."""
    from gaffer.controller.http import (
        apply, dashboard, instances, logroutes, openapi, prometheus, rest, runs, session, streams, templates, tokens,
    )

    return [
        rest, templates, apply, instances, runs, tokens, streams, logroutes, session, dashboard, prometheus, openapi,
    ]


HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a problem: a GafferError with its code, an HTTP error of the router
    (unknown path, wrong method, body too large) with the matching code, and anything else as
    an internal error that is logged with its traceback and never shown."""
    try:
        return await handler(request)
    except GafferError as exc:
        return problem_response(exc, access.headers_for(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "error")
        detail = {
            404: f"no such path: {request.path}",
            405: f"{request.method} is not allowed on {request.path} (allowed: {exc.headers.get('Allow', '')})",
            413: f"the body is larger than {MAX_BODY} bytes",
        }.get(exc.status, exc.text or exc.reason)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(code, detail, exc.status, headers=allow)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("HTTP %s %s failed: a bug in the controller", request.method, request.path)
        return problem("error", "internal error in the controller (logged)", 500)
