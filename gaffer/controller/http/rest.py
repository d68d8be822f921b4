"""The REST API under ``/v1``: the status and the nodes.

Every route module of the API (this one, ``templates``, ``apply``, ``instances``, ``runs``,
``tokens``) works the same way: a handler turns the path, the query and the body into the
arguments of one operation (``Api.ops()``), calls it through ``handlers.call`` (so the role
table and the argument checks are the ZeroMQ side's), and answers its result as JSON. A
listing is always ``{"items": [...], "continue": token}`` and takes ``limit`` and ``continue``
in the query.
"""

from __future__ import annotations

from aiohttp import web

from gaffer.common import arguments as arg
from gaffer.common.errors import NodeNotFound
from gaffer.common.roles import Role
from gaffer.controller.http.context import Route
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.params import body_object, listing, paging


async def status(request: web.Request) -> web.Response:
    return json_response(await call(request, "status", {}))


async def nodes(request: web.Request) -> web.Response:
    return json_response(listing(await call(request, "nodes", paging(request))))


def node_name(request: web.Request) -> str:
    """The ``{name}`` of a node's path, checked as the operations check node names."""
    return arg.node({"name": request.match_info["name"]}, "name")


async def node(request: web.Request) -> web.Response:
    name = node_name(request)
    for row in await call(request, "nodes", {}):
        if row["name"] == name:
            return json_response(row)
    raise NodeNotFound(name)


async def cordon(request: web.Request) -> web.Response:
    name = node_name(request)
    await body_object(request, ())
    return json_response(await call(request, "cordon", {"node": name}))


async def uncordon(request: web.Request) -> web.Response:
    name = node_name(request)
    await body_object(request, ())
    return json_response(await call(request, "uncordon", {"node": name}))


async def drain(request: web.Request) -> web.Response:
    """Cordon the node and move its instances away, waiting up to ``wait`` seconds."""
    name = node_name(request)
    body = await body_object(request, ("wait",))
    return json_response(await call(request, "drain", {**body, "node": name}))


async def forget(request: web.Request) -> web.Response:
    """Forget a node that is down for good (``gafferctl node forget``): its slots move at once.
    An unknown node is 404; one that is up or suspect is 409 (``node_alive``)."""
    name = node_name(request)
    await body_object(request, ())
    return json_response(await call(request, "forget", {"node": name}))


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/status", status, Role.VIEWER),
        Route("GET", "/v1/nodes", nodes, Role.VIEWER),
        Route("GET", "/v1/nodes/{name}", node, Role.VIEWER),
        Route("DELETE", "/v1/nodes/{name}", forget, Role.ADMIN),
        Route("POST", "/v1/nodes/{name}/cordon", cordon, Role.ADMIN),
        Route("POST", "/v1/nodes/{name}/uncordon", uncordon, Role.ADMIN),
        Route("POST", "/v1/nodes/{name}/drain", drain, Role.ADMIN),
    ]
