"""What an etcd endpoint's error answer means, and how the endpoints are written (pure).

The gateway answers a failed call with ``{"error", "message", "code"}``, ``code`` being the
gRPC status. Two kinds matter to a caller:

- **Try another member.** UNAVAILABLE (14) and DEADLINE_EXCEEDED (4) are about the member, not
  the request: it has no leader (``etcdserver: no leader``, answered at once because the client
  sends gRPC's ``hasleader`` metadata), timed out waiting for one, or saw it change. The client
  tries the next endpoint; when none can serve and one said it has no leader, it is NoQuorum.
- **The request is refused.** Anything else (a lease that is not found, a compacted revision,
  an invalid request) would be refused by every member alike: StoreRejected at once.

etcd's messages are its API here (its own Go client maps them the same way, in ``rpctypes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gaffer.common.errors import ConfigError, StoreRejected

UNAVAILABLE = 14
DEADLINE_EXCEEDED = 4
RETRY_ELSEWHERE = frozenset({UNAVAILABLE, DEADLINE_EXCEEDED})

_REASONS = (
    ("lease not found", "lease_not_found"),
    ("has been compacted", "compacted"),
    ("request is too large", "too_large"),
    ("too many requests", "too_many_requests"),
)
_BY_CODE = {3: "invalid", 5: "not_found", 11: "out_of_range", 7: "permission_denied", 16: "unauthenticated"}


@dataclass(frozen=True)
class Unserved:
    """An endpoint that could not serve the call; ``no_leader`` when it said it has none."""

    endpoint: str
    reason: str
    no_leader: bool = False


def refusal(endpoint: str, status: int, answer: Any) -> Unserved | StoreRejected:
    """The meaning of an error answer (HTTP ``status``, JSON ``answer``) from ``endpoint``."""
    if not isinstance(answer, dict):
        return Unserved(endpoint, f"HTTP {status} with no JSON error")
    code = answer.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")[:300]
    if code in RETRY_ELSEWHERE or (code == 0 and status >= 500):
        return Unserved(endpoint, message, "no leader" in message)
    reason = next((word for text, word in _REASONS if text in message), _BY_CODE.get(code, "error"))
    return StoreRejected(f"etcd at {endpoint} refused the request: {message}", code, reason)


def parse_endpoints(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``h1:2379,h2:2379`` (or a list, or ``http://`` URLs) -> base URLs, each checked.

    Only ``http`` is accepted: TLS and authentication to etcd are not built yet.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    found: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        url = item if "://" in item else f"http://{item}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"etcd endpoint {item!r}: {exc}") from None
        if parts.scheme != "http":
            raise ConfigError(f"etcd endpoint {item!r}: only http:// is supported")
        if not parts.hostname or port is None:
            raise ConfigError(f"etcd endpoint {item!r}: give host:port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"etcd endpoint {item!r}: give host:port only, no path")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        found.append(f"http://{host}:{port}")
    if not found:
        raise ConfigError("no etcd endpoint given")
    return tuple(dict.fromkeys(found))
