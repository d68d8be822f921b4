"""What each gaffer process loads: only what it runs (issue 9, items 11 and 12).

Start-up time and memory go with the modules a process imports, so these pin the module sets,
which are deterministic, and leave the timings to ``bench/cli_startup.py`` and
``bench/idle.py``: ``gafferctl`` imports no event loop and no daemon code, the keeper (a
daemon of its own on every host) none of gaffer beyond its package, and an agent neither psutil
nor the entry-point machinery until someone asks for stats or a plugin by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from gaffer.testing import pid_dead, interrupt

DEADLINE = 20.0
CTL_NEVER = (
    "asyncio", "uvloop", "psutil", "aiohttp", "sqlite3", "tomllib", "importlib.metadata", "ssl",
    "difflib", "gaffer.agent", "gaffer.controller", "gaffer.common.template",
    "gaffer.common.loaders", "gaffer.common.keys", "gaffer.client.aio", "gaffer.common.transport",
)
KEEPER_NEVER = (
    "asyncio", "zmq", "click", "psutil", "aiohttp", "uvloop", "logging", "dataclasses", "typing",
    "gaffer.common", "gaffer.agent.keeper.client", "gaffer.agent.manager",
)
KEEPER_NEVER_LEAN = (
    "site", "msgpack", "datetime", "socket", "signal", "selectors", "enum", "collections", "functools",
    "argparse", "re", "array", "json",
)
AGENT_NOT_YET = ("psutil", "importlib.metadata", "aiohttp", "tempfile", "shutil", "prometheus_client")
IDLE_NEVER = ("psutil", "prometheus_client", "gaffer.controller.metrics")
"""What a running `gaffer start` never loads until a scrape: the stats read /proc themselves."""


def modules_after(code: str, env: dict[str, str] | None = None) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run ``code`` in a fresh interpreter; the modules loaded when it exits (even through
    sys.exit, as a click command ends), and the finished process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        script = (
            "import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
            + code
        )
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        modules = set(json.loads(out.read_text())) if out.exists() else set()
    return modules, done


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (a package counts with its submodules) are in ``modules``."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


@pytest.fixture(scope="module")
def gaffer(tmp_path_factory):
    """A running `gaffer start` with one template; the environment gafferctl finds it with.
    One per module: the tests only read from it."""
    tmp_path = tmp_path_factory.mktemp("gaffer")
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[web]\ncmd = "sleep"\nargs = ["300"]\nnumprocesses = 2\nstartsecs = 0\n')
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaffer.cli", "start", "--no-color", "--data-dir", str(tmp_path / "data"), str(spec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        wait_two_running(env)
        yield env
    finally:
        interrupt(proc)
        assert pid_dead(proc.pid)


@pytest.mark.parametrize("argv", [["ps"], ["ps", "--json"], ["status"], ["templates"]])
def test_gafferctl_requests_load_no_event_loop_and_no_daemon_code(gaffer, argv):
    """gafferctl's requests run on the blocking client: no asyncio, uvloop, psutil, template
    parsing or agent/controller module is imported (item 11)."""
    modules, done = modules_after(f"from gaffer.cli.ctl import main\nmain({argv!r})", env=gaffer)
    assert done.returncode == 0, done.stderr
    assert "web.1" in done.stdout or argv != ["ps"]
    assert modules and loaded(modules, CTL_NEVER) == []


def test_gafferctl_help_loads_no_event_loop_and_no_daemon_code():
    """`gafferctl --help` needs click and the command table only (item 11)."""
    modules, done = modules_after("from gaffer.cli.ctl import main\nmain(['--help'])")
    assert done.returncode == 0 and "Drive a gaffer controller" in done.stdout
    assert loaded(modules, CTL_NEVER) == []


def test_gafferctl_apply_loads_template_files_only_for_apply(tmp_path):
    """The template loaders come in with `apply`, which still reads a file and reaches the
    controller (here: none listening, a one-line error)."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[web]\ncmd = "sleep"\n')
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    modules, done = modules_after(f"from gaffer.cli.ctl import main\nmain(['apply', {str(spec)!r}])", env=env)
    assert done.returncode == 1 and "no gaffer is listening" in done.stderr
    assert "gaffer.common.loaders" in modules and "asyncio" not in modules


def test_the_blocking_client_imports_no_event_loop_and_async_client_still_loads():
    """`gaffer.client.Client` is blocking pyzmq; `AsyncClient` is loaded on first use."""
    modules, done = modules_after(
        "import gaffer.client\nc = gaffer.client.Client('tcp://127.0.0.1:1')\nc.close()"
    )
    assert done.returncode == 0, done.stderr
    assert loaded(modules, ("asyncio", "uvloop", "gaffer.client.aio")) == []
    modules, done = modules_after("from gaffer.client import AsyncClient\nprint(AsyncClient.__module__)")
    assert done.stdout.strip() == "gaffer.client.aio" and "asyncio" in modules


