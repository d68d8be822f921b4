"""API tokens over HTTP (admin): list, create (the secret is answered once), revoke.

The ``token_list``, ``token_create`` and ``token_revoke`` operations do the work; these routes
only shape their answers as the rest of the API does: a listing is ``{"items", "continue"}``
and revoking a token that does not exist is ``not_found`` (404) rather than a quiet no-op.
"""

from __future__ import annotations

from aiohttp import web

from gaffer.common import arguments as arg
from gaffer.common.errors import NotFound
from gaffer.common.roles import Role
from gaffer.controller.http.context import Route
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.params import body_object, listing


async def tokens(request: web.Request) -> web.Response:
    return json_response(listing(await call(request, "token_list", {})))


async def create(request: web.Request) -> web.Response:
    """``{"name": "ci", "role": "operator"}``: 201 with the secret, shown this once."""
    body = await body_object(request, ("name", "role"))
    return json_response(await call(request, "token_create", body), status=201)


async def revoke(request: web.Request) -> web.Response:
    name = arg.name({"name": request.match_info["name"]}, what="token")
    result = await call(request, "token_revoke", {"name": name})
    if not result.get("revoked"):
        raise NotFound(f"no token named {name!r} (see GET /v1/tokens)")
    return json_response(result)


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/tokens", tokens, Role.ADMIN),
        Route("POST", "/v1/tokens", create, Role.ADMIN),
        Route("DELETE", "/v1/tokens/{name}", revoke, Role.ADMIN),
    ]
