"""Start order across the cluster: which templates must wait for their ``depends_on``.

``gate(depends, progress) -> {template: reason}`` is the decision, pure: a template is held
(placed nowhere, as if it wanted 0 instances) while one of its dependencies is not yet
satisfied on some node, unless one of its own instances is live already. ``Cluster`` asks
``StartGate`` on every placement pass and when nodes report instances while something is
held; a held template shows as pending in ``templates`` and ``ps``, with the reason
(``waiting for db to be ready``).

What each condition needs, counted over every node (``Progress``)::

    started     one instance up (running, ready or unhealthy), or one that completed
    ready       one instance ready: as a Kubernetes Service needs one ready endpoint, and as
                docker compose's service_healthy waits for the one container it started
    completed   as many instances exited with status 0 as the dependency wants (at least 1)

Why only the first start is gated: a template that runs is never stopped because its
dependency restarts or turns unhealthy (docker compose and systemd's ``After=`` order starts,
they do not tie lifetimes), so a database's restart does not take every web worker down with
it, nor runs a migration again. Once none of a template's instances is live or exited (all
failed, or it was stopped and started again), it waits again. A dependency scaled to 0 or paused satisfies nothing.

``graph_check`` guards the desired state: an apply may not leave a dependency on a template
that does not exist (in the apply or already applied), nor a cycle; a delete may not remove
a template that one left behind depends on (delete both in one call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from gaffer.common.dependson import Dependency, cycle_problems, reference_problems
from gaffer.common.errors import Problem, TemplateError
from gaffer.common.model import UP_STATES, InstanceRow, instance_id
from gaffer.common.template import Template
from gaffer.controller.registry import Node
from gaffer.controller.scheduler import Pending
from gaffer.controller.store import StoredTemplate

LIVE_STATES = frozenset({"starting", "backoff", "exited", *UP_STATES})
"""A template with an instance in one of these has started (or, ``exited``, ran to its end):
it is no longer gated. Counting ``exited`` keeps a job that ran from being run again when what
it depended on later goes down and comes back."""


@dataclass(frozen=True)
class Progress:
    """What one template has across the cluster, as its instances report."""

    wanted: int = 0
    """Instances it wants (0 when paused or scaled to 0)."""
    live: int = 0
    up: int = 0
    ready: int = 0
    completed: int = 0


def satisfied(dependency: Dependency, progress: Progress) -> bool:
    """Whether ``dependency`` holds given what its template has (see the module docstring)."""
    if progress.wanted == 0:
        return False
    if dependency.condition == "started":
        return progress.up > 0 or progress.completed > 0
    if dependency.condition == "ready":
        return progress.ready > 0
    return progress.completed >= progress.wanted


def gate(depends: Mapping[str, Sequence[Dependency]], progress: Mapping[str, Progress]) -> dict[str, str]:
    """The templates that must wait, each with why: those with an unsatisfied dependency and
    no live instance of their own. ``progress`` lacks a template that does not exist."""
    held: dict[str, str] = {}
    empty = Progress()
    for name, dependencies in depends.items():
        if progress.get(name, empty).live > 0:
            continue
        waiting = [d for d in dependencies if not satisfied(d, progress.get(d.name, empty))]
        if waiting:
            held[name] = "waiting for " + ", ".join(_phrase(d) for d in waiting)
    return held


def _phrase(dependency: Dependency) -> str:
    if dependency.condition == "completed":
        return f"{dependency.name} to complete"
    return f"{dependency.name} to be {dependency.condition}"


def progress_of(
    names: Iterable[str],
    wanted: Mapping[str, int],
    by_node: Mapping[str, Mapping[str, Sequence[int]]],
    rows: Mapping[str, Mapping[str, InstanceRow]],
) -> dict[str, Progress]:
    """``Progress`` of each of ``names`` from the placement (``by_node``: {node: {template:
    ordinals}}) and each node's reported rows (``rows``: {node: {instance id: row}})."""
    counts = {name: [0, 0, 0, 0] for name in names}
    for node, held in by_node.items():
        reported = rows.get(node)
        if not reported:
            continue
        for name, tally in counts.items():
            for ordinal in held.get(name, ()):
                row = reported.get(instance_id(name, ordinal))
                if row is None:
                    continue
                state = row["state"]
                tally[0] += state in LIVE_STATES
                tally[1] += state in UP_STATES
                tally[2] += bool(row["ready"])
                tally[3] += state == "exited" and row.get("exit_code") == 0
    return {
        name: Progress(wanted.get(name, 0), live, up, ready, completed)
        for name, (live, up, ready, completed) in counts.items()
    }


