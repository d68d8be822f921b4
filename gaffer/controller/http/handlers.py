"""What every route handler uses: run an operation as the requester, answer JSON, read a JSON
body. An operation is called through ``call`` only, behind the same role table (``OP_ROLES``)
as the ZeroMQ side, so the two interfaces cannot disagree about who may do what."""

from __future__ import annotations

import json
from typing import Any, Mapping

from aiohttp import web

from gaffer.common.errors import ConfigError, Forbidden, InvalidRequest
from gaffer.common.loaders import parse_json
from gaffer.common.roles import OP_ROLES
from gaffer.controller.http.context import CONTEXT, PRINCIPAL
from gaffer.controller.tokens import Principal


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def call(request: web.Request, op: str, args: dict[str, Any]) -> Any:
    """Run operation ``op`` with ``args`` as the requester (refused with ``forbidden`` if their
    role is below the operation's)."""
    who = principal_of(request)
    needed = OP_ROLES[op]
    if who.role < needed:
        raise Forbidden(op, needed.name.lower(), f"{op!r} needs the {needed.name.lower()} role; "
                        f"{who.name!r} is {who.role.name.lower()}")
    return await request.app[CONTEXT].ops[op](args)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(data), status=status, headers=headers, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (None when empty); ``invalid_request`` when it is not JSON, not
    UTF-8, or nested deeper than a template file may be (``too_large`` past MAX_BODY, from
    aiohttp, through ``problems``)."""
    raw = await request.read()
    if not raw:
        return None
    try:
        return parse_json(raw.decode("utf-8"), "the body")
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid JSON: it is not UTF-8 text") from None
    except ConfigError as exc:
        raise InvalidRequest(exc.message) from None
