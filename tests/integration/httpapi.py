"""A small HTTP client for tests of the controller's HTTP API: tokens by role, and requests
that return the status, the headers and the decoded body. Every response is checked against
the OpenAPI document (``openapi_check``): one that breaks it fails the test."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gaffer.common.roles import Role
from gaffer.controller.controller import Controller
from gaffer.controller.tokens import Principal
from openapi_check import check


LOOPBACK = "127.0.0.1:0"
"""The HTTP address tests give a controller: loopback, a port the kernel picks."""


@dataclass
class Answer:
    status: int
    headers: Any
    body: Any
    text: str


class Http:
    """Requests to ``controller``'s HTTP API (started with ``http="127.0.0.1:0"``)."""

    def __init__(self, controller: Controller) -> None:
        assert controller.http is not None, "start the controller with http='127.0.0.1:0'"
        self.controller = controller
        self.url = controller.http.url
        self.session = aiohttp.ClientSession()

    def token(self, role: Role = Role.ADMIN, name: str | None = None) -> str:
        """A token for ``role``, valid for the test (an issued one: memory only)."""
        assert self.controller.tokens is not None
        principal = Principal(name or role.name.lower(), role)
        return self.controller.tokens.issue(principal, 3600.0, time.time())

    async def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Answer:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as response:
            raw = await response.read()
            check(method, str(response.url), response.status, response.headers, raw)
            text = raw.decode("utf-8", "replace")
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return Answer(response.status, response.headers, body, text)

    async def close(self) -> None:
        await self.session.close()
