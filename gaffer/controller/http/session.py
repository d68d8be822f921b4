"""``/v1/session``: the dashboard's own token, and who it speaks for.

``gafferctl dashboard`` prints the dashboard's URL with a *login* token in its fragment, valid a
few minutes (the ``login`` operation). The page trades it at once for a *session* token for the
same principal and role (``POST /v1/session``), valid SESSION_TTL and held in memory only by the
controller (``Tokens.issue``) and in ``sessionStorage`` by the page: the URL someone may have
copied stops working minutes later, and closing the tab forgets the session. ``GET`` says who the
caller is and with which role, so the page shows only the buttons that role may use.
"""

from __future__ import annotations

import time

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.context import CONTEXT, Route
from gaffer.controller.http.handlers import json_response, principal_of

SESSION_TTL = 12 * 3600.0
"""Seconds a session token is valid: a working day in one tab."""


async def whoami(request: web.Request) -> web.Response:
    who = principal_of(request)
    return json_response({"name": who.name, "role": who.role.name.lower()})


async def create(request: web.Request) -> web.Response:
    """A session token for the caller's own principal and role (never more)."""
    who = principal_of(request)
    now = time.time()
    token = request.app[CONTEXT].tokens.issue(who, SESSION_TTL, now)
    return json_response(
        {"token": token, "name": who.name, "role": who.role.name.lower(), "expires": now + SESSION_TTL},
        status=201, headers={"Cache-Control": "no-store"},
    )


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/session", whoami, Role.VIEWER),
        Route("POST", "/v1/session", create, Role.VIEWER),
    ]
