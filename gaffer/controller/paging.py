"""Listings in pages: ``limit`` items at a time, and a ``continue`` token for the next page.

A listing of 100,000 instances does not fit in one wire message (4 MiB), and a reply that
cannot be sent is an answer lost. So listings take ``limit`` (at most ``MAX_LIMIT``) and
answer ``{"items": [...], "continue": token}``; ``continue`` is null on the last page. The
token is the sort key of the last item given, so a page is stable while the listing changes
between calls (items are never repeated; one added before the token is not shown), as with
Kubernetes' ``continue``. Without ``limit`` a listing answers the plain list, as before, and a
list too large for one message is refused with ``too_large`` instead.

Pure: rows in, a page out.
"""

from __future__ import annotations

import base64
import bisect
import json
from typing import Any, Callable, Sequence

from gaffer.common.errors import InvalidArgument

MAX_LIMIT = 10_000
MAX_TOKEN = 1_024
Key = Callable[[dict[str, Any]], Sequence[Any]]


def page_args(args: dict[str, Any]) -> tuple[int | None, list[Any] | None]:
    """``limit`` and the decoded ``continue`` of a request, or InvalidArgument naming which."""
    limit = args.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT):
        raise InvalidArgument("limit", f"must be an integer in 1..{MAX_LIMIT}")
    token = args.get("continue")
    if token is None:
        return limit, None
    if limit is None:
        raise InvalidArgument("continue", "needs 'limit' too")
    return limit, decode_token(token)


def page(rows: list[dict[str, Any]], key: Key, limit: int, after: list[Any] | None) -> dict[str, Any]:
    """The ``limit`` rows (sorted by ``key``) that come after the key ``after``."""
    if after is not None:
        mark = _comparable(after)
        try:
            rows = [row for row in rows if _comparable(key(row)) > mark]
        except TypeError:
            raise InvalidArgument("continue", "is not a token of this listing") from None
    items = rows[:limit]
    more = len(rows) > limit
    return {"items": items, "continue": encode_token(list(key(items[-1]))) if more else None}


def page_names(names: list[str], limit: int, after: list[Any] | None) -> tuple[list[str], str | None]:
    """``page`` for a sorted list of names (keys ``(name,)``), by bisection instead of a scan:
    paging through 100,000 templates costs each page its own size, not the whole list."""
    start = 0
    if after is not None:
        if len(after) != 1 or not isinstance(after[0], str):
            raise InvalidArgument("continue", "is not a token of this listing")
        start = bisect.bisect_right(names, after[0])
    items = names[start:start + limit]
    more = start + limit < len(names)
    return items, encode_token([items[-1]]) if more and items else None


def encode_token(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_token(token: Any) -> list[Any]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise InvalidArgument("continue", "must be the token a previous page returned")
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError):
        raise InvalidArgument("continue", "is not a token of this listing") from None
    if not isinstance(key, list) or not all(isinstance(part, (str, int, list)) for part in key):
        raise InvalidArgument("continue", "is not a token of this listing")
    return key


def _comparable(key: Sequence[Any]) -> list[Any]:
    """Keys as JSON gives them back (tuples become lists), so a decoded token compares."""
    return [_comparable(part) if isinstance(part, (list, tuple)) else part for part in key]
