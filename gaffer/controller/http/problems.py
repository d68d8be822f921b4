"""Errors as ``application/problem+json`` (RFC 9457), with gaffer's stable error codes.

The status says what kind of failure it is; ``code`` says exactly which one, the same word the
ZeroMQ side answers with, so a script can match on it whichever interface it uses. Bad input is
a 4xx naming the field; only a bug in the controller is a 500, and its body never carries a
traceback.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gaffer.common.errors import GafferError

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://gaffer.invalid/problems/"
"""Problem ``type`` URIs: stable identifiers, not meant to be fetched (RFC 9457 section 3.1.1)."""

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400, "invalid_argument": 400, "limit_exceeded": 400,
    "stdin_not_enabled": 400, "invalid_signal": 400, "invalid_config": 400,
    "invalid_template": 422, "spawn_failed": 422,
    "unauthorized": 401, "forbidden": 403,
    "not_found": 404, "template_not_found": 404, "instance_not_found": 404, "node_not_found": 404,
    "method_not_allowed": 405, "not_acceptable": 406,
    "conflict": 409, "template_exists": 409, "node_alive": 409, "illegal_transition": 409,
    "stdin_closed": 409,
    "precondition_failed": 412, "too_large": 413, "unsupported_media_type": 415,
    "throttled": 429, "stdin_full": 429,
    "shutting_down": 503, "unreachable": 503, "storage_error": 503, "storage_damaged": 503,
    "keeper_unavailable": 503, "keeper_busy": 503,
    "store_unavailable": 503, "no_quorum": 503, "store_rejected": 503, "compare_failed": 409,
    "leadership_lost": 503,
}
INTERNAL = 500


def status_of(code: str) -> int:
    return STATUS_BY_CODE.get(code, INTERNAL)


def problem_body(code: str, detail: str, status: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code, "title": code.replace("_", " "), "status": status,
        "detail": detail, "code": code,
    }
    if extra:
        body.update(extra)
    return body


def problem_response(exc: GafferError, headers: dict[str, str] | None = None) -> web.Response:
    """The response for ``exc``: its code's status, its message, its field and problems."""
    wire = exc.to_dict()
    status = status_of(exc.code)
    extra: dict[str, Any] = {}
    details = wire.get("details") or {}
    if "argument" in details:
        extra["field"] = details["argument"]
    if "problems" in wire:
        extra["problems"] = wire["problems"]
    if details:
        extra["details"] = details
    return problem(exc.code, exc.message, status, extra, headers)


def problem(
    code: str, detail: str, status: int, extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(problem_body(code, detail, status, extra)),
        content_type=PROBLEM_TYPE, headers=headers,
    )
