"""``depends_on`` in exported units (``gaffer export``): what systemd and supervisord can keep.

gaffer holds a template until each dependency is satisfied (``dependson.py``), and never stops
or restarts it because a dependency stops or restarts later. systemd orders starts with
``After=`` (a unit starts once the start jobs of those listed are done) and pulls units in with
``Wants=`` (nothing propagates back) or ``Requires=`` (a failed start, or a stop by hand,
reaches the dependent). When a start job is done depends on the dependency's ``Type=``, so that
is where the condition goes::

    condition   the dependency's services                   the dependent's services
    started     Type=simple (done once spawned)             After= + Wants=
    ready       Type=notify with notify = true (READY=1)    After= + Wants=
    completed   Type=oneshot + RemainAfterExit=yes           After= + Requires=
                (done once it exited 0; run once per boot)  (not started if the job failed)

``Wants=`` for started and ready keeps gaffer's "a dependency's restart restarts nothing", at the
cost of starting the dependent even when a dependency failed to start; ``Requires=`` for
completed keeps a migration's failure from starting the app. What systemd cannot say (a health
check, gaffer's one-instance-is-enough, startsecs) is written as a comment in the unit.

supervisord has no dependencies at all: programs are listed, and given ``priority=``, in start
order (``start_levels``), so it spawns them in that order and signals them to stop in reverse;
it never waits for one to be started, ready or completed before the next, and the conf says so.

Pure: templates in, lines out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from gaffer.common.dependson import Dependency, Graph, reference_problems
from gaffer.common.errors import TemplateError
from gaffer.common.template import Template

PRIORITY_BASE = 100
"""supervisord ``priority`` of the first start level (lower starts first; its default is 999)."""


@dataclass(frozen=True)
class Order:
    """What ``depends_on`` makes of an app: the templates some other one needs ``completed``
    (exported as systemd oneshots), and each template's start level (0: depends on nothing)."""

    jobs: frozenset[str] = frozenset()
    levels: Mapping[str, int] = field(default_factory=dict)

    @property
    def ordered(self) -> bool:
        """Whether any template depends on another."""
        return any(self.levels.values())


def plan_order(templates: Sequence[Template], source: str | None = None) -> Order:
    """The app's ``Order``; a dependency on a template not in the file, or ``completed`` on one
    that always restarts, is a TemplateError naming the field (cycles were refused at load)."""
    graph = {t.name: t.depends_on for t in templates if t.depends_on}
    problems = reference_problems(graph, {t.name: t.restart for t in templates})
    if problems:
        raise TemplateError(problems, source=source)
    jobs = frozenset(d.name for deps in graph.values() for d in deps if d.condition == "completed")
    return Order(jobs, start_levels(graph, [t.name for t in templates]))


def start_levels(graph: Graph, names: Sequence[str]) -> dict[str, int]:
    """Each of ``names`` at the first level after all it depends on: 0 for those depending on
    nothing, 1 + the highest level of its dependencies for the others. One pass over the
    edges (Kahn's order), so a chain of 10,000 templates costs 10,000 steps; a cycle, refused
    at load, would put what is left on one last level."""
    known = set(names)
    needs = {name: [d.name for d in graph.get(name, ()) if d.name in known] for name in names}
    waiting = {name: len(deps) for name, deps in needs.items()}
    dependents: dict[str, list[str]] = {}
    for name, deps in needs.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(name)
    levels: dict[str, int] = {}
    ready = [name for name in names if not waiting[name]]
    while ready:
        name = ready.pop()
        levels[name] = 1 + max((levels[dep] for dep in needs[name]), default=-1)
        for dependent in dependents.get(name, ()):
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
    last = 1 + max(levels.values(), default=-1)
    return {name: levels.get(name, last) for name in names}


# ------------------------------------------------------------------------------ systemd


def service_type(template: Template, order: Order) -> list[str]:
    """The ``[Service]`` lines that say when the template's start job is done."""
    if template.name in order.jobs:
        return ["Type=oneshot", "RemainAfterExit=yes"]
    if template.notify:
        return ["Type=notify", "NotifyAccess=all"]
    return []


def systemd_depends(
    template: Template, services: Mapping[str, Sequence[str]], by_name: Mapping[str, Template], order: Order,
) -> list[str]:
    """The ``[Unit]`` lines of one of ``template``'s services: a comment saying what is kept
    and what is not, then ``After=``, ``Wants=``, ``Requires=`` (``services``: the unit names
    of each template's instances)."""
    if not template.depends_on:
        return []
    deps = template.depends_on
    lines = [
        "# depends_on: " + ", ".join(f"{d.name} ({d.condition})" for d in deps),
        "# After= starts this unit once every instance listed has started (Type=simple: spawned,",
        "# without gaffer's startsecs), is ready (Type=notify: READY=1) or has exited 0 (Type=oneshot);",
        "# gaffer waits for one instance (started, ready) or every one (completed).",
    ]
    wanted = [d for d in deps if d.condition != "completed"]
    required = [d for d in deps if d.condition == "completed"]
    if wanted:
        lines.append("# Wants= (started, ready): never stopped when a dependency stops or restarts, as in gaffer,")
        lines.append("# but started even if a dependency failed to start, where gaffer would wait.")
    if required:
        lines.append("# Requires= (completed): not started if the job failed; stopped if the job is stopped by hand.")
    lines += [f"# Not kept: {note}" for d in deps for note in _not_kept(d, services, by_name[d.name], order)]
    after = [unit for d in deps for unit in services.get(d.name, ())]
    if after:
        lines.append("After=" + " ".join(after))
    for key, group in (("Wants", wanted), ("Requires", required)):
        units = [unit for d in group for unit in services.get(d.name, ())]
        if units:
            lines.append(f"{key}=" + " ".join(units))
    return lines


def _not_kept(dep: Dependency, services: Mapping[str, Sequence[str]], target: Template, order: Order) -> list[str]:
    """What systemd cannot say of one dependency, each as a short sentence."""
    if not services.get(dep.name):
        return [f"{dep.name} has no instances here; gaffer would hold this template, systemd starts it."]
    if dep.condition == "completed":
        return []
    if target.name in order.jobs:
        return [f"{dep.condition} on {dep.name}: systemd waits until it exits (a oneshot: another template "
                "needs it completed)."]
    if dep.condition == "started" and target.notify:
        return [f"started on {dep.name}: systemd waits for its READY=1 (Type=notify)."]
    if dep.condition == "ready" and target.health is not None and not target.notify:
        return [f"{dep.name}'s health check: systemd has none, so this unit waits only until {dep.name} has started."]
    return []


# ------------------------------------------------------------------------------ supervisord


def supervisord_note(order: Order) -> str:
    """The comment at the top of the conf of an app whose templates depend on each other."""
    levels: dict[int, list[str]] = {}
    for name, level in order.levels.items():
        levels.setdefault(level, []).append(name)
    shown = " < ".join(", ".join(sorted(levels[level])) for level in sorted(levels))
    return (
        f"; depends_on: programs are listed and given priority= in start order ({shown}).\n"
        "; supervisord spawns them in that order and signals them to stop in reverse, but cannot\n"
        "; wait for a program to be started, ready or completed before starting the next.\n"
    )


def level(template: Template, order: Order) -> int:
    """The template's start level: programs are listed by it (stable: file order within one)."""
    return order.levels.get(template.name, 0)


def priority(template: Template, order: Order) -> int:
    return PRIORITY_BASE + level(template, order)
