"""The example budget of the property tests (tests/budget.py): quick by default, full on demand."""

from __future__ import annotations

from budget import QUICK, examples


def test_a_large_declared_count_runs_hypothesis_default_by_default():
    """A property declared with 400 examples runs 100 unless asked for more."""
    assert examples(400, {}) == QUICK == 100
    assert examples(400, {"GAFFER_TEST_THOROUGH": "0"}) == 100


def test_a_small_declared_count_is_kept():
    """A count at or below the quick budget is never raised."""
    assert examples(40, {}) == 40
    assert examples(40, {"GAFFER_TEST_THOROUGH": "1"}) == 40


def test_thorough_runs_the_full_declared_count():
    """GAFFER_TEST_THOROUGH=1 gives each property the count it declares."""
    assert examples(400, {"GAFFER_TEST_THOROUGH": "1"}) == 400
    assert examples(500, {"GAFFER_TEST_THOROUGH": "yes"}) == 500
