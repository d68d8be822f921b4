"""The shape of ``gaffer/``: sizes, which package may import which, no import cycles.

These are issue 8's bar and docs/ARCHITECTURE.md's "Layout", held by the code itself:

- **Sizes.** No module over 600 lines, no class over 500, no function over 60 (a function is
  counted from its ``def`` line to its last line, nested functions included; decorators not).
  A file that grows past one is split along its seams, never allowed here.
- **Packages.** ``common/`` imports only ``common/``; ``agent/`` and ``controller/`` import
  ``common/`` and themselves (never each other, never ``cli/``); ``client/`` imports
  ``common/`` and itself; ``cli/`` may import any of them; nothing but ``gaffer.testing`` itself imports
  ``gaffer.testing`` (it is for tests and ``bench/``). ``gaffer`` (the package's
  ``__init__``: the version) may be imported by all but ``common/`` and imports nothing.
  Every import counts here, wherever it is (in a function, under TYPE_CHECKING): a
  dependency is a dependency.
- **The agent's pure cores** (the decisions) import only each other and ``common/``, and no
  shell: no process, socket, loop or clock of their own.
- **No cycles** between modules. The graph has an edge for every import that runs: at module
  level and inside functions (a deferred import still ties two modules in a loop; it only
  moves the failure to the first call). Imports under ``if TYPE_CHECKING:`` are left out: they
  never run, they only name types for annotations.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gaffer"

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 500
MAX_FUNCTION_LINES = 60

ALLOWED = {
    "gaffer": set(),
    "common": {"common"},
    "agent": {"gaffer", "common", "agent"},
    "controller": {"gaffer", "common", "controller"},
    "client": {"gaffer", "common", "client"},
    "cli": {"gaffer", "common", "agent", "controller", "client", "cli"},
    "testing": {"gaffer", "common", "agent", "controller", "client", "testing"},
}
"""For each package of gaffer (``client`` is ``gaffer/client/``, ``gaffer`` the package's
``__init__``), the packages its modules may import."""

PURE = ("flapping", "lifecycle", "plan", "lease", "follow", "ownership", "attended", "outbox", "batches",
        "statdiff")
SHELL_MODULES = ("asyncio", "socket", "subprocess", "zmq", "time", "psutil")


# ------------------------------------------------------------------------------ the code


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PATHS = sorted(ROOT.rglob("*.py"))
MODULES = {module_name(path): path for path in PATHS}


def package(module: str) -> str:
    """``gaffer.agent.keeper.server`` -> ``agent``; ``gaffer`` -> ``gaffer``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@lru_cache(maxsize=None)
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(module: ast.Module, *, running: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it is; only the ones that can run when
    ``running`` (all but those under ``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [module]
    while stack:
        node = stack.pop()
        if running and _type_checking(node):
            stack.extend(getattr(node, "orelse", []))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The gaffer module (or package) that importing ``name`` loads last, if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(here: str, is_package: bool, module: ast.Module, *, running: bool = False,
               modules: dict[str, Path] = MODULES) -> set[str]:
    """The gaffer modules module ``here`` imports: ``from pkg import sub`` is ``pkg.sub`` when
    that is a module, else ``pkg``; relative imports are resolved."""
    found: set[str] = set()
    for node in import_nodes(module, running=running):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(alias.name, modules) for alias in node.names)))
            continue
        base = node.module or ""
        if node.level:
            anchor = here.split(".") if is_package else here.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
            target = _resolve(f"{base}.{alias.name}", modules)
            if target is None or target == here:
                target = _resolve(base, modules)
            if target is not None:
                found.add(target)
    found.discard(here)
    return found


