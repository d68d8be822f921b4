"""Accounting for dropped wire messages: log the first of each kind per peer, count them all.

A receive loop drops a bad message and carries on (see gaffer.common.protocol). A broken or
hostile peer can send thousands a second, so logging each one would flood the log and hide
everything else: the first drop per (peer, reason) is logged at WARNING with its detail, later
ones at DEBUG, and every drop is counted per reason and per peer for /metrics and status. Only
the ``max_peers`` most recently seen peers are tracked, so many peers cannot grow the table
without bound; a peer evicted and seen again is logged again.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from gaffer.common.errors import ProtocolError

DEFAULT_MAX_PEERS = 1_024
MAX_DETAIL = 500

log = logging.getLogger("gaffer.protocol")


class BadMessages:
    """Counts of dropped messages, per reason and per peer (the ``max_peers`` most recent)."""

    def __init__(self, max_peers: int = DEFAULT_MAX_PEERS, logger: logging.Logger = log) -> None:
        if max_peers < 1:
            raise ValueError(f"max_peers must be >= 1, got {max_peers}")
        self.max_peers = max_peers
        self.total = 0
        self.evicted = 0
        self._logger = logger
        self._reasons: collections.Counter[str] = collections.Counter()
        self._peers: dict[str, collections.Counter[str]] = collections.OrderedDict()

    def record(self, peer: str, reason: str, detail: str) -> None:
        """Count one dropped message; log it if it is the first of its reason from this peer."""
        self.total += 1
        self._reasons[reason] += 1
        counts = self._peers.get(peer)
        if counts is None:
            counts = self._peers[peer] = collections.Counter()
            if len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
                self.evicted += 1
        else:
            self._peers.move_to_end(peer)
        first = reason not in counts
        counts[reason] += 1
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL] + "..."
        if first:
            self._logger.warning(
                "dropped a message from %r: %s: %s (further %s drops from this peer are logged "
                "at DEBUG)", peer, reason, detail, reason,
            )
        else:
            self._logger.debug("dropped a message from %r: %s: %s", peer, reason, detail)

    def record_error(self, peer: str, error: ProtocolError) -> None:
        """``record`` for the ProtocolError that ``decode`` raised."""
        self.record(peer, error.reason, error.message)

    def snapshot(self) -> dict[str, Any]:
        """Plain counts for metrics and status: totals, per reason, per tracked peer."""
        return {
            "total": self.total,
            "reasons": dict(self._reasons),
            "peers": {peer: dict(counts) for peer, counts in self._peers.items()},
            "peers_evicted": self.evicted,
        }
