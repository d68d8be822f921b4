"""Two controllers electing against a model of etcd, in simulated time, for test_election.

The model keeps what matters to the election: leases expiring on the server's clock (TTL after
the server *received* the grant or the last keepalive), the election key bound to a lease and
deleted with it, revisions that only grow. Each controller runs the real ``election.step`` on
its own clock, which runs at a rate within ``drift`` of the server's and from its own origin;
each call reaches the server after a random delay (or never: the controller sees a failure at
its timeout) and its answer comes back after another. ``overlaps`` lists every moment where
both controllers could act at once.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from gaffer.controller.etcd.election import (
    Action, Failed, Granted, Lost, Policy, Renewed, State, Tick, Won, may_act, step,
)

TIMEOUT = 0.5


@dataclass
class Controller:
    rate: float
    origin: float
    state: State = field(default_factory=State)
    lease_of_call: int = 0

    def clock(self, now: float) -> float:
        return self.origin + self.rate * now

    def true_time(self, local: float) -> float:
        return (local - self.origin) / self.rate


class Simulation:
    def __init__(self, policy: Policy, rates: tuple[float, float], delays: list[float]) -> None:
        self.policy = policy
        self.controllers = [Controller(rate, 100.0 * index) for index, rate in enumerate(rates)]
        self.delays = itertools.cycle(delays or [0.0])
        self.leases: dict[int, float] = {}
        self.key: tuple[int, int] | None = None
        self.revision = 1
        self.next_lease = 1
        self.queue: list[tuple[float, int, str, int, object]] = []
        self.order = itertools.count()
        self.overlaps: list[float] = []
        self.terms: list[int] = []

    def schedule(self, when: float, kind: str, who: int, payload: object = None) -> None:
        heapq.heappush(self.queue, (when, next(self.order), kind, who, payload))

    def run(self, until: float = 20.0, events: int = 600) -> None:
        for who in range(2):
            self.feed(0.0, who, Tick())
        for _ in range(events):
            if not self.queue or self.queue[0][0] > until:
                return
            now, _, kind, who, payload = heapq.heappop(self.queue)
            if kind == "arrive":
                self.arrive(now, who, payload)
            elif kind == "revoke":
                self.expire(now)
                self.drop(payload)
            else:
                self.feed(now, who, payload)

    def feed(self, now: float, who: int, event: object) -> None:
        me = self.controllers[who]
        me.state, decision = step(me.state, event, me.clock(now), self.policy)
        if decision.leading and decision.changed:
            self.terms.append(decision.term)
        other = self.controllers[1 - who]
        if decision.leading and may_act(other.state, other.clock(now), self.policy):
            self.overlaps.append(now)
        if decision.revoke:
            self.schedule(now + next(self.delays), "revoke", who, decision.revoke)
        if decision.do is not None:
            self.send(now, who, decision.do)
        self.schedule(max(me.true_time(decision.wake_at), now), "deliver", who, Tick())

    def send(self, now: float, who: int, action: Action) -> None:
        me = self.controllers[who]
        delay = next(self.delays)
        if delay > 0.9 * TIMEOUT:
            self.schedule(now + TIMEOUT, "deliver", who, Failed(action))
            return
        self.schedule(now + delay, "arrive", who, (action, me.state.lease, me.clock(now)))

    def arrive(self, now: float, who: int, call: tuple[Action, int, float]) -> None:
        """The server handles a call at ``now`` and answers after another delay."""
        self.expire(now)
        action, lease, sent = call
        ttl = float(self.policy.ttl)
        if action is Action.GRANT:
            lease = self.next_lease
            self.next_lease += 1
            self.leases[lease] = now + ttl
            answer: object = Granted(lease, ttl, sent)
        elif action is Action.RENEW:
            alive = lease in self.leases
            if alive:
                self.leases[lease] = now + ttl
            answer = Renewed(lease, ttl if alive else 0.0, sent)
        else:
            answer = self.campaign(lease)
        self.schedule(now + next(self.delays), "deliver", who, answer)

    def campaign(self, lease: int) -> object:
        if self.key is None:
            if lease not in self.leases:
                return Failed(Action.CAMPAIGN)
            self.revision += 1
            self.key = (lease, self.revision)
            return Won(lease, self.revision)
        holder, term = self.key
        return Won(lease, term) if holder == lease else Lost(lease, term)

    def expire(self, now: float) -> None:
        for lease, end in list(self.leases.items()):
            if end <= now:
                self.drop(lease)

    def drop(self, lease: int) -> None:
        self.leases.pop(lease, None)
        if self.key is not None and self.key[0] == lease:
            self.key = None
            self.revision += 1
