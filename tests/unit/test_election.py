"""Leader election's pure core: campaigns, renewals, and stepping down before the lease can end."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.etcd.election import (
    Action, Decision, Failed, Granted, KeyDeleted, KeyPut, Lost, Phase, Policy, Renewed, State, Tick,
    Won, may_act, step,
)
from budget import examples
from election_sim import Simulation

POLICY = Policy(ttl=5, margin=1.0, retry=0.25, recheck=1.0)
GRANT, CAMPAIGN, RENEW = Action.GRANT, Action.CAMPAIGN, Action.RENEW


def leader(now: float = 0.0, term: int = 42) -> tuple[State, Decision]:
    """A controller that was granted lease 7 at ``now`` and won with ``term``."""
    state, _ = step(State(), Tick(), now, POLICY)
    state, _ = step(state, Granted(7, 5.0, now), now, POLICY)
    return step(state, Won(7, term), now, POLICY)


class TestCampaign:
    def test_a_fresh_controller_asks_for_a_lease_then_campaigns_then_leads(self):
        """No lease -> GRANT; granted -> CAMPAIGN; won -> leading with the key's create revision."""
        state, decision = step(State(), Tick(), 0.0, POLICY)
        assert decision.do is GRANT and not decision.leading
        state, decision = step(state, Granted(7, 5.0, 0.0), 0.1, POLICY)
        assert decision.do is CAMPAIGN and state.phase is Phase.CANDIDATE
        state, decision = step(state, Won(7, 42), 0.2, POLICY)
        assert (decision.leading, decision.term, decision.changed) == (True, 42, True)
        assert decision.until == pytest.approx(4.0)

    def test_one_call_at_a_time(self):
        """While a call is out, nothing else is started, even when it is due."""
        state, decision = step(State(), Tick(), 0.0, POLICY)
        assert decision.do is GRANT
        state, decision = step(state, Tick(), 10.0, POLICY)
        assert decision.do is None
        state, decision = step(state, Failed(GRANT), 10.0, POLICY)
        assert decision.do is None and decision.wake_at == pytest.approx(10.25)
        _, decision = step(state, Tick(), 10.25, POLICY)
        assert decision.do is GRANT

    def test_a_loser_campaigns_again_after_recheck_or_at_once_when_the_key_goes(self):
        """Lost -> wait ``recheck``; the watch's KeyDeleted -> campaign now."""
        state, _ = step(State(), Tick(), 0.0, POLICY)
        state, _ = step(state, Granted(7, 5.0, 0.0), 0.0, POLICY)
        state, decision = step(state, Lost(7, 30), 0.1, POLICY)
        assert decision.do is None and decision.wake_at == pytest.approx(1.1)
        _, decision = step(state, KeyDeleted(31), 0.2, POLICY)
        assert decision.do is CAMPAIGN

    def test_a_win_older_than_a_term_seen_is_not_leadership(self):
        """A campaign answer naming a term below one already seen does not make a leader."""
        state, _ = step(State(), Tick(), 0.0, POLICY)
        state, _ = step(state, Granted(7, 5.0, 0.0), 0.0, POLICY)
        state, _ = step(state, KeyPut(50), 0.0, POLICY)
        _, decision = step(state, Won(7, 42), 0.1, POLICY)
        assert not decision.leading

    def test_a_win_with_a_lease_given_up_revokes_that_lease(self):
        """A campaign that answers after its lease was given up gets the lease revoked, so
        the key it may have created goes at once."""
        state, _ = step(State(), Tick(), 0.0, POLICY)
        state, _ = step(state, Granted(7, 5.0, 0.0), 0.0, POLICY)
        state, decision = step(state, Tick(), 4.0, POLICY)
        assert decision.revoke == 7 and state.phase is Phase.NO_LEASE
        _, decision = step(state, Won(7, 42), 4.1, POLICY)
        assert decision.revoke == 7 and not decision.leading


