"""``POST /v1/apply``: a template file in the body, applied as ``gafferctl apply`` applies it.

The body's ``Content-Type`` says its format: ``application/toml``, ``application/json`` or a
Procfile (``text/plain``, ``text/x-procfile``); anything else is ``unsupported_media_type``
(415). It is read by the loaders ``gafferctl`` uses (``common/loaders.py``: the same guards,
the same ``port = "auto"`` numbering, every problem listed), then applied whole or not at all
by the ``apply`` operation. The answer lists what happened to each template.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from aiohttp import web

from gaffer.common.errors import InvalidArgument, Problem, TemplateError, UnsupportedMediaType
from gaffer.common.loaders import templates_from_json, templates_from_procfile, templates_from_toml
from gaffer.common.roles import Role
from gaffer.common.template import Template
from gaffer.controller.http.context import Route
from gaffer.controller.http.handlers import call, json_response

SOURCE = "body"
"""How problems name the file: the request's body."""


def _procfile(text: str, source: str) -> list[Template]:
    return templates_from_procfile(text, source=source)


LOADERS: dict[str, Callable[[str, str], list[Template]]] = {
    "application/toml": templates_from_toml,
    "application/json": templates_from_json,
    "text/plain": _procfile,
    "text/x-procfile": _procfile,
}
"""Content types this route reads, each with its loader."""


def parse_body(content_type: str, raw: bytes) -> list[Template]:
    """The templates of a body of ``content_type``: UnsupportedMediaType for another type,
    InvalidArgument for bytes that are not UTF-8, ConfigError or TemplateError as the loaders
    raise them, TemplateError when it defines none."""
    loader = LOADERS.get(content_type)
    if loader is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type[:60]!r} is not read here: send application/toml, "
            "application/json, or a Procfile as text/plain"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("body", "must be UTF-8 text") from None
    templates = loader(text, SOURCE)
    if not templates:
        raise TemplateError([Problem("", "", "no templates defined")], source=SOURCE)
    return templates


def summary(result: Any) -> dict[str, Any]:
    """The ``apply`` operation's answer as HTTP gives it: the counts per change, the results
    (every one, or for a very large apply the changed ones first) and how many were left out."""
    if isinstance(result, dict):
        return {"counts": result["counts"], "results": result["results"], "more": result["more"]}
    counts = collections.Counter(item["change"] for item in result)
    return {"counts": dict(counts), "results": result, "more": 0}


async def apply(request: web.Request) -> web.Response:
    templates = parse_body(request.content_type, await request.read())
    result = await call(request, "apply", {"templates": [t.to_dict() for t in templates], "source": SOURCE})
    return json_response(summary(result))


def routes() -> list[Route]:
    return [Route("POST", "/v1/apply", apply, Role.ADMIN)]
