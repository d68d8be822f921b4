"""The pure parts of scheduled backups: names that sort in time, what to prune, when next."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.controller.backup import NAME_RE, backup_name, next_due, to_prune
from budget import examples

TIMES = st.floats(0, 4e9, allow_nan=False)


class TestNames:
    def test_a_name_is_the_utc_time_to_the_millisecond(self):
        """gaffer-YYYYmmddTHHMMSS.mmmZ.db, in UTC."""
        assert backup_name(1_700_000_000.25) == "gaffer-20231114T221320.250Z.db"
        assert NAME_RE.match(backup_name(0.0))

    @settings(max_examples=examples(200), deadline=None)
    @given(TIMES, TIMES)
    def test_names_sort_in_time_order(self, a, b):
        """A later backup never sorts before an earlier one (pruning relies on it)."""
        early, late = sorted((a, b))
        assert backup_name(early) <= backup_name(late)


class TestPrune:
    def test_the_oldest_beyond_keep_go_and_nothing_else(self):
        """Only backup names count; the newest `keep` stay; foreign files are never touched."""
        names = [backup_name(t) for t in (30.0, 10.0, 20.0, 40.0)] + ["notes.txt", ".gaffer-x.db.tmp"]
        assert to_prune(names, 2) == [backup_name(10.0), backup_name(20.0)]
        assert to_prune(names, 9) == []


class TestNextDue:
    def test_due_now_without_a_backup_then_one_period_after_the_last(self):
        """No backup yet: now. Else the last plus the period, never in the past."""
        assert next_due(None, 100.0, 60.0) == 100.0
        assert next_due(90.0, 100.0, 60.0) == 150.0
        assert next_due(10.0, 100.0, 60.0) == 100.0

    @settings(max_examples=examples(300), deadline=None)
    @given(st.one_of(st.none(), TIMES), TIMES, st.floats(0.001, 1e6))
    def test_never_in_the_past_and_never_more_than_a_period_ahead(self, last, now, every):
        """Whatever the clock did (even a last backup in the future), now <= due <= now + every."""
        due = next_due(last, now, every)
        assert now <= due <= now + every