class TestSteppingDown:
    def test_a_leader_whose_renewals_fail_stops_at_last_renewal_plus_ttl_minus_margin(self):
        """Renewed at 0 with ttl 5, margin 1: may act until 4.0, not at 4.0; then it gives the
        lease up (revoked) and asks for a new one."""
        state, decision = leader()
        state, decision = step(state, Tick(), decision.wake_at, POLICY)
        assert decision.do is RENEW
        state, decision = step(state, Failed(RENEW), 2.0, POLICY)
        assert decision.leading and may_act(state, 3.999, POLICY) and not may_act(state, 4.0, POLICY)
        state, decision = step(state, Tick(), 4.0, POLICY)
        assert (decision.leading, decision.changed, decision.revoke) == (False, True, 7)
        assert state.phase is Phase.NO_LEASE

    def test_a_renewal_in_flight_does_not_extend_acting(self):
        """A keepalive still out at the deadline does not keep the leader acting."""
        state, decision = leader()
        state, decision = step(state, Tick(), decision.wake_at, POLICY)
        assert decision.do is RENEW
        assert decision.wake_at <= 4.0
        _, decision = step(state, Tick(), 4.0, POLICY)
        assert not decision.leading

    def test_a_renewal_counts_from_when_it_was_sent(self):
        """A keepalive sent at 1.0 and answered at 3.5 extends acting to 5.0, not 7.5."""
        state, _ = leader()
        state, _ = step(state, Tick(), 1.0, POLICY)
        state, decision = step(state, Renewed(7, 5.0, 1.0), 3.5, POLICY)
        assert decision.until == pytest.approx(5.0)

    def test_a_lease_found_gone_stops_the_leader_at_once(self):
        """A keepalive answered with TTL 0 (the lease expired) ends leading immediately."""
        state, _ = leader()
        state, _ = step(state, Tick(), 1.0, POLICY)
        state, decision = step(state, Renewed(7, 0.0, 1.0), 1.1, POLICY)
        assert not decision.leading and decision.changed and decision.do is GRANT

    def test_the_key_deleted_stops_the_leader_at_once(self):
        """The watch seeing the election key deleted after the win ends leading; it campaigns."""
        state, _ = leader(term=42)
        _, decision = step(state, KeyDeleted(40), 0.5, POLICY)
        assert decision.leading
        _, decision = step(state, KeyDeleted(43), 0.5, POLICY)
        assert not decision.leading and decision.do is CAMPAIGN


class TestPolicy:
    @pytest.mark.parametrize("fields, word", [
        ({"ttl": 0}, "ttl"), ({"ttl": 2.5}, "ttl"), ({"ttl": True}, "ttl"),
        ({"margin": 0}, "margin"), ({"margin": math.nan}, "margin"), ({"ttl": 2, "margin": 2}, "margin"),
        ({"retry": -1}, "retry"), ({"recheck": math.inf}, "recheck"),
    ])
    def test_bad_values_are_refused_by_name(self, fields, word):
        """Each bad policy value is refused with the field named."""
        with pytest.raises(ValueError, match=word):
            Policy(**fields)

    def test_the_default_ttl_is_five_seconds(self):
        """The lease TTL defaults to 5 s (the issue's default)."""
        assert Policy().ttl == 5


# ------------------------------------------------------------------ properties

MOVES = st.lists(
    st.tuples(
        st.floats(0.0, 3.0),
        st.sampled_from(["ok", "ok", "ok", "fail", "gone", "lose", "tick", "put", "delete"]),
        st.integers(0, 3),
    ),
    max_size=60,
)


