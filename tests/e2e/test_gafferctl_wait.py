"""`gafferctl wait` against a real `gaffer start`: it returns once the stream shows the goal."""

from __future__ import annotations

import json
import subprocess

import pytest

from gaffer.testing import interrupt
from tests.e2e.test_gafferctl import GAFFER, Ctl

WEB = (
    '[web]\ncmd = "sh"\nargs = ["-c", "exec sleep 300"]\nnumprocesses = 3\nstartsecs = 1\n'
    'graceful_timeout = 1\n'
)


@pytest.fixture(scope="module")
def gaffer(tmp_path_factory):
    """A running `gaffer start` (one idle template), and a gafferctl pointed at it. One for the
    module: the first test applies `web` and waits for it; the next one's apply of the same
    file changes nothing, and the others only ask."""
    tmp_path = tmp_path_factory.mktemp("gaffer")
    spec = tmp_path / "idle.toml"
    spec.write_text('[idle]\ncmd = "sleep"\nargs = ["300"]\nnumprocesses = 0\n')
    ctl = Ctl(tmp_path / "run")
    proc = subprocess.Popen(
        [*GAFFER, "start", "--no-color", "--data-dir", str(tmp_path / "data"), str(spec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ctl.env,
    )
    try:
        ctl.until(lambda nodes: len(nodes) == 1 and nodes[0]["state"] == "up", "nodes", what="node up")
        yield ctl
    finally:
        interrupt(proc)


def test_wait_running_returns_once_the_applied_template_runs(gaffer, tmp_path):
    """apply, then `wait web --running 3` exits 0 with every instance running."""
    web = tmp_path / "web.toml"
    web.write_text(WEB)
    gaffer.run("apply", str(web))
    done = gaffer.run("wait", "web", "--running", "3", "--timeout", "30", check=False)
    assert done.returncode == 0, done.stderr
    assert "web: 3 running" in done.stdout
    rows = gaffer.json("ps", "web")
    assert sorted(r["state"] for r in rows) == ["running"] * 3
    ready = gaffer.run("wait", "web", "--ready", "--json", check=False)
    assert ready.returncode == 0 and json.loads(ready.stdout)["result"] == "reached"


def test_wait_times_out_with_where_the_template_stands(gaffer, tmp_path):
    """A goal not reached in time exits 1 and says how far it got."""
    web = tmp_path / "web.toml"
    web.write_text(WEB)
    gaffer.run("apply", str(web))
    done = gaffer.run("wait", "web", "--running", "5", "--timeout", "2", check=False)
    assert done.returncode == 1
    assert "web: not 5 running within 2s" in done.stderr and "wanted 5" in done.stderr


def test_wait_for_a_missing_template_exits_2(gaffer):
    """No such template: exit 2 at once, saying so (deleted meanwhile: tests/unit/test_waitgoal.py)."""
    missing = gaffer.run("wait", "nope", "--ready", check=False)
    assert missing.returncode == 2 and "no template named 'nope'" in missing.stderr


def test_wait_needs_exactly_one_goal(gaffer):
    """Neither --running nor --ready (or both) is a usage error."""
    done = gaffer.run("wait", "idle", check=False)
    assert done.returncode == 2 and "exactly one of --running N and --ready" in done.stderr
