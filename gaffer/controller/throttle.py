"""Slowing down repeated authentication failures, per peer address.

A token is 256 random bits, so guessing one is hopeless anyway; this is about cost and noise:
a client hammering the HTTP API with bad tokens should cost the controller almost nothing and
stand out in the logs, and a misconfigured script should be slowed instead of spinning.

The rule, per peer (``peer_key``: the address; an IPv6 address by its /64, since one host
usually holds the whole prefix)::

    failures 1..free          nothing happens
    failure free + n (n>=1)   the peer is refused for min(cap, base * 2**(n-1)) seconds
    while refused             every request is answered "throttled, retry after S seconds"
                              without looking at its token (so guessing goes no faster)
    a success                 forgets that peer's failures (never another peer's)
    quiet for forget_after    the peer's record lapses

The decisions are pure functions of ``(policy, record, now)`` returning values
(``after_failure``, ``verdict``); ``Throttle`` keeps the records, at most ``max_peers`` of
them (the least recently seen go first), so memory stays bounded whatever a flood of addresses
does. A peer pushed out that way starts again from zero: a bound on memory matters more than
a perfect memory of each address. The HTTP layer calls it; the ZMQ side needs none, since
CURVE refuses unknown keys before any request is read.
"""

from __future__ import annotations

import collections
import ipaddress
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottlePolicy:
    free: int = 5
    """Failures allowed before the first delay."""
    base: float = 1.0
    """The first delay, in seconds; each further failure doubles it."""
    cap: float = 30.0
    """The longest delay."""
    forget_after: float = 600.0
    """Seconds without a failure after which a peer's record lapses."""
    max_peers: int = 10_000


@dataclass(frozen=True)
class PeerRecord:
    """What is remembered of one peer: its failures in a row, when it may try again, and
    when it last failed."""

    failures: int
    blocked_until: float
    last_failure: float


@dataclass(frozen=True)
class Verdict:
    """What to do with a request: go ahead, or refuse it for ``retry_after`` seconds."""

    allowed: bool
    retry_after: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds, rounded up (at least 1 when refused)."""
        return str(max(1, math.ceil(self.retry_after))) if not self.allowed else "0"


ALLOW = Verdict(True)


def delay(policy: ThrottlePolicy, failures: int) -> float:
    """Seconds a peer is refused after its ``failures``-th failure in a row."""
    over = failures - policy.free
    if over <= 0:
        return 0.0
    return min(policy.cap, policy.base * 2.0 ** min(over - 1, 64))


def current(policy: ThrottlePolicy, record: PeerRecord | None, now: float) -> PeerRecord | None:
    """``record``, or None once it has lapsed (quiet for ``forget_after``)."""
    if record is None or now - record.last_failure >= policy.forget_after:
        return None
    return record


def verdict(policy: ThrottlePolicy, record: PeerRecord | None, now: float) -> Verdict:
    """Whether a peer with ``record`` may try now."""
    record = current(policy, record, now)
    if record is None or now >= record.blocked_until:
        return ALLOW
    return Verdict(False, min(policy.cap, record.blocked_until - now))  # never past the cap by float rounding


def after_failure(policy: ThrottlePolicy, record: PeerRecord | None, now: float) -> PeerRecord:
    """The peer's record once it failed at ``now``."""
    record = current(policy, record, now)
    failures = (record.failures if record is not None else 0) + 1
    wait = delay(policy, failures)
    return PeerRecord(failures, now + wait if wait else 0.0, now)


def peer_key(address: str | None) -> str:
    """The key a peer is throttled under: its IP address, an IPv6 one by its /64 (IPv4
    mapped into IPv6 counts as IPv4); anything else (a unix socket, None) as given."""
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Throttle:
    """The records of recent failures, by peer, and the three calls a request path makes:
    ``check`` before authenticating, then ``failed`` or ``succeeded``."""

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._records: collections.OrderedDict[str, PeerRecord] = collections.OrderedDict()
        self.refused = 0
        """Requests refused while their peer was throttled."""

    def check(self, peer: str | None, now: float) -> Verdict:
        """Whether a request from ``peer`` may be authenticated now."""
        key = peer_key(peer)
        found = verdict(self.policy, self._records.get(key), now)
        if not found.allowed:
            self.refused += 1
        return found

    def failed(self, peer: str | None, now: float) -> Verdict:
        """Record a failed authentication; what the peer faces from now on."""
        key = peer_key(peer)
        record = after_failure(self.policy, self._records.pop(key, None), now)
        self._records[key] = record
        while len(self._records) > self.policy.max_peers:
            self._records.popitem(last=False)
        return verdict(self.policy, record, now)

    def succeeded(self, peer: str | None) -> None:
        """Forget ``peer``'s failures (only that peer's)."""
        self._records.pop(peer_key(peer), None)

    def __len__(self) -> int:
        return len(self._records)
