"""`gafferctl` as an operator runs it, against a real `gaffer start` (embedded controller)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from gaffer.testing import free_port, pid_dead, interrupt

GAFFER = [sys.executable, "-m", "gaffer.cli"]
CTL = [sys.executable, "-m", "gaffer.cli.ctl"]
DEADLINE = 15.0


class Ctl:
    """gafferctl with the environment of a test: its own runtime dir (where it finds the
    test's `gaffer start` by default, as an operator's finds theirs), or an explicit endpoint."""

    def __init__(self, runtime: Path, endpoint: str | None = None) -> None:
        self.env = {**os.environ, "GAFFER_RUNTIME_DIR": str(runtime)}
        self.env.pop("GAFFER_CONTROLLER", None)
        if endpoint is not None:
            self.env["GAFFER_CONTROLLER"] = endpoint

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([*CTL, *args], env=self.env, capture_output=True, text=True, timeout=30, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"gafferctl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json").stdout)

    def until(self, predicate, *args: str, what: str = "", within: float = DEADLINE):
        """Poll a --json command until ``predicate(result)`` holds (bounded)."""
        deadline = time.monotonic() + within
        while True:
            done = self.run(*args, "--json", check=False)
            result = json.loads(done.stdout) if done.returncode == 0 else done.stderr
            if done.returncode == 0 and predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or args}: last {result}")
            time.sleep(0.05)  # poll


def running_gaffer(tmp_path: Path) -> Iterator[Ctl]:
    """A running `gaffer start` with two templates, and a gafferctl pointed at it."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text(
        '[web]\ncmd = "sh"\nargs = ["-c", "echo hello from $GAFFER_INSTANCE; exec sleep 300"]\n'
        'numprocesses = 2\nstartsecs = 0\n\n'
        '[cat]\ncmd = "sh"\nargs = ["-c", "exec cat"]\nredirect_input = true\nstartsecs = 0\n\n'
        '[job]\ncmd = "sh"\nargs = ["-c", "echo job says $0; exit 4", "hi"]\nnumprocesses = 0\n'
    )
    ctl = Ctl(tmp_path / "run")
    proc = subprocess.Popen(
        [*GAFFER, "start", "--no-color", "--data-dir", str(tmp_path / "data"), str(spec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ctl.env,
    )
    try:
        ctl.until(lambda rows: sum(r["state"] == "running" for r in rows) == 3, "ps", what="3 running")
        yield ctl
    finally:
        interrupt(proc)


@pytest.fixture
def gaffer(tmp_path):
    """A `gaffer start` of its own for a test that changes what runs (see ``running_gaffer``)."""
    yield from running_gaffer(tmp_path)


class TestCommandsThatLeaveItAsFound:
    """Commands that read, fail, or undo what they did share one `gaffer start` (class scope)."""

    @pytest.fixture(scope="class")
    @classmethod
    def gaffer(cls, tmp_path_factory):
        yield from running_gaffer(tmp_path_factory.mktemp("gaffer"))

    def test_nodes_status_and_templates(self, gaffer):
        """The embedded node is up; status and templates answer in tables and JSON."""
        nodes = gaffer.json("nodes")
        assert len(nodes) == 1 and nodes[0]["state"] == "up"
        for key in ("name", "state", "labels", "cordoned", "instances"):
            assert key in nodes[0]
        table = gaffer.run("nodes").stdout
        assert table.splitlines()[0].split()[:3] == ["NAME", "STATE", "ADDRESS"]
        status = gaffer.json("status")
        assert status["templates"] == 3 and status["nodes"]["up"] == 1
        names = {t["name"]: t for t in gaffer.json("templates")}
        assert names["web"]["numprocesses"] == 2 and names["job"]["numprocesses"] == 0
        assert "command     sh -c" in gaffer.run("get", "web").stdout

    def test_ps_json_has_every_field(self, gaffer):
        """ps --fresh --json rows carry id, template, ordinal, node, pid, state, restarts, cpu,
        mem, uptime and age (the agent asked now: ps alone shows what it last pushed)."""
        rows = gaffer.json("ps", "web", "--fresh")
        assert [r["id"] for r in rows] == ["web.1", "web.2"]
        for row in rows:
            for key in ("id", "template", "ordinal", "node", "pid", "state", "restarts", "cpu", "mem", "uptime", "age"):
                assert key in row
            assert row["pid"] and row["mem"] > 0 and row["uptime"] >= 0

    def test_errors_are_one_line_and_non_zero(self, gaffer, tmp_path):
        """Unknown template, bad count and bad files give one clear line and exit 1."""
        missing = gaffer.run("get", "nope", check=False)
        assert missing.returncode == 1 and missing.stderr.strip() == "Error: no template named 'nope'"
        bad = gaffer.run("scale", "web=lots", check=False)
        assert bad.returncode == 1 and "bad count 'lots'" in bad.stderr
        broken = tmp_path / "broken.toml"
        broken.write_text('[x]\ncmd = "a"\nnumprocesses = -2\n')
        refused = gaffer.run("apply", str(broken), check=False)
        assert refused.returncode == 1 and "x.numprocesses: must be >= 0, got -2" in refused.stderr
        assert "Traceback" not in missing.stderr + bad.stderr + refused.stderr

    def test_cordon_and_uncordon(self, gaffer):
        """cordon marks the node; uncordon clears it."""
        node = gaffer.json("nodes")[0]["name"]
        gaffer.run("cordon", node)
        assert gaffer.json("nodes")[0]["cordoned"] is True
        gaffer.run("uncordon", node)
        assert gaffer.json("nodes")[0]["cordoned"] is False

    def test_run_one_off_exits_with_its_status(self, gaffer):
        """run prints the one-off's output and exits with its status."""
        done = gaffer.run("run", "job", check=False)
        assert done.returncode == 4
        assert done.stdout == "job says hi\n"


def test_scale_absolute_and_relative(gaffer):
    """scale NAME=N, NAME=+N and NAME=-N."""
    assert "web: 2 -> 4" in gaffer.run("scale", "web=+2").stdout
    gaffer.until(lambda rows: sum(r["state"] == "running" for r in rows) == 4, "ps", "web")
    gaffer.run("scale", "web=-3")
    rows = gaffer.until(lambda rows: [r["id"] for r in rows] == ["web.1"], "ps", "web")
    assert rows[0]["state"] == "running"


def test_logs_write_and_kill(gaffer):
    """logs shows captured output; write feeds stdin; kill signals and the instance restarts."""
    lines = gaffer.json("logs", "web.1")
    assert [line["line"] for line in lines] == ["hello from 1"]
    assert "wrote 6 bytes to cat.1" in gaffer.run("write", "cat.1", "ping!\n").stdout
    gaffer.until(lambda lines: [line["line"] for line in lines] == ["ping!"], "logs", "cat.1")
    old = gaffer.json("ps", "web")[1]["pid"]
    gaffer.run("kill", "web.2", "KILL")
    gaffer.until(lambda rows: rows[1]["pid"] not in (None, old) and rows[1]["restarts"] == 1, "ps", "web")
    assert pid_dead(old)


def test_stop_start_restart_and_delete(gaffer):
    """stop pauses, start resumes, restart replaces every pid, delete forgets."""
    gaffer.run("stop", "web")
    gaffer.until(lambda rows: not any(r["pid"] for r in rows if not r["stale"]), "ps", "web")
    gaffer.run("start", "web")
    before = gaffer.until(lambda rows: sum(r["state"] == "running" for r in rows) == 2, "ps", "web")
    gaffer.run("restart", "web")
    gaffer.until(
        lambda rows: len(rows) == 2 and all(r["state"] == "running" and r["pid"] not in {b["pid"] for b in before} for r in rows),
        "ps", "web", what="every web pid replaced",
    )
    gaffer.run("delete", "web")
    assert "web" not in {t["name"] for t in gaffer.json("templates")}


def test_apply_reports_changes(gaffer, tmp_path):
    """apply creates and updates; applying the same file again is unchanged."""
    extra = tmp_path / "extra.toml"
    extra.write_text('[extra]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n')
    assert gaffer.run("apply", str(extra)).stdout.strip() == "extra: created (version 1)"
    assert gaffer.run("apply", str(extra)).stdout.strip() == "extra: unchanged (version 1)"
    gaffer.until(lambda rows: rows and rows[0]["state"] == "running", "ps", "extra")


def test_unreachable_controller_is_a_clear_error(tmp_path):
    """No controller there: a timeout and a message naming the endpoint, not a hang."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    done = Ctl(tmp_path, endpoint).run("--timeout", "0.5", "nodes", check=False)
    assert done.returncode == 1
    assert f"no answer from the controller at {endpoint} within 0.5s" in done.stderr


def test_no_local_gaffer_is_a_clear_error_at_once(tmp_path):
    """Nothing listens on the default local socket: gafferctl says so without waiting."""
    done = Ctl(tmp_path / "run").run("--timeout", "30", "nodes", check=False)
    assert done.returncode == 1
    assert f"no gaffer is listening at ipc://{tmp_path}/run/control.sock" in done.stderr


def test_keygen_writes_a_key_pair(tmp_path):
    """keygen writes NAME.key and a private NAME.key_secret and prints the fingerprint."""
    done = subprocess.run([*CTL, "keygen", "node1", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "sha256:" in done.stdout
    assert (tmp_path / "node1.key").exists()
    assert oct((tmp_path / "node1.key_secret").stat().st_mode & 0o777) == "0o600"
    again = subprocess.run([*CTL, "keygen", "node1", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_events_stream_shows_what_happens(gaffer):
    """`events --json` prints one JSON event per line as things happen."""
    proc = subprocess.Popen(
        [*CTL, "events", "proc.web.", "--json"], env=gaffer.env, stdout=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        event = None
        while event is None:
            assert time.monotonic() < deadline, "no spawn event arrived"
            gaffer.run("scale", "web=+1")
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            while ready:
                candidate = json.loads(proc.stdout.readline())
                if candidate["topic"] == "proc.web.spawn":
                    event = candidate
                    break
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        assert event["seq"] > 0 and event["data"]["node"] and event["data"]["pid"]
        assert event["data"]["id"].startswith("web.")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_events_since_zero_replays_what_happened_before_the_command(gaffer):
    """`events --since 0 --json` first prints the events the controller holds, oldest first."""
    gaffer.run("scale", "web=+1")
    proc = subprocess.Popen(
        [*CTL, "events", "proc.web.", "--since", "0", "--json"], env=gaffer.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
        assert ready, "nothing replayed"
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "event" and first["topic"].startswith("proc.web.") and first["seq"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "lost" not in proc.stderr.read()


def test_a_hundred_thousand_templates_start_apply_and_list(tmp_path):
    """100,000 templates: `gaffer start` runs the file, `gafferctl apply` updates them all in
    one go, and `templates`/`ps` list them (in pages); the ones with instances run."""
    def write(path, arg: str) -> None:
        with open(path, "w") as out:
            for i in range(100_000):
                count = 1 if i % 20_000 == 0 else 0
                out.write(f'[h{i}]\ncmd = "sleep"\nargs = ["{arg}"]\nnumprocesses = {count}\nstartsecs = 0\n\n')

    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    write(first, "300")
    write(second, "301")
    ctl = Ctl(tmp_path / "run")
    proc = subprocess.Popen(
        [*GAFFER, "start", "--no-color", "--data-dir", str(tmp_path / "data"), str(first)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ctl.env,
    )
    try:
        rows = ctl.until(lambda rows: sum(r["state"] == "running" for r in rows) == 5, "ps", what="5 running", within=120)
        before = {r["pid"] for r in rows}
        done = subprocess.run(
            [*CTL, "--timeout", "120", "apply", str(second)], env=ctl.env, capture_output=True, text=True, timeout=180,
        )
        assert done.returncode == 0 and "applied: 100000 updated" in done.stdout, done.stderr
        rows = ctl.until(
            lambda rows: sum(r["state"] == "running" and r["pid"] not in before for r in rows) == 5,
            "ps", what="5 running again, restarted with the new spec", within=120,
        )
        assert len(ctl.json("templates")) == 100_000
        assert {r["id"] for r in rows} == {f"h{i}.1" for i in range(0, 100_000, 20_000)}
    finally:
        interrupt(proc, 60)
