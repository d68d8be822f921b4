"""Start levels of ``gaffer export`` (common/unitorder.py): what supervisord's priority= and the
programs' order come from."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from gaffer.common.dependson import Dependency, find_cycles
from gaffer.common.unitorder import start_levels

NAMES = [f"t{i}" for i in range(6)]


@st.composite
def acyclic_graphs(draw) -> dict[str, tuple[Dependency, ...]]:
    """Each template may depend only on templates before it in NAMES: never a cycle."""
    return {name: tuple(Dependency(dep) for dep in sorted(draw(st.sets(st.sampled_from(NAMES[:i]))) if i else ()))
            for i, name in enumerate(NAMES)}


@settings(max_examples=25)
@given(acyclic_graphs(), st.permutations(NAMES))
def test_a_template_starts_on_the_first_level_after_its_dependencies(graph, order):
    """Level 0 depends on nothing; any other is exactly one above its highest dependency,
    whatever order the file lists them in."""
    assert not find_cycles(graph)
    levels = start_levels(graph, order)
    for name, deps in graph.items():
        assert levels[name] == 1 + max((levels[d.name] for d in deps), default=-1)


def test_a_long_chain_and_a_cycle():
    """A chain of 3,000 (past Python's recursion limit) gets levels 0..2,999; a cycle (never
    accepted at load) ends on one last level rather than being lost."""
    chain = {f"c{i}": (Dependency(f"c{i - 1}"),) for i in range(1, 3_000)}
    assert start_levels(chain, [f"c{i}" for i in reversed(range(3_000))])["c2999"] == 2999
    cyclic = {"a": (), "x": (Dependency("y"),), "y": (Dependency("x"),)}
    assert start_levels(cyclic, ["x", "y", "a"]) == {"x": 1, "y": 1, "a": 0}
