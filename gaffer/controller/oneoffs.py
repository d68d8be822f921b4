"""One-off runs (``gafferctl run``): which node may report on which, and how they ended.

A one-off is not placed: the controller asks a node to run it and must then admit that node's
events about it, and remember its exit for ``wait``. Both tables are bounded (the oldest go
first) and count what they forget, for ``status``: a ``wait`` for a run forgotten that way
times out instead of hanging on, and the count says why.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any, Iterator

MAX_ONEOFFS = 1_000


class OneOffs:
    def __init__(self, limit: int = MAX_ONEOFFS) -> None:
        self._limit = limit
        self.exits: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
        self.started: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.pending: collections.Counter[tuple[str, str]] = collections.Counter()
        self.leases: dict[tuple[str, str], float] = {}
        """The lease (seconds) each attended run was started with, renewed by every ``wait``."""
        self.dropped = {"exits": 0, "started": 0}

    def ended(self, node: str, ident: str, data: dict[str, Any]) -> None:
        """A one-off's exit event: kept for ``wait``."""
        self.exits[(node, ident)] = data
        self.leases.pop((node, ident), None)
        while len(self.exits) > self._limit:
            self.exits.popitem(last=False)
            self.dropped["exits"] += 1

    def exit_of(self, node: str, ident: str) -> dict[str, Any] | None:
        return self.exits.get((node, ident))

    def start(self, node: str, ident: str, lease: float | None = None) -> None:
        """Remember a one-off run the controller started, so its node may report on it (and,
        for an attended run, the lease its waits renew)."""
        self.started[(node, ident)] = None
        if lease is not None:
            self.leases[(node, ident)] = lease
        while len(self.started) > self._limit:
            key, _ = self.started.popitem(last=False)
            self.leases.pop(key, None)
            self.dropped["started"] += 1

    def lease_of(self, node: str, ident: str) -> float | None:
        """The lease of an attended run that has not ended (None: no lease, or it ended)."""
        if (node, ident) in self.exits:
            return None
        return self.leases.get((node, ident))

    def release(self, node: str, ident: str) -> None:
        self.leases.pop((node, ident), None)

    def runs_on(self, node: str, ident: str) -> bool:
        return (node, ident) in self.started

    def starting_on(self, node: str, template: str) -> bool:
        return (node, template) in self.pending

    @contextlib.contextmanager
    def starting(self, node: str, template: str) -> Iterator[None]:
        """While a run request is out, its node may report any one-off of ``template``: the
        spawn event can overtake the reply that names the run."""
        key = (node, template)
        self.pending[key] += 1
        try:
            yield
        finally:
            self.pending[key] -= 1
            if self.pending[key] <= 0:
                del self.pending[key]

    def status(self) -> dict[str, Any]:
        return {"remembered": len(self.exits), "running": len(self.started), "dropped": dict(self.dropped)}
