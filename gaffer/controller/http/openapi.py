"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /v1/openapi.json`` (public).

It is data, kept beside the routes: every path and method the app registers, each with its
parameters, request body, responses and least role (``x-gaffer-role``), and the problem format
as one shared response. ``tests/unit/test_openapi.py`` checks that the document is valid and
that it documents exactly the routes registered; every integration test checks each response it
sees against it (``tests/integration/httpapi.py``), and a schemathesis run looks for responses
that break it. The schemas themselves are in ``openapi_schemas.py``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aiohttp import web

from gaffer import __version__
from gaffer.common.roles import Role
from gaffer.controller.http.context import Route
from gaffer.controller.http.openapi_paths import PATHS
from gaffer.controller.http.openapi_schemas import SCHEMAS, ref

PATH = "/v1/openapi.json"

PARAMETERS: dict[str, Any] = {
    "TemplateName": {"name": "name", "in": "path", "required": True, "description": "A template's name.",
                     "schema": {"type": "string"}, "example": "web"},
    "NodeName": {"name": "name", "in": "path", "required": True, "description": "A node's name.",
                 "schema": {"type": "string"}, "example": "node1"},
    "InstanceId": {"name": "id", "in": "path", "required": True,
                   "description": "An instance id: <template>.<ordinal>, or <template>.run-<n> for a one-off run.",
                   "schema": {"type": "string"}, "example": "web.1"},
    "TokenName": {"name": "name", "in": "path", "required": True, "description": "A token's name.",
                  "schema": {"type": "string"}},
    "Limit": {"name": "limit", "in": "query", "description": "At most this many items (1..10000): one page.",
              "schema": {"type": "integer", "minimum": 1, "maximum": 10_000}},
    "Continue": {"name": "continue", "in": "query", "description": "The previous page's continue token.",
                 "schema": {"type": "string"}},
    "IfMatch": {"name": "If-Match", "in": "header",
                "description": "Write only if the template's ETag is one of these (or * : if it exists).",
                "schema": {"type": "string"}},
    "IfNoneMatch": {"name": "If-None-Match", "in": "header",
                    "description": "* : create only, refused if the template exists.",
                    "schema": {"type": "string"}},
}


def _problem_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[str, Any] = {
    "Problem": _problem_response("A problem (RFC 9457): code says which, field names the argument at fault."),
    "Unauthorized": _problem_response("No valid bearer token.", {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True},
    }),
    "Throttled": _problem_response("Too many failed tokens from this peer: wait Retry-After seconds.", {
        "Retry-After": {"schema": {"type": "string"}, "required": True},
    }),
}


def document() -> dict[str, Any]:
    """The OpenAPI document, as a new copy (callers may change it)."""
    return json.loads(_serialized())


@lru_cache(maxsize=1)
def _serialized() -> bytes:
    return json.dumps(_document(), separators=(",", ":")).encode()


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gaffer controller",
            "version": __version__,
            "description": (
                "The controller's HTTP API: everything gafferctl does, as JSON. Every request "
                "but this document and the dashboard's files needs Authorization: Bearer <token> "
                "(gafferctl token create NAME --role viewer|operator|admin). Errors are "
                "application/problem+json. x-gaffer-role is the least role of each operation."
            ),
        },
        "security": [{"bearer": []}],
        "tags": [{"name": name} for name in ("status", "nodes", "templates", "instances", "runs", "tokens",
                                               "events", "dashboard", "metrics")],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token (gaffer_...), a run token or a dashboard session token.",
            }},
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "responses": RESPONSES,
        },
    }


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_serialized(), content_type="application/json")


def routes() -> list[Route]:
    return [Route("GET", PATH, serve, Role.VIEWER, public=True)]
