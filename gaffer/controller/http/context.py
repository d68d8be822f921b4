"""What every route and middleware shares: the route value, the context the app carries, and
the keys under which the app and each request hold them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.throttle import Throttle
from gaffer.controller.tokens import Principal, Tokens

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Op = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: Role
    """The least role that may call it (each operation it calls checks ``OP_ROLES`` too)."""
    public: bool = False
    """Served without a token: only the dashboard's static files and the OpenAPI document."""


@dataclass(frozen=True)
class HttpContext:
    ops: Mapping[str, Op]
    """Every operation, as the ZeroMQ side dispatches them (``Controller.ops``)."""
    controller: Any
    """The ``Controller``: its clock (``now``), status and parts, for routes that read state."""
    tokens: Tokens
    throttle: Throttle = field(default_factory=Throttle)
    """Failed logins by peer (``throttle.py``)."""


CONTEXT = web.AppKey("context", HttpContext)
ROUTES = web.AppKey("routes", dict)
PRINCIPAL = web.RequestKey("principal", Principal)
"""The request key holding who is asking (``Principal``), set by ``access``."""
