"""The Lease: the one place that says whether this node may spawn now."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent.lease import Lease, holding


class TestLease:
    def test_a_new_lease_never_holds(self) -> None:
        """Without a controller (gaffer run, tests) nothing ever holds."""
        assert not Lease().holding(1e12)

    def test_held_until_released_and_the_listeners_hear_it(self) -> None:
        """hold() holds whatever the time; release() ends it and tells each listener."""
        freed: list[int] = []
        lease = Lease(held=True)
        lease.on_free(lambda: freed.append(1))
        lease.renew(100.0)
        assert lease.holding(0.0)
        lease.release()
        assert not lease.holding(0.0) and freed == [1]

    def test_settling_holds_and_its_end_frees(self) -> None:
        """settle(True) holds even when released; settle(False) frees and tells the listeners."""
        freed: list[int] = []
        lease = Lease()
        lease.on_free(lambda: freed.append(1))
        lease.settle(True)
        assert lease.holding(0.0) and freed == []
        lease.settle(False)
        assert not lease.holding(0.0) and freed == [1]

    def test_past_the_lease_it_holds(self) -> None:
        """renew(until): up to ``until`` spawning goes on, a moment later it holds."""
        lease = Lease()
        lease.renew(10.0)
        assert not lease.holding(10.0) and lease.holding(10.001)

    @given(st.booleans(), st.booleans(), st.none() | st.floats(0, 100), st.floats(0, 100))
    def test_the_rule(self, held: bool, settling: bool, until: float | None, now: float) -> None:
        """It holds exactly when held, settling, or past a lease."""
        expected = held or settling or (until is not None and now > until)
        assert holding(held, settling, until, now) is expected
