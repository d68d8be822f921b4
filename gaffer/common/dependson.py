"""A template's ``depends_on``: what must be up before it starts, and the order of a stop.

``depends_on = ["db", {name = "migrate", condition = "completed"}]`` names other templates; a
bare name means ``condition = "ready"``. The three conditions (what ``startgate.py`` on the
controller checks, cluster-wide):

    started     at least one instance of the dependency is up (or has completed)
    ready       at least one instance of it is ready (its check passes, or it has no check)
    completed   every instance of it (a job, ``restart = "never"``) exited with status 0

Parsing one template's list is ``parse_depends_on`` (problems named ``depends_on[1].condition``
beside the template's others). A dependency graph is checked as a whole by ``graph_problems``:
a name that is in no template of the desired state, and a cycle, named by its path
(``depends_on cycle: web -> api -> web``). ``stop_waves`` gives the order of a full stop:
dependents first, what they depend on last.

Pure: no sockets, no processes, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from gaffer.common.describe import describe as _kind
from gaffer.common.errors import Problem
from gaffer.common.fieldcheck import Checker
from gaffer.common.limits import NAME_RE, NAME_RULE

CONDITIONS = ("started", "ready", "completed")
DEFAULT_CONDITION = "ready"
MAX_DEPENDENCIES = 256
"""Dependencies of one template: far more than any real one has, and a bound on the graph."""


@dataclass(frozen=True)
class Dependency:
    """One entry of ``depends_on``: the template ``name``, satisfied once ``condition`` holds."""

    name: str
    condition: str = DEFAULT_CONDITION


Graph = Mapping[str, Iterable[Dependency]]
"""{template: its dependencies}: templates without any may be left out."""


def parse_depends_on(chk: Checker, value: Any, own: Any) -> tuple[Dependency, ...] | None:
    """``value`` as dependencies (None after recording problems); ``own`` is the template's
    name (a template cannot depend on itself)."""
    if not isinstance(value, (list, tuple)):
        chk.fail("depends_on", f"must be a list of template names or {{name, condition}} tables, got {_kind(value)}")
        return None
    if len(value) > MAX_DEPENDENCIES:
        chk.fail("depends_on", f"has {len(value)} items: at most {MAX_DEPENDENCIES}")
        return None
    found: list[Dependency] = []
    seen: set[str] = set()
    ok = True
    for i, item in enumerate(value):
        dependency = _parse_one(chk, f"depends_on[{i}]", item)
        if dependency is None:
            ok = False
        elif dependency.name == own:
            chk.fail(f"depends_on[{i}]", f"a template cannot depend on itself ({own!r})")
            ok = False
        elif dependency.name in seen:
            chk.fail(f"depends_on[{i}]", f"{dependency.name!r} is listed more than once")
            ok = False
        else:
            seen.add(dependency.name)
            found.append(dependency)
    return tuple(found) if ok else None


def _parse_one(chk: Checker, where: str, item: Any) -> Dependency | None:
    condition = DEFAULT_CONDITION
    if isinstance(item, Mapping):
        chk.unknown_keys(item, ("name", "condition"), prefix=f"{where}.")
        if "condition" in item:
            condition = item["condition"]
            if condition not in CONDITIONS:
                chk.fail(f"{where}.condition", f"must be one of {', '.join(CONDITIONS)}, got {_kind(condition)}")
                return None
        if "name" not in item:
            chk.fail(f"{where}.name", "is required")
            return None
        item = item["name"]
        where = f"{where}.name"
    if not isinstance(item, str) or not NAME_RE.match(item):
        chk.fail(where, f"must be a template name ({NAME_RULE}), got {_kind(item)}")
        return None
    return Dependency(item, condition)


def plain_depends_on(dependencies: Iterable[Dependency]) -> list[Any]:
    """The plain form: a bare name for ``ready`` (the default), else a {name, condition} table."""
    return [
        d.name if d.condition == DEFAULT_CONDITION else {"name": d.name, "condition": d.condition}
        for d in dependencies
    ]


def graph_problems(graph: Graph, known: Mapping[str, str] | None = None) -> list[Problem]:
    """``reference_problems`` (with ``known``) and ``cycle_problems`` of ``graph``."""
    found = reference_problems(graph, known) if known is not None else []
    return found + cycle_problems(graph)


def reference_problems(graph: Graph, known: Mapping[str, str]) -> list[Problem]:
    """Every dependency on a template not in ``known`` ({template: its restart policy}: every
    template of the desired state), and every ``completed`` one on a template that always
    restarts (it never completes), on the ``depends_on`` of the template that names it."""
    problems: list[Problem] = []
    for template in sorted(graph):
        for dependency in graph[template]:
            restart = known.get(dependency.name)
            if restart is None:
                problems.append(Problem(
                    template, "depends_on",
                    f"{dependency.name!r} is not a template (define it in the same apply, or apply it first)",
                ))
            elif dependency.condition == "completed" and restart == "always":
                problems.append(Problem(
                    template, "depends_on",
                    f"{dependency.name!r} never completes (restart = \"always\"): use condition "
                    "started or ready, or give it restart = \"never\"",
                ))
    return problems


def cycle_problems(graph: Graph) -> list[Problem]:
    """Each cycle once, on the ``depends_on`` of its first template: ``depends_on cycle: api ->
    web -> api``."""
    return [
        Problem(cycle[0], "depends_on", "depends_on cycle: " + " -> ".join(cycle))
        for cycle in find_cycles(graph)
    ]


def find_cycles(graph: Graph) -> list[list[str]]:
    """One path per cycle found (``[web, api, web]``), each starting at its smallest name;
    empty when the graph is acyclic. Iterative depth-first search: a chain of 10,000
    templates must not hit Python's recursion limit."""
    edges = {name: [d.name for d in deps] for name, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for root in sorted(edges):
        if root in state:
            continue
        path = [root]
        state[root] = 1
        stack = [iter(edges.get(root, ()))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(step) == 1:
                loop = path[path.index(step):]
                first = loop.index(min(loop))
                loop = loop[first:] + loop[:first]
                if tuple(loop) not in seen:
                    seen.add(tuple(loop))
                    cycles.append([*loop, loop[0]])
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(edges.get(step, ())))
    return cycles


def stop_waves(graph: Graph, names: Iterable[str]) -> list[list[str]]:
    """``names`` in the order of a full stop: waves of templates, each stopped (and waited for)
    before the next; a template comes in an earlier wave than everything it depends on.
    Dependencies outside ``names`` are ignored; a cycle (never accepted, but a store written
    by hand may hold one) puts the templates left in one last wave."""
    left = set(names)
    edges = {name: {d.name for d in graph.get(name, ())} & left for name in left}
    waves: list[list[str]] = []
    while left:
        needed = {dep for name in left for dep in edges[name]}
        wave = sorted(name for name in left if name not in needed)
        if not wave:
            wave = sorted(left)
        waves.append(wave)
        left.difference_update(wave)
        for name in left:
            edges[name].difference_update(wave)
    return waves
