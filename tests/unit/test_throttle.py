"""Slowing repeated authentication failures per peer: a pure policy, time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.throttle import (
    ALLOW, Throttle, ThrottlePolicy, Verdict, after_failure, delay, peer_key, verdict,
)
from budget import examples

POLICY = ThrottlePolicy(free=3, base=1.0, cap=8.0, forget_after=100.0, max_peers=50)


class TestDelay:
    def test_free_failures_then_doubling_to_the_cap(self):
        """The first `free` failures cost nothing; then 1, 2, 4, 8, 8... seconds."""
        assert [delay(POLICY, n) for n in range(1, 10)] == [0, 0, 0, 1, 2, 4, 8, 8, 8]

    def test_a_huge_count_does_not_overflow(self):
        """Any number of failures gives at most the cap (no float overflow)."""
        assert delay(POLICY, 10**9) == POLICY.cap


class TestThrottle:
    def test_a_peer_is_refused_after_a_few_failures_with_a_retry_after(self):
        """After `free` failures the next failure refuses the peer for the delay, with
        retry_after counting down, and lets it try once the delay has passed."""
        throttle = Throttle(POLICY)
        for step in range(3):
            assert throttle.failed("10.0.0.1", 10.0 + step) == ALLOW
        assert throttle.failed("10.0.0.1", 13.0) == Verdict(False, 1.0)
        assert throttle.check("10.0.0.1", 13.5) == Verdict(False, 0.5)
        assert throttle.check("10.0.0.1", 13.5).retry_after_header == "1"
        assert throttle.check("10.0.0.1", 14.0) == ALLOW
        assert throttle.failed("10.0.0.1", 14.0) == Verdict(False, 2.0)
        assert throttle.refused == 2

    def test_success_forgets_only_that_peer(self):
        """A success clears its own peer's failures, never another's."""
        throttle = Throttle(POLICY)
        for step in range(4):
            throttle.failed("10.0.0.1", float(step))
            throttle.failed("10.0.0.2", float(step))
        throttle.succeeded("10.0.0.2")
        assert throttle.check("10.0.0.2", 3.5) == ALLOW
        assert not throttle.check("10.0.0.1", 3.5).allowed

    def test_a_quiet_peer_starts_again_from_zero(self):
        """After forget_after seconds without a failure, a peer's failures lapse."""
        throttle = Throttle(POLICY)
        for step in range(6):
            throttle.failed("p", float(step))
        assert throttle.failed("p", 6.0 + POLICY.forget_after) == ALLOW

    def test_memory_is_bounded(self):
        """However many addresses fail, at most max_peers records are kept."""
        throttle = Throttle(POLICY)
        for i in range(1_000):
            throttle.failed(f"10.0.{i // 256}.{i % 256}", float(i))
        assert len(throttle) == POLICY.max_peers

    @pytest.mark.parametrize("address, key", [
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unix:/run/x", "unix:/run/x"),
        (None, "?"),
        ("", "?"),
    ])
    def test_peer_keys(self, address, key):
        """Peers are keyed by IP; IPv6 by its /64; anything unparsable as given."""
        assert peer_key(address) == key


@settings(max_examples=examples(200))
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans(), st.floats(0, 20)), max_size=60))
def test_properties(steps):
    """Over any sequence: a refusal never lasts beyond the cap, retry_after is within
    (0, cap], a success of one peer never changes another's verdict, and a peer with at
    most `free` failures in a row is never refused."""
    throttle = Throttle(POLICY)
    streak: dict[str, int] = {}
    now = 0.0
    for peer, ok, dt in steps:
        now += dt
        others = {p: throttle.check(p, now) for p in "abc" if p != peer}
        if ok:
            throttle.succeeded(peer)
            streak[peer] = 0
            for p, before in others.items():
                assert throttle.check(p, now) == before
            continue
        result = throttle.failed(peer, now)
        streak[peer] = streak.get(peer, 0) + 1
        if not result.allowed:
            assert 0 < result.retry_after <= POLICY.cap
        assert throttle.check(peer, now + POLICY.cap) == ALLOW
        if streak[peer] <= POLICY.free:
            assert result.allowed


@given(st.integers(0, 40), st.integers(0, 10**6).map(float), st.integers(0, 4_000).map(lambda q: q / 4))
def test_a_refusal_ends_by_the_cap_and_matches_the_delay(failures, start, later):
    """After n failures at one moment, the peer is refused exactly while less than
    delay(n) seconds have passed, so never longer than the cap."""
    record = None
    for _ in range(failures):
        record = after_failure(POLICY, record, start)
    refused = not verdict(POLICY, record, start + later).allowed
    assert refused == (later < delay(POLICY, failures))
