"""`gaffer-controller check | export | import | forget-template` as an operator runs them: on a
stopped controller's real store, never while one runs, and as the way out when it cannot start."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gaffer.controller.store import DB_NAME, Store
from gaffer.testing import free_port, template

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
import damage  # noqa: E402

BIN = Path(sys.executable).parent
DEADLINE = 20.0


def controller(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "gaffer-controller"), *args], capture_output=True, text=True, timeout=60, input=stdin,
    )


def seeded(data_dir: Path) -> None:
    """A store with every kind of desired state: versions, a paused template, node flags, generations."""
    with Store(data_dir) as store:
        store.put_templates([template("web", numprocesses=3), template("db"), template("cron")])
        store.set_count("web", 4)
        store.set_paused("cron", True)
        store.put_node("n1", {"zone": "a"}, "agent-1")
        store.set_node_flags("n1", cordoned=True)
        store.set_node_flags("n2", cordoned=True, draining=True)
        store.next_generations(["n1", "n2"], {"n1": 7})


def spoil(data_dir: Path, name: str, spec: str) -> None:
    """Store ``spec`` as template ``name``'s spec, as a bug or an old gaffer might have."""
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        conn.execute("UPDATE templates SET spec = ? WHERE name = ?", (spec, name))
    finally:
        conn.close()


def exported(data_dir: Path) -> dict:
    done = controller("export", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Daemon:
    def __init__(self, data_dir: Path) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--data-dir", str(data_dir),
             "--insecure", "--backup-every", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    def templates(self) -> list[dict]:
        """`gafferctl templates --json`, polled until the controller answers."""
        deadline = time.monotonic() + DEADLINE
        while True:
            done = subprocess.run(
                [str(BIN / "gafferctl"), "--controller", self.endpoint, "--timeout", "0.5", "templates", "--json"],
                capture_output=True, text=True, timeout=60,
            )
            if done.returncode == 0:
                return json.loads(done.stdout)
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "the controller did not answer"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_offline_commands_refuse_while_a_controller_runs_naming_its_pid(tmp_path):
    """check, export, import and forget-template leave a running controller's store alone."""
    data = tmp_path / "data"
    seeded(data)
    export = tmp_path / "state.json"
    export.write_text(json.dumps(exported(data)))
    daemon = Daemon(data)
    try:
        daemon.templates()
        for args in (["check"], ["export"], ["import", str(export), "--replace"], ["forget-template", "web"]):
            done = controller(*args, "--data-dir", str(data))
            assert done.returncode == 1, args
            assert f"in use: process {daemon.proc.pid} holds" in done.stderr, args
            assert "Stop the controller first" in done.stderr, args
        assert [t["name"] for t in daemon.templates()] == ["cron", "db", "web"]
    finally:
        daemon.stop()


def test_a_template_that_no_longer_validates_is_reported_exported_and_forgotten(tmp_path):
    """An unreadable template: start names forget-template, check lists it, export keeps it, forgetting it fixes it."""
    data = tmp_path / "data"
    seeded(data)
    spoil(data, "db", '{"cmd": 3}')
    refused = controller("--bind", f"tcp://127.0.0.1:{free_port()}", "--data-dir", str(data), "--insecure")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"gaffer-controller forget-template db --data-dir {data}" in refused.stderr.splitlines()[-1]
    checked = controller("--data-dir", str(data), "check")
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "template 'db' no longer validates: db.cmd: must be a string, got number 3 (export keeps "
        "its spec; `gaffer-controller forget-template db` deletes it)"
    ]
    done = controller("export", "--data-dir", str(data))
    assert done.returncode == 0
    assert "template 'db' no longer validates" in done.stderr
    bad = [t for t in json.loads(done.stdout)["templates"] if t["name"] == "db"]
    assert bad == [{"name": "db", "version": 1, "paused": False, "spec": {"cmd": 3},
                    "invalid": "db.cmd: must be a string, got number 3"}]
    assert controller("forget-template", "db", "--data-dir", str(data)).returncode == 0
    assert controller("check", "--full", "--data-dir", str(data)).returncode == 0
    daemon = Daemon(data)
    try:
        assert [t["name"] for t in daemon.templates()] == ["cron", "web"]
    finally:
        daemon.stop()


