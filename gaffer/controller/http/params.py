"""Turning a request's query and body into the arguments of an operation.

The operations check every argument's type, length and range (``common/arguments.py``), the
same for both interfaces. What is left to the HTTP side is only what HTTP adds: a query value
is text (``limit=10`` must become the number 10), and a body must be one JSON object holding
only the fields the route documents. Each refusal is ``invalid_argument`` naming the field.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from aiohttp import web

from gaffer.common.errors import InvalidArgument
from gaffer.controller.http.handlers import read_json

MAX_QUERY_VALUE = 1_024
"""Characters of one query value (a ``continue`` token is the longest one)."""


def query_text(request: web.Request, key: str) -> str | None:
    """The query parameter ``key`` (its last value), or None when absent."""
    values = request.query.getall(key, [])
    if not values:
        return None
    value = values[-1]
    if len(value) > MAX_QUERY_VALUE:
        raise InvalidArgument(key, f"must be at most {MAX_QUERY_VALUE} characters")
    return value


def query_int(request: web.Request, key: str) -> int | None:
    """The query parameter ``key`` as an integer (its range is the operation's to check)."""
    text = query_text(request, key)
    if text is None:
        return None
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 18:
        raise InvalidArgument(key, f"must be an integer, got {text[:40]!r}")
    return int(text)


def query_flag(request: web.Request, key: str) -> bool:
    """A boolean query parameter: ``1``/``true`` or ``0``/``false`` (absent: false)."""
    text = query_text(request, key)
    if text is None or text in ("0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise InvalidArgument(key, f"must be 1, true, 0 or false, got {text[:40]!r}")


def paging(request: web.Request) -> dict[str, Any]:
    """The ``limit`` and ``continue`` of a listing, as its operation takes them."""
    args: dict[str, Any] = {}
    limit = query_int(request, "limit")
    if limit is not None:
        args["limit"] = limit
    token = query_text(request, "continue")
    if token is not None:
        args["continue"] = token
    return args


def listing(result: Any) -> dict[str, Any]:
    """An operation's listing as HTTP answers every listing: ``{"items", "continue"}``
    (``continue`` null on the last page, and when no ``limit`` was asked)."""
    if isinstance(result, dict):
        return result
    return {"items": result, "continue": None}


async def body_object(request: web.Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The request's JSON body as an object holding only ``allowed`` fields (an empty body is
    ``{}``); InvalidArgument naming ``body`` or the unknown field."""
    data = await read_json(request)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument("body", f"must be a JSON object, got a {_json_type(data)}")
    return only(data, allowed)


def only(data: Mapping[str, Any], allowed: Iterable[str], where: str = "") -> dict[str, Any]:
    """``data`` when every key is in ``allowed``; InvalidArgument naming the first other one."""
    names = set(allowed)
    for key in data:
        if key not in names:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise InvalidArgument(
                f"{where}{shown}", f"is not a field of this request (known: {', '.join(sorted(names)) or 'none'})"
            )
    return dict(data)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "value"
