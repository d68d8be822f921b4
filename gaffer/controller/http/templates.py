"""Templates over HTTP: list, read, put, delete, scale, start, stop, restart.

``PUT /v1/templates/{name}`` applies one template (the ``apply`` operation with that one
template, so it is validated exactly as ``gafferctl apply`` is). Reads answer an ``ETag``;
``PUT``, ``DELETE`` and scale honour ``If-Match`` (and ``PUT`` ``If-None-Match: *``, create
only), see ``etags.py``. A conditional write checks its condition and makes its change while
holding one lock, so of two clients that read the same tag, the second one's write is refused
instead of slipping in between the first one's check and its commit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gaffer.common import arguments as arg
from gaffer.common.errors import InvalidArgument, TemplateNotFound
from gaffer.common.roles import Role
from gaffer.controller.http.context import CONTEXT, Route
from gaffer.controller.http.etags import check_preconditions, template_etag
from gaffer.controller.http.handlers import call, json_response, read_json
from gaffer.controller.http.params import body_object, listing, paging


def template_name(request: web.Request) -> str:
    """The ``{name}`` of a template's path, checked as the operations check names."""
    return arg.name({"name": request.match_info["name"]})


def current_etag(request: web.Request, name: str) -> str | None:
    """The ETag of template ``name`` as stored now, None when there is none."""
    cluster = request.app[CONTEXT].controller.cluster
    stored = cluster.templates.get(name) if cluster is not None else None
    if stored is None:
        return None
    return template_etag(stored, cluster.restarts.get(name, 0))


def tagged(request: web.Request, name: str) -> dict[str, str]:
    etag = current_etag(request, name)
    return {"ETag": etag} if etag is not None else {}


class TemplateRoutes:
    """The handlers, with the lock their conditional writes share (one per application)."""

    def __init__(self) -> None:
        self._writes = asyncio.Lock()

    async def listing(self, request: web.Request) -> web.Response:
        return json_response(listing(await call(request, "templates", paging(request))))

    async def get(self, request: web.Request) -> web.Response:
        name = template_name(request)
        view = await call(request, "get", {"name": name})
        return json_response(view, headers=tagged(request, name))

    async def put(self, request: web.Request) -> web.Response:
        """Create or replace one template; 201 when created, 200 otherwise."""
        name = template_name(request)
        spec = await read_json(request)
        if not isinstance(spec, dict):
            raise InvalidArgument("body", "must be one template as a JSON object")
        if spec.get("name", name) != name:
            raise InvalidArgument("name", f"must be the name in the path ({name!r}) or left out")
        async with self._writes:
            self._check(request, name, exists_first=False)
            results = await call(request, "apply", {"templates": [{**spec, "name": name}]})
        result = _only_result(results, name)
        status = 201 if result.get("change") == "created" else 200
        return json_response(result, status=status, headers=tagged(request, name))

    async def delete(self, request: web.Request) -> web.Response:
        name = template_name(request)
        async with self._writes:
            self._check(request, name, exists_first=True)
            result = await call(request, "delete", {"name": name})
        return json_response(result)

    async def scale(self, request: web.Request) -> web.Response:
        """``{"count": 4}``, ``{"count": "+2"}`` or ``{"count": "-1"}``."""
        name = template_name(request)
        body = await body_object(request, ("count",))
        async with self._writes:
            self._check(request, name, exists_first=True)
            result = await call(request, "scale", {"name": name, "count": body.get("count")})
        return json_response(result, headers=tagged(request, name))

    @staticmethod
    def _check(request: web.Request, name: str, exists_first: bool) -> None:
        """The request's conditions against the template's tag now. ``exists_first``: a
        missing template is ``template_not_found`` whatever the conditions (what the request
        would answer without them, RFC 9110 section 13.2.1)."""
        current = current_etag(request, name)
        if exists_first and current is None:
            raise TemplateNotFound(name)
        check_preconditions(request.headers.get("If-Match"), request.headers.get("If-None-Match"), current, name)

    def routes(self) -> list[Route]:
        named = "/v1/templates/{name}"
        return [
            Route("GET", "/v1/templates", self.listing, Role.VIEWER),
            Route("GET", named, self.get, Role.VIEWER),
            Route("PUT", named, self.put, Role.ADMIN),
            Route("DELETE", named, self.delete, Role.ADMIN),
            Route("POST", named + "/scale", self.scale, Role.OPERATOR),
            Route("POST", named + "/start", action("start"), Role.OPERATOR),
            Route("POST", named + "/stop", action("stop"), Role.OPERATOR),
            Route("POST", named + "/restart", action("restart"), Role.OPERATOR),
        ]


def action(op: str) -> Any:
    """The handler of ``start``, ``stop`` or ``restart``: no body, the template's new tag."""

    async def handler(request: web.Request) -> web.Response:
        name = template_name(request)
        await body_object(request, ())
        result = await call(request, op, {"name": name})
        return json_response(result, headers=tagged(request, name))

    handler.__name__ = op
    return handler


def _only_result(results: Any, name: str) -> dict[str, Any]:
    """The apply result of template ``name``: an apply of one template answers one."""
    assert isinstance(results, list) and len(results) == 1 and results[0]["name"] == name, results
    return results[0]


def routes() -> list[Route]:
    return TemplateRoutes().routes()
