"""What both clients share: the request frame, reading an answer, splitting an apply, events.

``AsyncClient`` (asyncio) and ``Client`` (blocking) differ only in how they wait; everything
they say and how they read the controller's answers is here, as plain functions of values, so
the two can never drift apart. Nothing here imports asyncio or opens a socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import msgpack

from gaffer.common import protocol
from gaffer.common.errors import ConfigError, ControllerUnreachable, ProtocolError, TemplateError, from_wire

if TYPE_CHECKING:
    from gaffer.common.keys import KeyPair

DEFAULT_TIMEOUT = 5.0
PAGE = 2_000
"""Items per page when a listing is fetched whole (a page stays far below a message)."""
APPLY_PART_BYTES = 1024 * 1024
"""Templates per apply request, by encoded size: a quarter of a message, leaving room."""
MAX_TIMEOUT = 86_400.0


@dataclass(frozen=True)
class Credentials:
    """A client key pair and the controller's public key, for CURVE."""

    keys: KeyPair
    controller_key: bytes


class ReceivedEvent(NamedTuple):
    """One event, delivered once: ``seq`` is its position in the controller's stream. A named
    tuple: a subscriber makes one per event, and a frozen dataclass took five times as long."""

    seq: int
    topic: str
    ts: float
    data: dict[str, Any]


def split_by_size(items: list[Any], budget: int) -> list[list[Any]]:
    """``items`` in order, cut into lists whose encoded size stays within ``budget`` (an item
    bigger than that goes alone)."""
    parts: list[list[Any]] = [[]]
    used = 0
    for item in items:
        size = len(msgpack.packb(item, use_bin_type=True)) + 8
        if parts[-1] and used + size > budget:
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += size
    return parts


def check_timeout(value: float) -> float:
    """A request timeout: a finite number of seconds, 0 < value <= a day (ConfigError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise ConfigError(f"timeout: must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {value!r}")
    return float(value)


def request_frame(seq: int, request_id: int, op: str, args: dict[str, Any]) -> bytes:
    return protocol.encode("request", seq, {"id": request_id, "op": op, "args": args})


def reply_body(frame: bytes | memoryview) -> dict[str, Any] | None:
    """A reply's body, or None for a frame that is not one (dropped, as the controller drops
    bad messages)."""
    try:
        return protocol.decode(frame, protocol.CONTROLLER_TO_CLIENT).body
    except ProtocolError:
        return None


def result_of(body: dict[str, Any]) -> Any:
    """The result a reply carries, or the GafferError it reports."""
    if not body["ok"]:
        raise from_wire(body["error"])
    return body["result"]


def unreachable(endpoint: str, wait: float, keyed: bool) -> ControllerUnreachable:
    return ControllerUnreachable(
        f"no answer from the controller at {endpoint} within {wait:g}s "
        "(is gaffer-controller running there? check --controller / GAFFER_CONTROLLER"
        + (" and the keys" if keyed else "") + ")"
    )


def apply_requests(templates: list[dict[str, Any]], source: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The requests (op, args) of one apply, all or nothing: one ``apply``, or, when it is too
    big for one message, ``stage_apply`` parts that the last ``apply`` commits (see the
    controller's ``staging``). TemplateError before anything is sent for an oversized
    template."""
    problems = protocol.oversized_templates(templates)
    if problems:
        raise TemplateError(problems, source=source)
    parts = split_by_size(templates, APPLY_PART_BYTES)
    if len(parts) == 1:
        yield "apply", {"templates": parts[0], "source": source}
        return
    import secrets  # only for an apply in parts: kept out of gafferctl's start-up

    stage = secrets.token_urlsafe(24)
    for part in parts[:-1]:
        yield "stage_apply", {"stage": stage, "templates": part, "source": source}
    yield "apply", {"stage": stage, "templates": parts[-1], "source": source}


FEED_MARK = b"\x01"
"""The first byte of a feed key (the controller's ``feeds``: a subscription to batches)."""


def feed_key(prefixes: Sequence[str]) -> bytes:
    """What a client subscribes to for its ``prefixes``' events in batches: the feed mark and
    the prefixes packed with msgpack (prefix-free, so the key reaches only its own batches)."""
    return FEED_MARK + msgpack.packb(list(prefixes), use_bin_type=True)


def batch_body(frame: bytes | memoryview) -> dict[str, Any] | None:
    """A published ``batch``'s body (``prev``, ``events``: ``[seq, topic, ts, data]`` each,
    ascending), or None for a frame that is not one (dropped: replay recovers it)."""
    try:
        message = protocol.decode(frame, protocol.PUBLISHED)
    except ProtocolError:
        return None
    return message.body if message.kind == "batch" else None


def events_endpoint(status: dict[str, Any]) -> str:
    """The event endpoint a ``status`` answer names: ``events`` as a string, or the
    ``endpoint`` of an ``events`` map."""
    events = status.get("events")
    if isinstance(events, dict):
        events = events.get("endpoint", status.get("pub"))
    if not isinstance(events, str):
        raise ProtocolError(protocol.BAD_BODY, "the controller's status names no event endpoint", "status")
    return events


LINK_EVENTS = (1 << 0) | (1 << 9)
"""zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED: what an event socket's monitor reports."""


class LinkWatch:
    """A SUB socket's monitor messages -> "it connected again after a disconnect"."""

    def __init__(self) -> None:
        self.disconnected = False
        self.reconnects = 0

    def saw(self, frames: list[bytes]) -> bool:
        """Whether this monitor message is a connect that follows a disconnect."""
        if len(frames) != 2 or len(frames[0]) != 6:
            return False
        event = struct.unpack("=hi", frames[0])[0] & 0xFFFF
        if event == 1 << 9:
            self.disconnected = True
        elif event == 1 << 0 and self.disconnected:
            self.disconnected = False
            self.reconnects += 1
            return True
        return False
