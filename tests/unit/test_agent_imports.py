"""Which package may import which, on the agent side (docs/ARCHITECTURE.md, "Layout").

``agent/`` builds on ``common/`` only: never on ``controller/`` or ``cli/``. Its pure cores
(the decisions) import no shell: no process, no socket, no loop, no clock of their own. The
rest of ``gaffer`` never imports ``gaffer.testing``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gaffer"
PURE = ("flapping", "lifecycle", "plan", "lease", "follow", "ownership")
SHELL_MODULES = ("asyncio", "socket", "subprocess", "zmq", "time", "psutil")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("agent"), ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_never_imports_controller_or_cli(path: Path) -> None:
    """Nothing under gaffer/agent/ imports gaffer.controller or gaffer.cli."""
    bad = {name for name in imports(path) if name.startswith(("gaffer.controller", "gaffer.cli"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", PURE)
def test_pure_cores_import_no_shell(name: str) -> None:
    """The agent's decisions import only other pure modules and common/: no process, loop or clock."""
    found = imports(ROOT / "agent" / f"{name}.py")
    agent = {i.split(".")[2] for i in found if i.startswith("gaffer.agent.")}
    assert agent <= set(PURE), f"{name} imports {sorted(agent - set(PURE))}"
    shells = {i for i in found if i.split(".")[0] in SHELL_MODULES}
    assert not shells, f"{name} imports {sorted(shells)}"


@pytest.mark.parametrize("path", [p for p in ROOT.rglob("*.py") if "testing" not in p.parts],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_tests_import_the_fakes(path: Path) -> None:
    """gaffer.testing is for tests and benchmarks: no module of gaffer imports it."""
    assert not any(name.startswith("gaffer.testing") for name in imports(path)), path.name


def test_common_imports_only_common() -> None:
    """gaffer/common/ depends on nothing else of gaffer."""
    for path in modules("common"):
        bad = {n for n in imports(path) if n.startswith("gaffer.") and not n.startswith("gaffer.common")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
