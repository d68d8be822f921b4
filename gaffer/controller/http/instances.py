"""Instances over HTTP: list (filtered by template, node and state), one, its live stats, a
signal, and its stdin.

The listing is the ``ps`` operation's rows (unfiltered: its answer's JSON, written from rows
kept encoded, ``row_bytes.py``). ``ps`` filters by template itself; a filter by node
or state is applied here, before paging (with the same ``limit``/``continue`` tokens as ``ps``:
``paging.page`` over the rows in ``instance_key`` order), so a page holds ``limit`` matching
rows, never fewer because others were filtered out of it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gaffer.common import arguments as arg
from gaffer.common.errors import InstanceNotFound, InvalidArgument, TemplateNotFound
from gaffer.common.model import InstanceState, parse_instance_id
from gaffer.common.roles import Role
from gaffer.controller.api import instance_key
from gaffer.controller.http.context import Route
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.params import body_object, listing, paging, query_flag, query_text
from gaffer.controller.paging import page, page_args
from gaffer.controller.row_bytes import PsAnswer

STATES = tuple(state.value for state in InstanceState)


def filters(request: web.Request) -> tuple[dict[str, Any], str | None, str | None]:
    """The ``ps`` arguments of the query (template, fresh), and the node and state asked for."""
    args: dict[str, Any] = {}
    template = query_text(request, "template")
    if template is not None:
        args["name"] = arg.name({"template": template}, "template")
    if query_flag(request, "fresh"):
        args["fresh"] = True
    node = query_text(request, "node")
    if node is not None:
        arg.node({"node": node})
    state = query_text(request, "state")
    if state is not None and state not in STATES:
        raise InvalidArgument("state", f"must be one of {', '.join(STATES)}, got {state[:40]!r}")
    return args, node, state


async def ps(request: web.Request, args: dict[str, Any]) -> Any:
    """The ``ps`` operation's rows (or page) as plain data."""
    result = await call(request, "ps", args)
    return result.value() if isinstance(result, PsAnswer) else result


async def instances(request: web.Request) -> web.Response:
    args, node, state = filters(request)
    pages = paging(request)
    if node is None and state is None:
        result = await call(request, "ps", {**args, **pages})
        if isinstance(result, PsAnswer):  # written from rows kept as JSON (row_bytes.py)
            return web.Response(text=result.listing_json(), content_type="application/json")
        return json_response(listing(result))
    limit, after = page_args(pages)
    rows = [
        row for row in await ps(request, args)
        if (node is None or row["node"] == node) and (state is None or row["state"] == state)
    ]
    if limit is None:
        return json_response(listing(rows))
    return json_response(page(rows, instance_key, limit, after))


def instance_id(request: web.Request) -> tuple[str, str]:
    """The ``{id}`` of an instance's path, checked, and its template."""
    ident = arg.instance_id({"id": request.match_info["id"]})
    parsed = parse_instance_id(ident)
    assert parsed is not None  # arg.instance_id accepted it
    return ident, parsed.template


async def instance(request: web.Request) -> web.Response:
    """The ``ps`` row of one instance: the one its placement names, else one that still runs
    somewhere (``stale``)."""
    ident, template = instance_id(request)
    try:
        rows = [row for row in await ps(request, {"name": template}) if row["id"] == ident]
    except TemplateNotFound:
        raise InstanceNotFound(ident) from None
    if not rows:
        raise InstanceNotFound(ident)
    rows.sort(key=lambda row: row["stale"])
    return json_response(rows[0])


async def stats(request: web.Request) -> web.Response:
    """The live sample of one running instance (its agent is asked now);
    ``instance_not_found`` when no process of it runs."""
    ident, template = instance_id(request)
    try:
        summary = await call(request, "stats", {"name": template})
    except TemplateNotFound:
        raise InstanceNotFound(ident) from None
    for item in summary.get(template, {}).get("instances", []):
        if item["id"] == ident:
            return json_response(item)
    raise InstanceNotFound(ident)


async def signal(request: web.Request) -> web.Response:
    """``{"signal": "TERM", "group": false}``: the pids signalled, by node."""
    ident, _ = instance_id(request)
    body = await body_object(request, ("signal", "group"))
    return json_response(await call(request, "kill", {**body, "target": ident}))


async def stdin(request: web.Request) -> web.Response:
    """``{"data": "text", "eof": false}``: the bytes written."""
    ident, _ = instance_id(request)
    body = await body_object(request, ("data", "eof"))
    return json_response(await call(request, "write", {**body, "id": ident}))


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/instances", instances, Role.VIEWER),
        Route("GET", "/v1/instances/{id}", instance, Role.VIEWER),
        Route("GET", "/v1/instances/{id}/stats", stats, Role.VIEWER),
        Route("POST", "/v1/instances/{id}/signal", signal, Role.OPERATOR),
        Route("POST", "/v1/instances/{id}/stdin", stdin, Role.OPERATOR),
    ]