def test_the_keeper_process_loads_only_the_keeper():
    """The keeper, started as an agent starts it (``python -S`` with gaffer's directory on
    PYTHONPATH), imports its own package and builtin-backed stdlib modules only: no site, no
    msgpack, none of socket/signal/selectors (enum), collections, functools, argparse (re),
    nor anything of gaffer beyond the keeper (item 12: the keeper stays under 10 MB)."""
    from gaffer.agent.keeper.client import keeper_command

    argv, env = keeper_command("/nonexistent/k.sock")
    assert argv[1:4] == ["-S", "-m", "gaffer.agent.keeper"]
    code = "import sys\nimport gaffer.agent.keeper.daemon\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([*argv[:2], "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "gaffer.agent.keeper.server" in modules
    assert loaded(modules, KEEPER_NEVER + KEEPER_NEVER_LEAN) == []


def test_a_keeper_still_logs_in_the_format_it_always_had(tmp_path):
    """Without ``logging`` the keeper's lines keep their shape: time, keeper[pid], level."""
    socket_path = tmp_path / "k.sock"
    done = subprocess.run(
        [sys.executable, "-m", "gaffer.agent.keeper", "--socket", str(socket_path), "--idle-timeout", "0.1"],
        capture_output=True, text=True, timeout=30,
    )
    first, last = done.stderr.splitlines()
    assert done.returncode == 0
    assert " keeper[" in first and "] INFO: listening on " + str(socket_path) in first
    assert first[:4].isdigit() and first[19] == "," and first[20:23].isdigit()
    assert last.endswith("INFO: exiting: idle: nothing held and no agent for 0.1s")


def test_an_agent_loads_psutil_and_entry_points_only_when_asked():
    """`gaffer start` and `gaffer-agent` import psutil (never: stats read /proc), importlib.metadata (apps by
    entry point), tempfile (`gaffer export`, with shutil, bz2 and lzma) and prometheus_client (the
    first scrape of /metrics) on first use, not at start-up (item 12: about 6.5 MB)."""
    for module in ("gaffer.cli.start", "gaffer.agent.daemon"):
        modules, done = modules_after(f"import {module}")
        assert done.returncode == 0, done.stderr
        assert loaded(modules, AGENT_NOT_YET) == [], module


def test_boot_time_from_proc_matches_psutil():
    """The agent's own boot time (for process start times) is psutil's, to the second."""
    import psutil

    from gaffer.agent.adoption import read_boot_time

    assert read_boot_time() == psutil.boot_time()
    assert Path("/proc/stat").exists()


def run_gaffer_start(tmp_path: Path, then: Callable[[int, str], None]) -> set[str]:
    """Run `gaffer start` of two sleeps with HTTP on a free loopback port until `gafferctl ps`
    lists both running, call ``then(its_pid, first_console_line)``, stop it with Ctrl-C; the modules it had
    loaded when it exited."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[web]\ncmd = "sleep"\nargs = ["300"]\nnumprocesses = 2\nstartsecs = 0\n')
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    out, console = tmp_path / "modules.json", tmp_path / "console.txt"
    argv = ["start", "--no-color", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0", str(spec)]
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        f"from gaffer.cli.start import main\nmain({argv!r})\n"
    )
    with open(console, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_two_running(env)
        then(proc.pid, console.read_text().splitlines()[0])
    finally:
        assert interrupt(proc) == 0, console.read_text()
        assert pid_dead(proc.pid)
    return set(json.loads(out.read_text()))


def mapped(pid: int, part: str) -> bool:
    """Whether process ``pid`` maps a file whose path has ``part`` (a loaded C extension)."""
    return part in Path(f"/proc/{pid}/maps").read_text()


def test_an_idle_gaffer_start_loads_the_http_stack_at_the_first_request_and_never_psutil(tmp_path):
    """A `gaffer start` that runs its instances and answers `gafferctl ps` (a look: its stats
    are sampled) has not loaded aiohttp (its C extensions are not mapped) until the first HTTP
    request, which is served; psutil and prometheus_client (no /metrics scrape) never come
    (issue 9 item 12: about 15 MB of an idle `gaffer start`)."""
    import urllib.request

    def ask(pid: int, line: str) -> None:
        assert not mapped(pid, "/aiohttp/") and not mapped(pid, "/psutil/")
        found = re.search(r"(http://127\.0\.0\.1:\d+)/#token=(gaffer_[\w-]{43})", line)
        assert found, line
        request = urllib.request.Request(found[1] + "/v1/status", headers={"Authorization": f"Bearer {found[2]}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert mapped(pid, "/aiohttp/")

    modules = run_gaffer_start(tmp_path, ask)
    assert "gaffer.agent.proctable" in modules and "gaffer.controller.http.app" in modules
    assert loaded(modules, IDLE_NEVER) == []


def wait_two_running(env: dict[str, str]) -> None:
    """Poll `gafferctl ps --json` (a process of its own, as a user runs it) until the
    `gaffer start` of this test runs its two sleeps."""
    deadline = time.monotonic() + DEADLINE
    while True:
        done = subprocess.run([sys.executable, "-m", "gaffer.cli.ctl", "ps", "--json"], env=env,
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and sum(r["state"] == "running" for r in json.loads(done.stdout)) == 2:
            return
        assert time.monotonic() < deadline, f"gaffer start not running 2 within {DEADLINE}s: {done.stderr}"
        time.sleep(0.05)  # poll