def test_export_then_import_gives_the_same_desired_state_to_a_new_controller(tmp_path):
    """Export then import (file or stdin) into an empty data dir keeps versions, paused, node flags and generations."""
    seeded(tmp_path / "old")
    target = tmp_path / "state.json"
    done = controller("export", str(target), "--data-dir", str(tmp_path / "old"))
    assert done.returncode == 0, done.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    before = json.loads(target.read_text())
    assert before["nodes"] == [
        {"name": "n1", "cordoned": True, "draining": False},
        {"name": "n2", "cordoned": True, "draining": True},
    ]
    assert before["generations"] == {"n1": 8, "n2": 1}
    assert controller("import", str(target), "--data-dir", str(tmp_path / "new")).returncode == 0
    assert controller("import", "-", "--data-dir", str(tmp_path / "piped"), stdin=target.read_text()).returncode == 0
    assert exported(tmp_path / "new") == exported(tmp_path / "piped") == before
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    daemon = Daemon(tmp_path / "new")
    try:
        views = {t["name"]: (t["version"], t["paused"], t["numprocesses"]) for t in daemon.templates()}
    finally:
        daemon.stop()
    assert views == {"cron": (1, True, 1), "db": (1, False, 1), "web": (2, False, 4)}


def test_import_checks_everything_first_and_replaces_only_when_told(tmp_path):
    """A bad export changes nothing, naming the field; only --replace replaces a store, keeping the old file."""
    data = tmp_path / "data"
    seeded(data)
    before = exported(data)
    other = {**before, "templates": [
        {"name": "api", "version": 3, "paused": False, "spec": {"cmd": "sleep", "numprocesses": 2}},
    ]}
    bad = {**other, "templates": other["templates"] + [{"name": "bad", "version": 1, "spec": {"cmd": 3}}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "other.json").write_text(json.dumps(other))
    done = controller("import", str(tmp_path / "bad.json"), "--replace", "--data-dir", str(data))
    assert done.returncode == 1 and "templates.bad.cmd: must be a string" in done.stderr
    done = controller("import", str(tmp_path / "other.json"), "--data-dir", str(data))
    assert done.returncode == 1 and "already holds 3 templates and 2 nodes; pass --replace" in done.stderr
    assert exported(data) == before
    done = controller("import", str(tmp_path / "other.json"), "--replace", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    kept = Path(done.stdout.splitlines()[-1].rpartition(" ")[2])
    assert kept.parent == data and kept.name.startswith(f"{DB_NAME}.before-import-")
    after = exported(data)
    assert [(t["name"], t["version"]) for t in after["templates"]] == [("api", 3)]
    assert after["generations"] == before["generations"]
    (tmp_path / "restored").mkdir(mode=0o700)
    (tmp_path / "restored" / DB_NAME).hardlink_to(kept)
    assert exported(tmp_path / "restored") == before


def test_check_and_export_of_a_damaged_store(tmp_path):
    """A garbled page: check lists SQLite's findings; export writes what reads and names the rest; both exit 1."""
    data = tmp_path / "data"
    seeded(data)
    damage.garble_table(data / DB_NAME, "nodes")
    checked = controller("check", "--data-dir", str(data))
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert lines and all(line.startswith(("quick_check: ", "nodes: ")) for line in lines)
    assert "restore a backup" in checked.stderr
    done = controller("export", "--data-dir", str(data))
    assert done.returncode == 1
    state = json.loads(done.stdout)
    assert [t["name"] for t in state["templates"]] == ["cron", "db", "web"] and state["nodes"] == []
    assert "error: nodes: reading stopped after 0 rows" in done.stderr
