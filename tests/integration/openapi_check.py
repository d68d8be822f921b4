"""Every response a test sees, checked against the OpenAPI document (``/v1/openapi.json``).

``check`` finds the operation of the request (method and path) and validates the response
with openapi-core: its status must be documented (or ``default``), its Content-Type one the
operation lists, its body valid for that schema, its required headers present. A response to a
path or method the document does not have (an unknown path, a wrong method, a test's own
route) must still be a problem: ``application/problem+json`` valid for the Problem schema.
A response that breaks the document raises ``DocumentBroken``, which fails the test.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.testing import MockRequest, MockResponse

from gaffer.controller.http.openapi import document

PROBLEM = "application/problem+json"
STREAMING = "text/event-stream"


class DocumentBroken(AssertionError):
    """A response the OpenAPI document does not allow."""


@lru_cache(maxsize=1)
def api() -> OpenAPI:
    return OpenAPI.from_dict(document(), config=Config(extra_media_type_deserializers={PROBLEM: json.loads}))


api()  # built at import (about a second), never inside a test's loop: the agents' heartbeats run there


def check(method: str, url: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raise DocumentBroken unless the response to ``method url`` fits the document."""
    parts = urlsplit(url)
    content_type = headers.get("Content-Type", "")
    media = content_type.split(";")[0].strip()
    request = MockRequest(f"{parts.scheme}://{parts.netloc}", method, parts.path, args=dict(parse_qsl(parts.query)))
    response = MockResponse(body, status, dict(headers), media)
    if media == STREAMING:
        return _check_stream(request, response)
    try:
        api().validate_response(request, response)
    except PathError:
        _check_problem(method, url, status, media, body)
    except Exception as exc:  # openapi-core's validation errors: say which and why
        raise DocumentBroken(f"{method} {url} -> {status} {media}: {_why(exc)}\n{body[:2000]!r}") from None


def _check_stream(request: MockRequest, response: MockResponse) -> None:
    """An event stream cannot be read to its end: only its operation's media type is checked."""
    try:
        api().validate_response(request, MockResponse(b"", response.status_code, dict(response.headers), STREAMING))
    except Exception as exc:
        raise DocumentBroken(f"{request.method} {request.path}: {_why(exc)}") from None


def _check_problem(method: str, url: str, status: int, media: str, body: bytes) -> None:
    if status < 400 or media != PROBLEM:
        raise DocumentBroken(f"{method} {url} is not in the document, yet answered {status} {media}")
    data = json.loads(body)
    schema = document()["components"]["schemas"]["Problem"]
    missing = [key for key in schema["required"] if key not in data]
    if missing or data["status"] != status:
        raise DocumentBroken(f"{method} {url} -> {status}: not a problem body (missing {missing}): {data}")


def _why(exc: Exception) -> str:
    parts: list[Any] = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    while cause is not None:
        parts.append(f"{type(cause).__name__}: {cause}")
        for error in getattr(cause, "schema_errors", ()) or ():
            parts.append(f"  at {list(error.absolute_path)}: {error.message}")
        cause = cause.__cause__
    text = "\n".join(str(part) for part in parts)
    return text if len(text) <= 3000 else text[:3000] + "..."
