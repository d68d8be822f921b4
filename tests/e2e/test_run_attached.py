"""`gafferctl run` and `gaffer run` behave like a terminal command (issue 9): output as it comes,
stdin passed through, `-e KEY=VALUE`, Ctrl-C stops the whole group and exits 130, and no
`run-N` is left behind, even when the client is killed with -9."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gaffer.testing import pid_dead, interrupt

GAFFER = [sys.executable, "-m", "gaffer.cli"]
CTL = [sys.executable, "-m", "gaffer.cli.ctl"]
DEADLINE = 20.0

TEMPLATES = """
[waiter]
cmd = "sh"
args = ["-c", "echo ready; while [ ! -e \\"$0\\" ]; do sleep 0.02; done; echo done", "{flag}"]
numprocesses = 0

[cat]
cmd = "sh"
args = ["-c", "exec cat"]
numprocesses = 0
redirect_input = true

[greet]
cmd = "sh"
args = ["-c", "echo \\"$GREETING $OTHER\\""]
numprocesses = 0

[trapper]
cmd = "sh"
args = ["-c", "trap 'echo bye; exit 0' INT; sleep 300 & echo child $!; wait"]
numprocesses = 0

[family]
cmd = "sh"
args = ["-c", "sleep 300 & echo child $!; wait"]
numprocesses = 0
graceful_timeout = 5
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    return env


def _read_line(proc: subprocess.Popen, within: float = DEADLINE) -> str:
    """The next line of ``proc``'s stdout, or AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line within {within}s (so far {line!r})")
        byte = os.read(fd, 1)
        if not byte:
            raise AssertionError(f"stdout ended before a whole line (so far {line!r})")
        line += byte
    return line.decode().rstrip("\n")


def _until(predicate, what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # poll


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=DEADLINE)


def write_spec(home: Path) -> Path:
    """The templates above in ``home``; the waiter waits for ``home / "flag"``."""
    path = home / "gaffer.toml"
    path.write_text(TEMPLATES.format(flag=home / "flag"))
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path)


def _ctl(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CTL, *args], env=env, capture_output=True, text=True, timeout=DEADLINE, input=stdin)


def _runs(env: dict[str, str]) -> list[str]:
    done = _ctl(env, "ps", "--json")
    assert done.returncode == 0, done.stderr
    return [row["id"] for row in json.loads(done.stdout) if ".run-" in row["id"]]


def _popen_run(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CTL, "run", *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


class TestGafferctlRun:
    """One `gaffer start` for the class: every test's runs end (and are forgotten) before the
    next test starts its own."""

    @pytest.fixture(scope="class")
    @classmethod
    def home(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("gafferctl-run")

    @pytest.fixture(scope="class")
    @classmethod
    def gaffer(cls, home: Path):
        """A running `gaffer start` (embedded controller and agent); yields its environment."""
        env = _env(home)
        proc = subprocess.Popen(
            [*GAFFER, "start", "--no-color", "--data-dir", str(home / "data"), str(write_spec(home))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            _until(lambda: _ctl(env, "templates", "--json").returncode == 0, "gaffer start to answer")
            yield env
        finally:
            interrupt(proc, DEADLINE)

    def test_output_shows_while_the_run_goes_on(self, gaffer, home):
        """A line the run prints is shown before the run ends, not only at its exit."""
        proc = _popen_run(gaffer, "waiter")
        try:
            assert _read_line(proc) == "ready"
            assert proc.poll() is None
            (home / "flag").touch()
            assert _read_line(proc) == "done"
            assert proc.wait(timeout=DEADLINE) == 0
        finally:
            _stop(proc)

    def test_stdin_goes_to_a_run_whose_template_allows_input(self, gaffer):
        """gafferctl's stdin reaches the run (redirect_input), and its end of file too."""
        done = _ctl(gaffer, "run", "cat", stdin="ping\npong\n")
        assert (done.returncode, done.stdout) == (0, "ping\npong\n"), done.stderr

    def test_env_overrides_reach_the_run_and_bad_ones_are_named(self, gaffer):
        """-e KEY=VALUE (repeatable) adds to the run's environment; a malformed one is refused by name."""
        done = _ctl(gaffer, "run", "-e", "GREETING=hello", "-e", "OTHER=a=b", "greet")
        assert (done.returncode, done.stdout) == (0, "hello a=b\n"), done.stderr
        bad = _ctl(gaffer, "run", "-e", "NOVALUE", "greet")
        assert bad.returncode == 2
        assert "'NOVALUE'" in bad.stderr and "KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr

    @pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_a_signal_stops_the_run_with_its_group_and_exits_128_plus_it(self, gaffer, sig, code):
        """Ctrl-C (SIGTERM) to gafferctl stops the run's shell and its child, exits 130 (143), leaves no run-N."""
        proc = _popen_run(gaffer, "family")
        try:
            child = int(_read_line(proc).split()[1])
            rows = json.loads(_ctl(gaffer, "ps", "--json").stdout)
            leader = next(row["pid"] for row in rows if row["id"].startswith("family.run-"))
            proc.send_signal(sig)
            assert proc.wait(timeout=DEADLINE) == code
            _until(lambda: pid_dead(leader) and pid_dead(child), "the run's shell and its child to end")
            _until(lambda: _runs(gaffer) == [], "ps to list no run")
        finally:
            _stop(proc)

    def test_a_client_killed_with_9_leaves_nothing_behind(self, gaffer):
        """A run whose gafferctl vanished is stopped by its agent once the lease lapses, then forgotten."""
        proc = _popen_run(gaffer, "--lease", "1", "family")
        try:
            child = int(_read_line(proc).split()[1])
            assert _runs(gaffer)
            proc.kill()
            proc.wait(timeout=DEADLINE)
            _until(lambda: pid_dead(child), "the run's child to be stopped")
            _until(lambda: _runs(gaffer) == [], "ps to list no run")
        finally:
            _stop(proc)


class TestGafferRun:
    def _popen(self, tmp_path: Path, spec: Path, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*GAFFER, "run", "-f", str(spec), *args], env=_env(tmp_path), cwd=tmp_path,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def test_stdin_and_env_reach_the_process(self, tmp_path, spec):
        """gaffer run passes stdin (redirect_input) with its end of file, and -e KEY=VALUE."""
        done = subprocess.run(
            [*GAFFER, "run", "-f", str(spec), "cat"], input="one\ntwo\n", env=_env(tmp_path),
            capture_output=True, text=True, timeout=DEADLINE,
        )
        assert (done.returncode, done.stdout) == (0, "one\ntwo\n"), done.stderr
        done = subprocess.run(
            [*GAFFER, "run", "-f", str(spec), "-e", "GREETING=hi", "-e", "OTHER=there", "greet"],
            env=_env(tmp_path), capture_output=True, text=True, timeout=DEADLINE,
        )
        assert (done.returncode, done.stdout) == (0, "hi there\n"), done.stderr

    def test_ctrl_c_exits_130_even_if_the_process_handles_it(self, tmp_path, spec):
        """Ctrl-C to gaffer run goes to the process's group, which ends, and exits 130 even if the process exits 0."""
        proc = self._popen(tmp_path, spec, "trapper")
        try:
            child = int(_read_line(proc).split()[1])
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=DEADLINE) == 130
            _until(lambda: pid_dead(child), "the child of the run to end")
        finally:
            _stop(proc)