class StartGate:
    """The templates held now (``held``: {name: reason}), judged again on demand; keeps the
    dependencies of every template that has some (``note`` each applied one)."""

    def __init__(self, templates: Mapping[str, StoredTemplate]) -> None:
        self.held: dict[str, str] = {}
        self.depends: dict[str, tuple[Dependency, ...]] = {
            name: s.template.depends_on for name, s in templates.items() if s.template.depends_on
        }

    def note(self, name: str, template: Template) -> None:
        """``name`` was applied as ``template`` (a deleted one is dropped at the next judge)."""
        if template.depends_on:
            self.depends[name] = template.depends_on
        else:
            self.depends.pop(name, None)

    def judge(
        self,
        templates: Mapping[str, StoredTemplate],
        wanted: Callable[[str], int],
        by_node: Mapping[str, Mapping[str, Sequence[int]]],
        nodes: Mapping[str, Node],
    ) -> bool:
        """Judge every template with dependencies again (``wanted(name)``: how many instances
        an active one wants; a paused one wants none); whether ``held`` changed. Costs
        nothing when no template has ``depends_on``."""
        depends = self.depends
        if not depends and not self.held:
            return False
        for name in [name for name in depends if name not in templates]:
            del depends[name]
        names = set(depends) | {d.name for deps in depends.values() for d in deps}
        counts = {
            name: 0 if name not in templates or templates[name].paused else wanted(name) for name in names
        }
        rows = {name: node.instances for name, node in nodes.items()}
        held = gate(depends, progress_of(names, counts, by_node, rows))
        changed = held != self.held
        self.held = held
        return changed

    def placing(self, wanted: Callable[[str], int]) -> Callable[[str], int]:
        """``wanted``, but none of a held template (``wanted`` itself when none is held: the
        desired state asks it of each of 100,000 templates per pass)."""
        held = self.held
        if not held:
            return wanted
        return lambda name: 0 if name in held else wanted(name)

    def pending(
        self, placed: Mapping[str, Pending], templates: Mapping[str, StoredTemplate], wanted: Callable[[str], int]
    ) -> dict[str, dict[str, Any]]:
        """The plan's ``pending`` as views ({count, reason}), and each held active template."""
        found = {name: {"count": p.count, "reason": p.reason} for name, p in placed.items()}
        for name, reason in self.held.items():
            stored = templates.get(name)
            if stored is not None and not stored.paused:
                found[name] = {"count": wanted(name), "reason": reason}
        return found


def graph_check(
    stored: Mapping[str, StoredTemplate], applied: Sequence[Template] = (), deleted: Iterable[str] = ()
) -> None:
    """TemplateError naming every problem that applying ``applied`` and deleting ``deleted``
    would bring into the desired state (``stored``): a dependency on a template that is not
    there, a ``completed`` one on a template that always restarts, a template left depending
    on one deleted, or a cycle. Costs nothing for an apply without ``depends_on``."""
    touched = {t.name for t in applied if t.depends_on}
    gone = set(deleted)
    if not touched and not gone:
        return
    after = {name: s.template for name, s in stored.items() if name not in gone}
    after.update((t.name, t) for t in applied)
    graph = {name: t.depends_on for name, t in after.items() if t.depends_on}
    problems: list[Problem] = []
    for name in sorted(graph):
        for dependency in graph[name]:
            if dependency.name in gone and dependency.name not in after:
                problems.append(Problem(
                    name, "depends_on",
                    f"depends on {dependency.name!r}: delete {name} with it, or change its depends_on first",
                ))
    restarts = {name: t.restart for name, t in after.items()}
    problems += reference_problems({name: graph[name] for name in touched}, restarts)
    problems += cycle_problems(graph)
    if problems:
        raise TemplateError(problems)