def imported(path: Path, *, running: bool = False) -> set[str]:
    return imports_of(module_name(path), path.name == "__init__.py", parse(path), running=running)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or a module importing itself
    (Tarjan's algorithm, iterative), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        found.append(sorted(component))
    return found


def sizes(module: ast.Module) -> list[tuple[str, str, int]]:
    """(kind, name, lines) for every class and function of a module, methods as Class.name."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                name = prefix + child.name
                found.append((kind, name, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(module, "")
    return found


# ------------------------------------------------------------------------------ sizes

MEASURED = PATHS


@pytest.mark.parametrize("path", MEASURED, ids=rel)
def test_module_is_at_most_600_lines(path: Path) -> None:
    """Every module of gaffer/ fits in 600 lines."""
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{rel(path)} has {lines} lines (at most {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", MEASURED, ids=rel)
def test_classes_and_functions_fit_the_bar(path: Path) -> None:
    """No class of gaffer/ over 500 lines, no function or method over 60."""
    limits = {"class": MAX_CLASS_LINES, "function": MAX_FUNCTION_LINES}
    over = [f"{kind} {name}: {lines} lines (at most {limits[kind]})"
            for kind, name, lines in sizes(parse(path)) if lines > limits[kind]]
    assert not over, f"{rel(path)}: " + "; ".join(over)


def test_sizes_see_methods_and_nested_functions() -> None:
    """The size check measures classes, methods and nested functions, from def to last line."""
    source = "class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n        return g\n"
    assert sizes(ast.parse(source)) == [("class", "A", 6), ("function", "A.f", 4), ("function", "A.f.g", 2)]


# ------------------------------------------------------------------------------ imports


def test_every_module_belongs_to_a_known_package() -> None:
    """A new top-level package or module of gaffer must get its row in ALLOWED (and the docs)."""
    unknown = sorted({package(name) for name in MODULES} - set(ALLOWED))
    assert not unknown, f"packages without import rules: {unknown}"


@pytest.mark.parametrize("path", PATHS, ids=rel)
def test_imports_follow_the_package_rules(path: Path) -> None:
    """A module imports only the packages its own package may (common only common; agent and
    controller only common and themselves; cli anything; gaffer.testing nobody)."""
    own = package(module_name(path))
    bad = sorted(m for m in imported(path) if package(m) not in ALLOWED[own])
    assert not bad, f"{rel(path)} ({own}/) may import only {sorted(ALLOWED[own])}, imports {bad}"


@pytest.mark.parametrize("name", PURE)
def test_pure_cores_import_no_shell(name: str) -> None:
    """The agent's decisions import only other pure modules and common/: no process, loop or clock."""
    path = ROOT / "agent" / f"{name}.py"
    agent = {m.split(".")[2] for m in imported(path) if package(m) == "agent"}
    assert agent <= set(PURE), f"{name} imports {sorted(agent - set(PURE))}"
    shells = set()
    for node in import_nodes(parse(path), running=False):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        shells.update(n for n in names if n.split(".")[0] in SHELL_MODULES)
    assert not shells, f"{name} imports {sorted(shells)}"


def test_no_import_cycles() -> None:
    """No two modules of gaffer/ import each other, directly or through others."""
    graph = {name: imported(path, running=True) for name, path in MODULES.items()}
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# ------------------------------------------------------------------------------ the checks


def test_cycles_finds_loops_and_only_loops() -> None:
    """The cycle finder reports a loop through several modules and a self-import, nothing else."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_submodules_relative_imports_and_type_checking() -> None:
    """``from pkg import sub`` names the submodule, relative imports resolve, a function's import
    counts, and one under TYPE_CHECKING counts for the package rules but not for cycles."""
    source = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from gaffer.common import errors\n"
        "from . import store\n"
        "from .dbfile import DB_NAME\n"
        "def later():\n    import gaffer.agent.lease\n"
        "if TYPE_CHECKING:\n    from gaffer.cli.ctl import main\n"
    )
    here = "gaffer.controller.probe"
    runs = {"gaffer.common.errors", "gaffer.controller.store", "gaffer.controller.dbfile", "gaffer.agent.lease"}
    assert imports_of(here, False, source) == runs | {"gaffer.cli.ctl"}
    assert imports_of(here, False, source, running=True) == runs
