"""Leader election through an etcd lease, as a pure state machine (time passed in).

Vocabulary: a controller holds a **lease** (granted with a TTL, kept alive by renewals) and
**campaigns** by creating the **election key** bound to it, only if the key does not exist.
Whoever created the key **leads**; the key's create revision is the **term**, which only grows
(etcd revisions do) and names this leadership in every guarded write (``wire.Guard``). When
the lease ends, etcd deletes the key and the others campaign again.

::

    NO_LEASE ──Granted──► CANDIDATE ──Won──► LEADER
       ▲                    │  ▲ Lost            │ renewal overdue, lease gone, key deleted
       └── lease overdue ───┘  └─────────────────┘ (lease overdue: back to NO_LEASE, revoke it)

``step(state, event, now, policy) -> (state, Decision)``: the shell feeds every outcome of what
it was told to do (Granted, Renewed, Won, Lost, Failed), what the watch on the key saw (KeyPut,
KeyDeleted), or a Tick when ``Decision.wake_at`` comes; the Decision says what to start
(``do``: GRANT, CAMPAIGN or RENEW, one at a time), whether this controller **may act now**
(``leading``, with ``until``), whether that changed, and a lease to revoke.

**Stepping down before a successor can lead.** etcd lets a lease expire no earlier than TTL
after it received the last renewal, so no earlier than TTL after the renewal was *sent*. A
leader acts only while ``now < sent + ttl - margin`` for its last successful renewal.
Counting from the send already covers the gateway's round trip; ``margin`` covers the clocks:
a leader whose clock runs slower than etcd's by up to ``margin / ttl`` still stops in time
(``tests/unit/election_sim.py`` simulates it), and what it began just before the deadline (a
message to an agent) has ``margin`` to land. Past that it steps down, whether or not its
renewals are failing, and whether or not a call is still in flight; a successor can create the
key only after the lease expired, which is later. The guarded writes are the second line: a
deposed leader's write fails in etcd.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Union


class Phase(enum.Enum):
    NO_LEASE = "no_lease"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Action(enum.Enum):
    GRANT = "grant"
    CAMPAIGN = "campaign"
    RENEW = "renew"


@dataclass(frozen=True)
class Policy:
    """``ttl``: the lease's TTL in whole seconds (etcd's unit); ``margin``: how long before the
    earliest expiry a leader stops acting; ``retry``: the wait after a failed call; ``recheck``:
    how often a candidate campaigns again when no watch event wakes it."""

    ttl: int = 5
    margin: float = 1.0
    retry: float = 0.25
    recheck: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or not 1 <= self.ttl <= 3600:
            raise ValueError(f"ttl: a whole number of seconds from 1 to 3600, not {self.ttl!r}")
        for name in ("margin", "retry", "recheck"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: a positive number of seconds, not {value!r}")
        if self.margin >= self.ttl:
            raise ValueError(f"margin: must be under the ttl ({self.ttl}s), not {self.margin!r}")

    def renew_every(self, ttl: float) -> float:
        """Three renewals fit in the time a leader may act on one."""
        return max(ttl - self.margin, 0.0) / 3


@dataclass(frozen=True)
class Tick:
    """Time passed (``Decision.wake_at`` came)."""


@dataclass(frozen=True)
class Granted:
    """A lease was granted (etcd's TTL, maybe more than asked); ``sent_at``: when asked."""

    lease: int
    ttl: float
    sent_at: float


@dataclass(frozen=True)
class Renewed:
    """A keepalive sent at ``sent_at`` came back: ``ttl`` > 0 renewed, else the lease is gone."""

    lease: int
    ttl: float
    sent_at: float


@dataclass(frozen=True)
class Won:
    """The election key is ours (created with ``lease``), with create revision ``term``."""

    lease: int
    term: int


@dataclass(frozen=True)
class Lost:
    """Another controller holds the election key, created at ``term`` (0: not known)."""

    lease: int
    term: int


@dataclass(frozen=True)
class Failed:
    """The call for ``action`` failed (etcd unavailable, no quorum, refused)."""

    action: Action


@dataclass(frozen=True)
class KeyPut:
    """The watch saw the election key created or written, with create revision ``term``."""

    term: int


@dataclass(frozen=True)
class KeyDeleted:
    """The watch saw the election key deleted at ``revision``."""

    revision: int


Event = Union[Tick, Granted, Renewed, Won, Lost, Failed, KeyPut, KeyDeleted]


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.NO_LEASE
    lease: int = 0
    ttl: float = 0.0
    renewed_at: float = -math.inf
    term: int = 0
    seen: int = 0
    led: int = 0
    busy: Action | None = None
    next_renew: float = 0.0
    next_campaign: float = 0.0
    retry_at: float = 0.0
    leading: bool = False

    def until(self, policy: Policy) -> float:
        """When acting on this lease must stop unless a renewal succeeds first."""
        return self.renewed_at + self.ttl - policy.margin


@dataclass(frozen=True)
class Decision:
    do: Action | None
    leading: bool
    term: int
    changed: bool
    until: float | None
    wake_at: float
    revoke: int = 0


def may_act(state: State, now: float, policy: Policy) -> bool:
    """Whether this controller may act as leader at ``now`` (readable at any moment, between
    steps too: it needs no Tick to turn false)."""
    return state.phase is Phase.LEADER and now < state.until(policy)


def step(state: State, event: Event, now: float, policy: Policy) -> tuple[State, Decision]:
    state, revoke = _apply(state, event, now, policy)
    state, expired = _expire(state, now, policy)
    return _decide(state, now, policy, revoke or expired)


def _done(state: State, action: Action) -> State:
    return replace(state, busy=None) if state.busy is action else state


def _apply(state: State, event: Event, now: float, policy: Policy) -> tuple[State, int]:
    """The state after ``event``, and a lease to revoke (0: none)."""
    if isinstance(event, Granted):
        state = _done(state, Action.GRANT)
        if state.phase is not Phase.NO_LEASE or event.ttl <= 0:
            return state, event.lease
        return replace(state, phase=Phase.CANDIDATE, lease=event.lease, ttl=event.ttl,
                       renewed_at=event.sent_at, next_renew=now + policy.renew_every(event.ttl),
                       next_campaign=now), 0
    if isinstance(event, Renewed):
        return _renewed(_done(state, Action.RENEW), event, now, policy), 0
    if isinstance(event, Won):
        return _won(_done(state, Action.CAMPAIGN), event, now, policy)
    if isinstance(event, Lost):
        state = replace(_done(state, Action.CAMPAIGN), seen=max(state.seen, event.term))
        if state.phase is Phase.CANDIDATE:
            state = replace(state, next_campaign=now + policy.recheck)
        return state, 0
    if isinstance(event, Failed):
        return _failed(_done(state, event.action), event.action, now, policy), 0
    if isinstance(event, KeyPut):
        state = replace(state, seen=max(state.seen, event.term))
        if state.phase is Phase.LEADER and event.term > state.term:
            return _to_candidate(state, now), 0
        return state, 0
    if isinstance(event, KeyDeleted):
        if state.phase is Phase.LEADER and event.revision > state.term:
            return _to_candidate(state, now), 0
        if state.phase is Phase.CANDIDATE:
            return replace(state, next_campaign=min(state.next_campaign, now)), 0
    return state, 0


def _renewed(state: State, event: Renewed, now: float, policy: Policy) -> State:
    if event.lease != state.lease or state.phase is Phase.NO_LEASE:
        return state
    if event.ttl <= 0:
        return _no_lease(state, now)
    if event.sent_at >= state.renewed_at:
        state = replace(state, renewed_at=event.sent_at, ttl=event.ttl)
    return replace(state, next_renew=now + policy.renew_every(state.ttl))


def _won(state: State, event: Won, now: float, policy: Policy) -> tuple[State, int]:
    if event.lease != state.lease or state.phase is Phase.NO_LEASE:
        return state, event.lease
    if state.phase is Phase.CANDIDATE and event.term > state.led and event.term >= state.seen:
        return replace(state, phase=Phase.LEADER, term=event.term, seen=event.term, led=event.term), 0
    if state.phase is Phase.CANDIDATE:
        return replace(state, next_campaign=now + policy.recheck), 0
    return state, 0


def _failed(state: State, action: Action, now: float, policy: Policy) -> State:
    if action is Action.GRANT:
        return replace(state, retry_at=now + policy.retry)
    if action is Action.RENEW:
        return replace(state, next_renew=now + policy.retry)
    return replace(state, next_campaign=now + policy.retry)


def _to_candidate(state: State, now: float) -> State:
    return replace(state, phase=Phase.CANDIDATE, term=0, next_campaign=now)


def _no_lease(state: State, now: float) -> State:
    return replace(state, phase=Phase.NO_LEASE, lease=0, ttl=0.0, renewed_at=-math.inf, term=0,
                   retry_at=now)


def _expire(state: State, now: float, policy: Policy) -> tuple[State, int]:
    """A lease whose acting time is over is given up (and revoked: if it still lives, its key
    goes at once instead of at its expiry)."""
    if state.phase is Phase.NO_LEASE or now < state.until(policy):
        return state, 0
    return _no_lease(state, now), state.lease


def _decide(state: State, now: float, policy: Policy, revoke: int) -> tuple[State, Decision]:
    leading = may_act(state, now, policy)
    do: Action | None = None
    if state.busy is None:
        if state.phase is Phase.NO_LEASE:
            do = Action.GRANT if now >= state.retry_at else None
        elif now >= state.next_renew:
            do = Action.RENEW
        elif state.phase is Phase.CANDIDATE and now >= state.next_campaign:
            do = Action.CAMPAIGN
    times = [state.retry_at] if state.phase is Phase.NO_LEASE else [state.next_renew, state.until(policy)]
    if state.phase is Phase.CANDIDATE:
        times.append(state.next_campaign)
    later = [t for t in times if t > now]
    wake_at = min(later, default=now + policy.recheck)
    decision = Decision(do, leading, state.term if leading else 0, leading != state.leading,
                        state.until(policy) if leading else None, wake_at, revoke)
    return replace(state, busy=do or state.busy, leading=leading), decision
