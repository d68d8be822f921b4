"""The Python client of a gaffer controller: requests and event subscriptions.

``Client`` is for plain scripts and ``gafferctl``: blocking, on plain pyzmq sockets, with no
event loop. ``AsyncClient`` is the same for asyncio code; it is loaded on first use, so a
script that only uses ``Client`` never imports asyncio. Every request has a timeout: an
unreachable controller raises ``ControllerUnreachable`` naming the endpoint, never hangs.
Errors the controller reports come back as the same ``GafferError`` classes the controller
raised (matched by code).

::

    with Client("tcp://127.0.0.1:6001") as client:
        for node in client.call("nodes"):
            print(node["name"], node["state"])

``events(prefixes, since=None)`` yields each matching event once, in order (``ReceivedEvent``,
``seq`` being its position), or, where the controller no longer holds what was missed, an
``EventsLost(first, last)`` followed by a ``Snapshot`` of the state; ``resume`` decides which.

The package: ``wire`` (the frames and answers both share, pure), ``resume`` (the stream without
gaps, pure), ``answers`` (replay and snapshot answers checked), ``sync`` (Client), ``aio``
(AsyncClient).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gaffer.client.resume import EventsLost, Snapshot
from gaffer.client.sync import Client
from gaffer.client.wire import DEFAULT_TIMEOUT, PAGE, Credentials, ReceivedEvent, check_timeout, split_by_size

if TYPE_CHECKING:
    from gaffer.client.aio import AsyncClient

__all__ = [
    "DEFAULT_TIMEOUT", "PAGE", "AsyncClient", "Client", "Credentials", "EventsLost", "ReceivedEvent",
    "Snapshot", "check_timeout", "split_by_size",
]


def __getattr__(name: str) -> Any:
    """``AsyncClient`` on first use (PEP 562): importing it imports asyncio."""
    if name == "AsyncClient":
        from gaffer.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
