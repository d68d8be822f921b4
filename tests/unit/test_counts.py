"""A controller's count limits: what a change may ask for, and what is placed when over."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.errors import InvalidRequest, LimitExceeded
from gaffer.controller.counts import parse_scale
from gaffer.controller.counts import CountLimits, Limited, check_counts, effective_counts
from budget import examples

LIMITS = CountLimits(per_template=10, total=25)


class TestCheckCounts:
    def test_a_count_past_the_per_template_limit_is_refused(self) -> None:
        """A new or grown count over per_template names the template and the limit."""
        with pytest.raises(LimitExceeded, match=r"^web: 11 instances is over the limit of 10 per template \(--max-per-template\)$"):
            check_counts(LIMITS, {"web": (2, 11)}, 2)

    def test_a_total_past_the_limit_is_refused(self) -> None:
        """The sum over every template may not pass total."""
        with pytest.raises(LimitExceeded, match=r"would want 26 instances in all, over the limit of 25 \(--max-instances\)"):
            check_counts(LIMITS, {"a": (0, 10), "b": (5, 6)}, 15)

    def test_within_the_limits_passes(self) -> None:
        """Counts at the limits are fine."""
        check_counts(LIMITS, {"a": (0, 10), "b": (5, 10)}, 10)

    def test_shrinking_is_always_allowed(self) -> None:
        """A change that grows nothing passes even when the state is over a limit."""
        check_counts(LIMITS, {"big": (10**18, 50)}, 10**18)
        check_counts(LIMITS, {"big": (50, 50)}, 100)

    def test_limit_exceeded_is_an_invalid_request_with_a_stable_code(self) -> None:
        """Clients match on the code, never on the text."""
        assert issubclass(LimitExceeded, InvalidRequest) and LimitExceeded.code == "limit_exceeded"


class TestEffectiveCounts:
    def test_within_limits_nothing_is_limited(self) -> None:
        """The counts are placed as they are."""
        assert effective_counts(LIMITS, {"a": 10, "b": 9}) == ({"a": 10, "b": 9}, {})

    def test_a_template_over_its_limit_is_cut_to_it(self) -> None:
        """A stored 2**63-1 places per_template, with a note saying why."""
        placing, limited = effective_counts(LIMITS, {"s": 2**63 - 1, "t": 1})
        assert placing == {"s": 10, "t": 1}
        assert limited == {"s": Limited(2**63 - 1, 10, "over the limit of 10 per template (--max-per-template)")}

    def test_the_total_is_shared_in_name_order(self) -> None:
        """Past the total, templates are filled by name until it is used up."""
        placing, limited = effective_counts(LIMITS, {"a": 10, "b": 10, "c": 10})
        assert placing == {"a": 10, "b": 10, "c": 5}
        assert limited["c"].reason == "over the limit of 25 instances in all (--max-instances)"
        assert set(limited) == {"c"}

    @settings(max_examples=examples(300), deadline=None)
    @given(
        st.integers(1, 50), st.integers(1, 200),
        st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 2**63 - 1), max_size=8),
    )
    def test_placing_never_exceeds_a_limit_or_the_wish(self, per: int, total: int, counts: dict) -> None:
        """Each placed count is <= wanted and per_template; the sum is <= total; a note per cut."""
        placing, limited = effective_counts(CountLimits(per, total), counts)
        assert sum(placing.values()) <= total
        for name, wanted in counts.items():
            assert placing[name] <= min(wanted, per)
            assert (name in limited) == (placing[name] < wanted)


class TestParseScale:
    @pytest.mark.parametrize(("how", "message"), [
        ("9223372036854775807", "bad count '9223372036854775807': at most 1,000,000 instances"),
        ("+" + "9" * 5000, "bad count of 5000 digits: at most 1,000,000 instances"),
        (2**70, "count would be 1,180,591,620,717,411,303,424: at most 1,000,000 instances"),
        ("+999999", "count would be 1,000,001: at most 1,000,000 instances"),
        ("x" * 100, "bad count of 100 characters: use N, +N or -N"),
    ])
    def test_huge_counts_are_refused_in_one_short_line(self, how, message: str) -> None:
        """Counts past the format limit never reach the store, and the message stays short."""
        with pytest.raises(InvalidRequest) as info:
            parse_scale(how, 2)
        assert info.value.message == message
