"""The client operations on API tokens: ``token_create``, ``token_list``, ``token_revoke``
(admin), and ``login`` (viewer and up).

``login`` gives its caller a short-lived token for the HTTP side with the caller's own role
(``gafferctl dashboard`` prints it in the dashboard's URL): whoever can already reach the ZMQ
socket, by file permissions or a CURVE key, gets into the browser without a long-lived secret
being copied around. It lives LOGIN_TTL seconds, in memory only.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from gaffer.common import arguments as arg
from gaffer.common.errors import Forbidden
from gaffer.common.roles import Role, parse_role
from gaffer.controller.api import Op
from gaffer.controller.tokens import CALLER, Tokens

LOGIN_TTL = 300.0
"""Seconds a login token is valid."""


class TokenOps:
    def __init__(self, tokens: Tokens, clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall-clock seconds (``Tokens`` stamps and expires with it)."""
        self._tokens = tokens
        self._clock = clock

    def ops(self) -> dict[str, Op]:
        return {
            "token_create": self.create, "token_list": self.listing, "token_revoke": self.revoke,
            "login": self.login,
        }

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        """A new named token; its secret is in this answer and nowhere else, ever."""
        name = arg.name(args, what="token")
        role = parse_role(args.get("role"))
        secret = await self._tokens.create(name, role, self._clock())
        return {"name": name, "role": role.label, "secret": secret}

    async def listing(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self._tokens.listing()

    async def revoke(self, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args, what="token")
        return {"name": name, "revoked": await self._tokens.revoke(name)}

    async def login(self, args: dict[str, Any]) -> dict[str, Any]:
        """A token for the caller's role, valid LOGIN_TTL seconds, for the HTTP side."""
        caller = CALLER.get()
        if caller is None:
            raise Forbidden("login", Role.VIEWER.label, "'login' refused: the caller is not known")
        now = self._clock()
        secret = self._tokens.issue(caller, LOGIN_TTL, now)
        return {"token": secret, "role": caller.role.label, "name": caller.name, "expires": now + LOGIN_TTL}
