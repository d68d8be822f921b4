"""Assignments split into parts that each fit a message, and put back together exactly."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common import protocol
from gaffer.common.parts import PartsAssembler, merge_parts, split_assignment


def body(generation: int, templates: dict[str, int], spec_size: int = 50) -> dict:
    """An assignment of ``templates`` {name: ordinal count}, each spec about ``spec_size``,
    with controls that differ per template (so a mix-up between parts would show)."""
    return {
        "generation": generation,
        "templates": {name: {"cmd": "x" * spec_size, "name": name} for name in templates},
        "ordinals": {name: list(range(1, n + 1)) for name, n in templates.items()},
        "controls": {
            name: {"count": n, "allowance": 1 + index % 3, "restart": index}
            for index, (name, n) in enumerate(templates.items())
        },
    }


def encoded(part: dict) -> int:
    return len(msgpack.packb(part, use_bin_type=True))


assignments = st.builds(
    body,
    st.integers(1, 100),
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.integers(0, 3_000), max_size=30),
    st.integers(1, 2_000),
)


@settings(max_examples=80, deadline=None)
@given(assignments, st.integers(4_000, 60_000))
def test_parts_fit_the_budget_and_merge_back(assignment, budget):
    """Every part fits, validates as an assign message, and the parts merge to the original."""
    parts = split_assignment(assignment, budget)
    assert all(encoded(p) <= budget for p in parts)
    for part in parts:
        protocol.validate("assign", part)
    assert merge_parts(parts) == {**assignment, "ordinals": {n: sorted(o) for n, o in assignment["ordinals"].items()}}


def test_small_assignment_goes_whole():
    """One message when it fits: no ``part`` marker at all."""
    small = body(3, {"web": 2})
    assert split_assignment(small, 10_000) == [small]


def test_many_ordinals_of_one_template_spread_over_parts():
    """A template with more ordinals than one part holds is repeated, ordinals split, and
    every part carries its controls (the node's whole count, not the part's)."""
    big = body(1, {"web": 20_000})
    parts = split_assignment(big, 50_000)
    assert len(parts) > 1 and all("web" in p["templates"] for p in parts)
    assert sorted(o for p in parts for o in p["ordinals"]["web"]) == list(range(1, 20_001))
    assert all(p["controls"]["web"] == {"count": 20_000, "allowance": 1, "restart": 0} for p in parts)


@settings(max_examples=40, deadline=None)
@given(assignments, st.randoms(use_true_random=False))
def test_assembler_completes_once_in_any_order_with_duplicates(assignment, rnd):
    """Parts arriving shuffled and repeated give the whole assignment exactly once."""
    parts = split_assignment(assignment, 5_000)
    arrivals = parts + rnd.sample(parts, len(parts) // 2)
    rnd.shuffle(arrivals)
    assembler = PartsAssembler()
    wholes = [w for w in (assembler.feed(p) for p in arrivals) if w is not None]
    assert len(wholes) >= 1
    assert all(w == merge_parts(parts) for w in wholes)


def test_assembler_drops_older_generations_and_restarts_on_newer():
    """Parts of an older generation are ignored; a newer generation replaces a partial one."""
    old = split_assignment(body(1, {"a": 3_000, "b": 3_000}), 10_000)
    new = split_assignment(body(2, {"a": 3_000, "b": 3_000}), 10_000)
    assert len(old) > 1 and len(new) > 1
    assembler = PartsAssembler()
    assert assembler.feed(new[0]) is None
    assert all(assembler.feed(p) is None for p in old)
    wholes = [assembler.feed(p) for p in new[1:]]
    assert wholes[-1]["generation"] == 2 and wholes[:-1] == [None] * (len(new) - 2)


def test_a_template_too_big_for_any_part_is_refused():
    """split_assignment raises rather than send a part that cannot be delivered."""
    with pytest.raises(ValueError, match="does not fit"):
        split_assignment(body(1, {"web": 1}, spec_size=20_000), 10_000)
