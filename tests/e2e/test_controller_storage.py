"""The real `gaffer-controller` (and `gaffer start`) on storage that fails: kill -9 in the middle
of an apply, a full disk, a damaged file at start, and damage found only while running.

Each fault, then the invariant: the store holds a whole apply or none of it; the client gets one
clear line at once; the controller keeps answering; the log says it once, without a traceback.
"""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gaffer.controller.store import DB_NAME, Store
from gaffer.testing import free_port, template, interrupt

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
import damage  # noqa: E402

BIN = Path(sys.executable).parent
DEADLINE = 20.0
APPLY = """
import json, sys
from gaffer.client import Client
templates = json.load(open(sys.argv[2]))
with Client(sys.argv[1], timeout=300) as client:
    print("sending", flush=True)
    client.call("apply", templates=templates)
print("applied", flush=True)
"""


class Daemon:
    """One `gaffer-controller` on a free loopback port, its output in a log file."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "gaffer-controller"), "--bind", self.endpoint, "--data-dir", str(data_dir),
                 "--insecure", "--backup-every", "0", "--startup-grace", "0"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + DEADLINE
        while ctl(self.endpoint, "--timeout", "0.5", "status", check=False).returncode != 0:
            assert self.proc.poll() is None, f"the controller exited: {log.read_text()}"
            assert time.monotonic() < deadline, "the controller did not answer"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()


def ctl(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "gafferctl"), "--controller", endpoint, *args], capture_output=True, text=True, timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"gafferctl {' '.join(args)} failed: {done.stderr}")
    return done


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of ``proc``'s stdout, waited for with a deadline ('' at EOF)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from pid {proc.pid} within {timeout}s"
    return proc.stdout.readline().decode().strip()


def stored_args(data_dir: Path) -> dict[str, tuple[str, ...]]:
    with Store(data_dir) as store:
        return {s.name: s.template.args for s in store.templates()}


class TestKillDuringApply:
    TEMPLATES = 3000
    ROUNDS = 4

    def test_sigkill_in_the_middle_of_an_apply_leaves_all_of_it_or_none(self, tmp_path):
        """kill -9 of the controller at a random moment of a 3,000-template apply leaves all of it or none."""
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        data = tmp_path / "data"
        expected = {}
        duration = 0.0
        for round_no in range(self.ROUNDS + 1):
            spec = tmp_path / f"apply-{round_no}.json"
            spec.write_text(json.dumps([
                {"name": f"t{i}", "cmd": "sleep", "args": [str(round_no)]} for i in range(self.TEMPLATES)
            ]))
            daemon = Daemon(data, tmp_path / "controller.log")
            client = subprocess.Popen(
                [sys.executable, "-c", APPLY, daemon.endpoint, str(spec)], stdout=subprocess.PIPE,
            )
            try:
                assert read_line(client, DEADLINE) == "sending"
                started = time.monotonic()
                if round_no == 0:
                    assert read_line(client, 300) == "applied"
                    duration = time.monotonic() - started
                    daemon.stop()
                else:
                    # not a wait for something: the random moment of the kill, within one apply
                    threading.Event().wait(rng.uniform(0, duration))
                    daemon.kill()
            finally:
                client.kill()
                client.wait()
                daemon.stop()
            found = stored_args(data)
            whole = {f"t{i}": (str(round_no),) for i in range(self.TEMPLATES)}
            label = f"seed {seed}, round {round_no}"
            assert found in (expected, whole), (
                f"{label}: {sum(found.get(n) == a for n, a in whole.items())} of {self.TEMPLATES} stored"
            )
            expected = found


class TestFullDisk:
    def test_a_full_disk_refuses_an_apply_at_once_in_one_line_and_saves_none(self, tmp_path):
        """apply on a nearly full disk: one 'disk full' line naming the data dir, none saved, the controller alive."""
        spec = tmp_path / "sixty.json"
        spec.write_text(json.dumps({
            f"t{i}": {"cmd": "sleep", "env": {"PAD": "x" * 2000}} for i in range(60)
        }))
        log = tmp_path / "controller.log"
        with damage.tmpfs(tmp_path / "mnt", "4m") as mnt:
            daemon = Daemon(mnt / "data", log)
            try:
                filler = damage.fill(mnt, leave=64 * 1024)
                for _ in range(2):
                    done = ctl(daemon.endpoint, "apply", str(spec), check=False)
                    assert done.returncode == 1
                    [line] = done.stderr.splitlines()
                    assert "disk full" in line and str(mnt / "data") in line
                assert ctl(daemon.endpoint, "templates", "--json").stdout.strip() == "[]"
                assert daemon.proc.poll() is None
                filler.unlink()
                created = ctl(daemon.endpoint, "apply", str(spec)).stdout.splitlines()
                assert len(created) == 60 and all("created" in line for line in created)
            finally:
                daemon.stop()
        text = log.read_text()
        assert text.count("disk full") == 1 and "Traceback" not in text


def seeded(data_dir: Path) -> Path:
    with Store(data_dir) as store:
        store.put_templates([template("cron"), template("db"), template("web", numprocesses=1)])
        store.next_generations(["n1", "n2"])
    return data_dir / DB_NAME


class TestDamagedAtStart:
    @pytest.mark.parametrize("harm", ["garbled page", "broken index"])
    def test_a_damaged_store_stops_the_start_with_one_line(self, tmp_path, harm):
        """A garbled page or a broken index: the start fails with one line naming the file and `check`, no traceback."""
        db = seeded(tmp_path / "data")
        if harm == "garbled page":
            damage.garble_table(db, "templates")
        else:
            damage.unlink_index_entry(db, "templates", "web")
        done = subprocess.run(
            [str(BIN / "gaffer-controller"), "--bind", f"tcp://127.0.0.1:{free_port()}",
             "--data-dir", str(tmp_path / "data"), "--insecure"],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith("Error: the controller's store") and f"{db} is damaged" in last
        assert "gaffer-controller check" in last


class TestDamagedWhileRunning:
    def test_damage_found_while_running_is_reported_to_clients_and_logged_once(self, tmp_path):
        """Damage quick_check misses is logged once, shown in status, and refuses scale in one line."""
        data = tmp_path / "data"
        with Store(data) as store:
            store.put_templates([template("web", args=["300"])])
            store.next_generations(["n1", "n2"])
        damage.unlink_index_entry(data / DB_NAME, "generations", "n1")
        spec = tmp_path / "gaffer.toml"
        spec.write_text('[web]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n')
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        log = tmp_path / "gaffer.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "gaffer"), "start", "--no-color", "--node", "n1", "--data-dir", str(data),
                 "--bind", endpoint, "--insecure", str(spec)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                done = ctl(endpoint, "--timeout", "0.5", "status", "--json", check=False)
                if done.returncode == 0 and json.loads(done.stdout)["storage"]["damaged"]:
                    break
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"status never said damaged: {done.stdout}"
            refused = ctl(endpoint, "scale", "web=3", check=False)
            assert refused.returncode == 1
            [line] = refused.stderr.splitlines()
            assert "is damaged" in line and "gaffer-controller check --full" in line
            assert json.loads(ctl(endpoint, "status", "--json").stdout)["storage"]["damaged"] is True
        finally:
            interrupt(proc, DEADLINE)
        text = log.read_text()
        assert text.count("is damaged") == 1, text
        assert "Traceback" not in text
        full = subprocess.run(
            [str(BIN / "gaffer-controller"), "check", "--full", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60,
        )
        assert full.returncode == 1 and "missing from index sqlite_autoindex_generations_1" in full.stdout