class Run:
    """Drives the core as the shell would: answers the one call out (at any later time, so
    perhaps for a lease given up meanwhile), with the watch's events in between, and checks
    every decision against an independent record of renewals and terms."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.now = 0.0
        self.revision = 10
        self.lease = 100
        self.outstanding: tuple[Action, int, float] | None = None
        self.renewals: dict[int, tuple[float, float]] = {}
        self.leading_lease = 0
        self.terms_led: list[int] = []
        self.seen = 0
        self.state, decision = step(State(), Tick(), 0.0, policy)
        self.check(decision, False)

    def answer(self, kind: str, extra: int):
        action, lease, sent = self.outstanding
        self.outstanding = None
        if kind == "fail":
            return Failed(action)
        if action is GRANT:
            self.lease += 1
            ttl = float(self.policy.ttl + extra)
            self.renewals[self.lease] = (sent, ttl)
            return Granted(self.lease, ttl, sent)
        if action is RENEW:
            if kind == "gone":
                self.renewals.pop(lease, None)
                return Renewed(lease, 0.0, sent)
            ttl = float(self.policy.ttl)
            if lease in self.renewals and sent >= self.renewals[lease][0]:
                self.renewals[lease] = (sent, ttl)
            return Renewed(lease, ttl, sent)
        self.revision += 1
        if kind == "lose":
            self.seen = max(self.seen, self.revision)
            return Lost(lease, self.revision)
        return Won(lease, self.revision)

    def feed(self, dt: float, kind: str, extra: int) -> None:
        self.now += dt
        self.check_between()
        if kind in ("ok", "fail", "gone", "lose") and self.outstanding is not None:
            event = self.answer(kind, extra)
        elif kind == "put":
            self.revision += 1
            self.seen = max(self.seen, self.revision)
            event = KeyPut(self.revision)
        elif kind == "delete":
            self.revision += 1
            event = KeyDeleted(self.revision)
        else:
            event = Tick()
        was = self.state.leading
        won_with = event.lease if isinstance(event, Won) else None
        seen_before = self.seen - (1 if kind == "put" else 0)
        self.state, decision = step(self.state, event, self.now, self.policy)
        if decision.leading and not was:
            self.leading_lease = won_with
            assert won_with is not None, "leadership began without a win"
            assert all(decision.term > t for t in self.terms_led), "a term that does not grow"
            assert decision.term >= seen_before, "a term older than one already seen"
            self.terms_led.append(decision.term)
        self.check(decision, was)

    def bound(self) -> float:
        sent, ttl = self.renewals.get(self.leading_lease, (-math.inf, 0.0))
        return sent + ttl - self.policy.margin

    def check_between(self) -> None:
        if may_act(self.state, self.now, self.policy):
            assert self.now < self.bound(), "acting past last renewal + ttl - margin"

    def check(self, decision: Decision, was: bool) -> None:
        assert decision.wake_at > self.now, "a wake-up that is not in the future"
        assert decision.changed == (decision.leading != was)
        if decision.leading:
            assert self.now < self.bound(), "acting past last renewal + ttl - margin"
            assert decision.until is not None and decision.until <= self.bound()
            assert decision.term == self.terms_led[-1]
        if decision.do is not None:
            assert self.outstanding is None, "a second call while one is out"
            self.outstanding = (decision.do, self.state.lease, self.now)


class TestProperties:
    @settings(max_examples=examples(150), deadline=None)
    @given(MOVES)
    def test_a_leader_never_acts_past_its_last_renewal_plus_ttl_minus_margin(self, moves):
        """Whatever etcd answers and whenever: leading (in a decision or by may_act between
        steps) only before last successful renewal's send time + ttl - margin; one call at a
        time; every wake-up in the future."""
        run = Run(POLICY)
        for move in moves:
            run.feed(*move)

    @settings(max_examples=examples(150), deadline=None)
    @given(MOVES, st.integers(1, 4), st.floats(0.05, 0.9))
    def test_terms_only_grow(self, moves, ttl, margin_share):
        """Each new leadership has a term above every earlier one and not below any seen."""
        run = Run(Policy(ttl=ttl, margin=ttl * margin_share, retry=0.1, recheck=0.5))
        for move in moves:
            run.feed(*move)
        assert run.terms_led == sorted(set(run.terms_led))


SIM_POLICY = Policy(ttl=2, margin=0.2, retry=0.1, recheck=0.3)
DRIFT = 0.99 * SIM_POLICY.margin / SIM_POLICY.ttl
"""The clock rate difference the margin covers: a leader's 2 - 0.2 s on a clock running 9.9%
slow still end before the server's 2 s."""


class TestTwoControllers:
    @settings(max_examples=80, deadline=None)
    @given(st.tuples(st.floats(1 - DRIFT, 1 + DRIFT), st.floats(1 - DRIFT, 1 + DRIFT)),
           st.lists(st.floats(0.0, 0.5), min_size=1, max_size=40))
    def test_two_controllers_never_act_at_once(self, rates, delays):
        """Against a model of etcd (leases expiring TTL after the server got the keepalive),
        with clocks drifting within margin/ttl and calls delayed or lost: never two leaders
        acting at the same moment, and terms only grow."""
        sim = Simulation(SIM_POLICY, rates, delays)
        sim.run()
        assert not sim.overlaps, f"both acted at {sim.overlaps[:3]}"
        assert sim.terms == sorted(set(sim.terms))

    def test_the_model_finds_overlaps_when_clocks_drift_past_the_margin(self):
        """The simulation can fail: a leader whose clock runs 30% slow outlives its lease
        (the same calls with true clocks do not overlap)."""
        delays = [0.0, 0.6, 0.6, 0.0, 0.1]
        slow, true = Simulation(SIM_POLICY, (0.7, 1.0), delays), Simulation(SIM_POLICY, (1.0, 1.0), delays)
        slow.run()
        true.run()
        assert slow.overlaps and not true.overlaps
