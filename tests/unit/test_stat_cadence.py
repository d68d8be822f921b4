"""When the stats are sampled (issue 11): often while someone looks, rarely otherwise. The
agent's rule (agent/statcadence.py), the pusher woken by a ``stats_watch`` (agent/statpush.py),
and the controller's side: every read of the stat cache is a look (controller/statcache.py)
that renews the agents' lease at most once per half lease (controller/statwatch.py)."""

from __future__ import annotations

import pytest

from gaffer.agent.statcadence import IDLE_EVERY, next_push
from gaffer.agent.statpush import StatPusher
from gaffer.common.errors import GafferError
from gaffer.controller.statcache import StatCache
from gaffer.controller.statwatch import LEASE, StatWatch, renew
from gaffer.testing import poll_until
from gaffer.testing.clock import FakeClock
from test_stat_push import FakeLink, FakeSampler


class TestAgentCadence:
    @pytest.mark.parametrize("watched_until, due", [
        (float("-inf"), 100.0 + 5 * IDLE_EVERY),  # never watched: the idle cadence
        (99.0, 100.0 + 5 * IDLE_EVERY),  # the lease ran out
        (200.0, 105.0),  # watched: every interval
    ])
    def test_a_push_is_due_every_interval_only_while_watched(self, watched_until, due):
        """Last push at 100, interval 5, now 101: the next is due at 105 under a lease and
        IDLE_EVERY intervals later without one."""
        assert next_push(100.0, watched_until, 101.0, 5.0) == due

    def test_a_lease_after_a_quiet_spell_makes_a_push_due_at_once(self):
        """The last push a minute ago, a lease arrives: the push is already due."""
        assert next_push(100.0, 230.0, 160.0, 5.0) <= 160.0


class TestPusherWatch:
    async def test_a_watch_wakes_an_idle_pusher_and_it_pushes_every_interval(self):
        """An idle pusher (its idle cadence far beyond the test) pushes as soon as it is told
        someone looks, then once per interval while the lease runs."""
        sampler, link = FakeSampler(), FakeLink()
        push = StatPusher(lambda: [], link, 30.0, sampler)
        push.start()
        try:
            push.interval = 0.05  # the first wait (30 s x IDLE_EVERY) is under way: only a watch ends it
            await push.watch_command("stats_watch", {"seconds": 60})
            await poll_until(lambda: sampler.calls >= 3, what="pushes every interval under a lease")
        finally:
            await push.stop()

    async def test_a_bad_lease_is_refused_naming_the_field(self):
        """stats_watch without a finite number of seconds in range is one clear error."""
        push = StatPusher(lambda: [], FakeLink(), 5.0, FakeSampler())
        for args in ({}, {"seconds": "x"}, {"seconds": -1}, {"seconds": float("nan")}, {"seconds": 10**9}):
            with pytest.raises(GafferError, match="seconds"):
                await push.watch_command("stats_watch", args)


class TestControllerWatch:
    def test_the_lease_is_renewed_once_half_of_it_has_run_out(self):
        """No lease: renew now; more than half left: no; half or less: renew."""
        assert renew(0.0, float("-inf")) == LEASE
        assert renew(10.0, LEASE) is None
        assert renew(LEASE / 2, LEASE) == LEASE / 2 + LEASE

    def test_every_read_of_the_cache_is_a_look_and_looks_renew_the_agents_lease(self):
        """A listing, a chart (items), one sample (get, sample_for) each look; many looks send
        one stats_watch per half lease; none is sent before anyone looks."""
        clock, cache, sent = FakeClock(), StatCache(), []
        watch = StatWatch(clock.time, sent.append)
        cache.on_look(watch.looked)
        cache.push("a", {"rows": [], "removed": [], "reset": True}, clock.time())
        assert sent == [] and watch.remaining() == 0
        cache.items()
        assert sent == [LEASE] and watch.remaining() == LEASE
        for read in (cache.items, lambda: cache.get("web.1"), lambda: cache.sample_for("web.1", "a", 1), cache.look):
            clock.now += 1
            read()
        assert sent == [LEASE]
        clock.now += LEASE / 2
        cache.get("web.1")
        assert sent == [LEASE, LEASE]
