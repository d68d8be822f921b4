"""Who is asking: the bearer token of every request, checked against the route's role.

Every route but the public ones (the dashboard's static files, the OpenAPI document) needs
``Authorization: Bearer <token>``, on loopback too: a browser on this host may belong to any
local user. A missing or unknown token is ``unauthorized`` (401, with ``WWW-Authenticate``); a
token whose role is below the route's is ``forbidden`` (403). A peer that keeps sending bad tokens is slowed (``throttle.py``): refused
with 429 and ``Retry-After`` without its token being looked at. Tokens never travel in URLs or
cookies: the dashboard keeps its own in ``sessionStorage`` and sends it in this header.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from gaffer.common.errors import Forbidden, GafferError, Throttled, Unauthorized
from gaffer.controller.http.context import CONTEXT, PRINCIPAL, ROUTES, Handler, Route
from gaffer.controller.tokens import CALLER

SCHEME = "bearer"
MAX_TOKEN = 512
"""Longer Authorization values are refused unread (a token is 49 characters)."""
CHALLENGE = 'Bearer realm="gaffer"'


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header or len(header) > MAX_TOKEN:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != SCHEME or not token:
        return None
    return token


def headers_for(exc: GafferError) -> dict[str, str] | None:
    """The headers a refusal carries: the challenge of a 401, the wait of a 429."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": CHALLENGE}
    if isinstance(exc, Throttled):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return None


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route: Route | None = request.app[ROUTES].get(request.match_info.route)
    if route is None or route.public:
        return await handler(request)
    context = request.app[CONTEXT]
    now = time.monotonic()
    peer = request.remote
    waiting = context.throttle.check(peer, now)
    if not waiting.allowed:
        raise Throttled(f"too many failed logins from {peer}: retry in {waiting.retry_after_header} s",
                        waiting.retry_after)
    token = bearer(request.headers.get("Authorization"))
    principal = context.tokens.verify(token, time.time()) if token else None
    if principal is None:
        if token is not None:
            context.throttle.failed(peer, now)
        raise Unauthorized(
            "this request needs a token: send 'Authorization: Bearer <token>' "
            "(gafferctl token create, or the admin.token file in the controller's data dir)"
            if token is None else "the token is not valid (unknown, revoked or expired)"
        )
    if principal.role < route.role:
        needed = route.role.name.lower()
        raise Forbidden(f"{request.method} {route.path}", needed, (
            f"{request.method} {route.path} needs the {needed} role; {principal.name!r} is {principal.role.name.lower()}"
        ))
    context.throttle.succeeded(peer)
    request[PRINCIPAL] = principal
    CALLER.set(principal)
    return await handler(request)
