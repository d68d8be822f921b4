"""``depends_on``: parsing one template's list, the graph checks (unknown names, cycles named
by their path) and the order of a full stop (``common/dependson.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.dependson import Dependency, cycle_problems, find_cycles, graph_problems, stop_waves
from gaffer.common.errors import TemplateError
from gaffer.common.template import parse_template, parse_templates
from budget import examples


def problems_of(depends_on) -> str:
    with pytest.raises(TemplateError) as caught:
        parse_template({"cmd": "x", "depends_on": depends_on}, name="web")
    return caught.value.message


class TestParse:
    def test_bare_names_wait_for_ready_and_tables_give_a_condition(self):
        """A bare name means condition ready; a table names its condition."""
        template = parse_template({"cmd": "x", "depends_on": [
            "db", {"name": "migrate", "condition": "completed"}, {"name": "cache", "condition": "started"},
        ]}, name="web")
        assert template.depends_on == (
            Dependency("db", "ready"), Dependency("migrate", "completed"), Dependency("cache", "started"),
        )

    def test_the_plain_form_parses_back_equal_and_keeps_the_spec_hash(self):
        """to_dict round-trips depends_on; adding it changes no launch spec (nothing restarts),
        and a template without it has no depends_on key (stored specs stay as they were)."""
        plain = {"cmd": "x", "depends_on": ["db", {"name": "m", "condition": "completed"}]}
        template = parse_template(plain, name="web")
        assert template.to_dict()["depends_on"] == plain["depends_on"]
        assert parse_template(template.to_dict(), name="web") == template
        bare = parse_template({"cmd": "x"}, name="web")
        assert template.spec_hash() == bare.spec_hash()
        assert "depends_on" not in bare.to_dict()

    @pytest.mark.parametrize("value, message", [
        (5, "web.depends_on: must be a list of template names"),
        (["web"], "web.depends_on[0]: a template cannot depend on itself"),
        (["db", "db"], "web.depends_on[1]: 'db' is listed more than once"),
        ([{"name": "db", "condition": "healthy"}], "web.depends_on[0].condition: must be one of started, ready, completed"),
        ([{"condition": "ready"}], "web.depends_on[0].name: is required"),
        ([{"name": "db", "when": 1}], "web.depends_on[0].when: unknown field"),
        (["no spaces"], "web.depends_on[0]: must be a template name"),
        ([3], "web.depends_on[0]: must be a template name"),
        (["d"] * 300, "web.depends_on: has 300 items: at most 256"),
    ])
    def test_bad_entries_are_named(self, value, message):
        """Each bad depends_on is refused with one line naming the entry and the problem."""
        assert message in problems_of(value)

    def test_a_cycle_in_one_file_is_refused_naming_it(self):
        """parse_templates (a file) refuses web -> api -> web with the cycle's path."""
        with pytest.raises(TemplateError) as caught:
            parse_templates([
                ("web", {"cmd": "x", "depends_on": ["api"]}), ("api", {"cmd": "x", "depends_on": ["web"]}),
                ("db", {"cmd": "x"}),
            ])
        assert caught.value.message == "api.depends_on: depends_on cycle: api -> web -> api"

    def test_a_file_may_depend_on_templates_applied_before(self):
        """A name outside the file is not refused by the file's parse (the controller checks it)."""
        [web] = parse_templates([("web", {"cmd": "x", "depends_on": ["db"]})])
        assert web.depends_on == (Dependency("db"),)


class TestGraph:
    def test_unknown_names_and_completed_on_a_restarting_template(self):
        """graph_problems names a missing template and a completed dependency that cannot complete."""
        graph = {"web": (Dependency("db"), Dependency("migrate", "completed"))}
        found = [str(p) for p in graph_problems(graph, {"web": "always", "migrate": "always"})]
        assert found == [
            "web.depends_on: 'db' is not a template (define it in the same apply, or apply it first)",
            "web.depends_on: 'migrate' never completes (restart = \"always\"): use condition started or "
            "ready, or give it restart = \"never\"",
        ]

    def test_a_long_chain_with_a_cycle_at_its_end_is_found_without_recursion(self):
        """5,000 templates in a chain closed into a loop: found, no RecursionError."""
        count = 5_000
        graph = {f"t{i:05}": (Dependency(f"t{(i + 1) % count:05}"),) for i in range(count)}
        [cycle] = find_cycles(graph)
        assert len(cycle) == count + 1 and cycle[0] == cycle[-1] == "t00000"

    def test_stop_waves_put_dependents_first(self):
        """web and worker (on db and cache) stop first, then migrate, then db and cache."""
        graph = {
            "web": (Dependency("db"), Dependency("migrate", "completed")),
            "worker": (Dependency("cache"),),
            "migrate": (Dependency("db"),),
        }
        assert stop_waves(graph, ["db", "cache", "migrate", "web", "worker"]) == [
            ["web", "worker"], ["cache", "migrate"], ["db"],
        ]


NAMES = [f"t{i}" for i in range(8)]
graphs = st.dictionaries(
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(NAMES), max_size=4, unique=True),
    max_size=len(NAMES),
).map(lambda raw: {name: tuple(Dependency(d) for d in deps if d != name) for name, deps in raw.items()})


def acyclic(graph) -> bool:
    """The reference: a graph is acyclic when repeatedly removing nodes with no dependencies
    left empties it (Kahn)."""
    left = {name: {d.name for d in graph.get(name, ())} for name in NAMES}
    while left:
        free = [name for name, deps in left.items() if not deps & set(left)]
        if not free:
            return False
        for name in free:
            del left[name]
    return True


class TestProperties:
    @settings(max_examples=examples(300), deadline=None)
    @given(graphs)
    def test_a_graph_is_accepted_exactly_when_it_is_acyclic(self, graph):
        """No cycle problem exactly when the graph is acyclic; each reported cycle is a real
        path of edges that ends where it began."""
        cycles = find_cycles(graph)
        assert (not cycle_problems(graph)) == acyclic(graph)
        for cycle in cycles:
            assert cycle[0] == cycle[-1]
            for here, there in zip(cycle, cycle[1:]):
                assert there in {d.name for d in graph[here]}

    @settings(max_examples=examples(300), deadline=None)
    @given(graphs)
    def test_stop_waves_stop_every_dependent_before_what_it_depends_on(self, graph):
        """For an acyclic graph, every template is in one wave, and a dependent's wave comes
        before its dependency's (reversed: a start order that respects every edge)."""
        if not acyclic(graph):
            return
        waves = stop_waves(graph, NAMES)
        where = {name: index for index, wave in enumerate(waves) for name in wave}
        assert sorted(where) == sorted(NAMES)
        for name, deps in graph.items():
            for dep in deps:
                assert where[name] < where[dep.name]
