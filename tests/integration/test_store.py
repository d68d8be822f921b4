"""The controller's Store on real SQLite files: round trips, reopen, migrations, the lock, SIGKILL."""

from __future__ import annotations

import itertools
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from gaffer.common.errors import ConfigError, InvalidRequest, StorageDamaged, TemplateNotFound
from gaffer.controller.migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from gaffer.controller.store import DB_NAME, Store
from gaffer.testing import template

sys.path.insert(0, str(Path(__file__).parent))
import store_writer  # noqa: E402

WRITER = Path(__file__).with_name("store_writer.py")


class Clock:
    """A wall clock the test moves by hand: 1000.0, 1001.0, ..."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1000)

    def __call__(self) -> float:
        return float(next(self._ticks))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "data", clock=Clock()) as opened:
        yield opened


@contextmanager
def raw(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the Store's file, for what the Store API must not offer."""
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


class LineReader:
    """Lines from a child's stdout, each awaited with a deadline instead of a blind block."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def line(self, timeout: float = 10.0) -> str | None:
        """The next line, or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no line from pid {self.proc.pid} within {timeout}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def rest(self) -> list[str]:
        lines = []
        while (line := self.line()) is not None:
            lines.append(line)
        return lines


def spawn_writer(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRITER), *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


class TestTemplates:
    def test_put_template_creates_then_reports_unchanged(self, store):
        """The first put is `created` at version 1; the same template again changes nothing."""
        web = template("web", numprocesses=2)
        assert store.put_template(web).kind == "created"
        again = store.put_template(web)
        assert (again.kind, again.version, again.changed) == ("unchanged", 1, False)
        assert store.get_template("web").template == web

    def test_count_change_is_scaled_and_spec_change_is_updated(self, store):
        """Only numprocesses differing is `scaled`; any other field is `updated`; both bump the version."""
        store.put_template(template("web", numprocesses=2))
        scaled = store.put_template(template("web", numprocesses=5))
        assert (scaled.kind, scaled.version, scaled.previous.numprocesses) == ("scaled", 2, 2)
        updated = store.put_template(template("web", numprocesses=5, env={"A": "1"}))
        assert (updated.kind, updated.version) == ("updated", 3)
        both = store.put_template(template("web", numprocesses=1, env={"A": "2"}))
        assert (both.kind, both.version) == ("updated", 4)

    def test_stored_template_round_trips_every_field(self, store):
        """A template with nested fields comes back equal to what was put."""
        rich = template(
            "rich", args=["a b", "c"], env={"K": "v"}, uid=0, cwd="/tmp", shell=False, numprocesses=3,
            graceful_timeout=2.5, stop_signal="INT", restart="on-failure", exitcodes=[0, 3],
            flapping={"attempts": 2, "window": 5, "retry_in": 1, "max_retry": -1},
            redirect_output=["err"], redirect_input=True, log={"dir": "/var/log/x", "backups": 2},
            placement={"max_per_node": 2, "nodes": ["n1", "n2"], "labels": {"zone": "a"}},
            update={"max_unavailable": 2},
        )
        store.put_template(rich)
        assert store.get_template("rich").template == rich
        store.put_template(template("plain", flapping=False))
        assert store.get_template("plain").template.flapping is None

    def test_set_count_scales_and_keeps_the_rest_of_the_spec(self, store):
        """set_count changes numprocesses only, `scaled` with a new version, `unchanged` when equal."""
        store.put_template(template("web", numprocesses=2, env={"A": "1"}))
        change = store.set_count("web", 7)
        assert (change.kind, change.version) == ("scaled", 2)
        stored = store.get_template("web")
        assert (stored.template.numprocesses, stored.template.env, stored.version) == (7, {"A": "1"}, 2)
        assert store.set_count("web", 7).kind == "unchanged"
        assert store.get_template("web").version == 2

    def test_set_count_refuses_a_negative_count_naming_the_field(self, store):
        """A bad count is an InvalidRequest that names numprocesses."""
        store.put_template(template("web"))
        with pytest.raises(InvalidRequest, match="numprocesses"):
            store.set_count("web", -1)

    def test_paused_flag_round_trips_without_a_new_version(self, store):
        """Pausing reports whether it changed anything and keeps the version."""
        store.put_template(template("web"))
        assert store.set_paused("web", True) is True
        assert store.set_paused("web", True) is False
        stored = store.get_template("web")
        assert (stored.paused, stored.version) == (True, 1)
        assert store.put_template(template("web", numprocesses=4)).kind == "scaled"
        assert store.get_template("web").paused is True

    def test_timestamps_record_creation_and_last_change(self, store):
        """created_at stays; updated_at moves on a change and not on an unchanged put."""
        store.put_template(template("web"))
        first = store.get_template("web")
        store.put_template(template("web"))
        assert store.get_template("web").updated_at == first.updated_at
        store.set_count("web", 3)
        later = store.get_template("web")
        assert later.created_at == first.created_at
        assert later.updated_at > first.updated_at

    def test_templates_lists_all_by_name_and_delete_forgets(self, store):
        """templates() lists by name; delete_template removes one."""
        for name in ("b", "a", "c"):
            store.put_template(template(name))
        assert [s.name for s in store.templates()] == ["a", "b", "c"]
        store.delete_template("b")
        assert [s.name for s in store.templates()] == ["a", "c"]

    def test_a_deleted_template_is_created_again_at_version_one(self, store):
        """Re-applying after delete starts a new history."""
        store.put_template(template("web"))
        store.set_count("web", 4)
        store.delete_template("web")
        assert store.put_template(template("web")).version == 1

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.get_template("nope"),
            lambda s: s.set_count("nope", 1),
            lambda s: s.set_paused("nope", True),
            lambda s: s.delete_template("nope"),
            lambda s: s.save_placement({("nope", 1): "n1"}),
            lambda s: s.mark_failed("nope", 1, "n1"),
        ],
        ids=["get", "set_count", "set_paused", "delete", "save_placement", "mark_failed"],
    )
    def test_unknown_template_raises_template_not_found(self, store, call):
        """Every call naming a template that does not exist raises TemplateNotFound."""
        with pytest.raises(TemplateNotFound, match="nope"):
            call(store)

    def test_stored_template_that_no_longer_validates_is_reported_by_name(self, tmp_path):
        """A stored spec that fails validation raises ConfigError naming it; delete still works."""
        data = tmp_path / "data"
        with Store(data) as store:
            store.put_template(template("web"))
            store.put_template(template("ok"))
        with raw(data) as conn:
            conn.execute("UPDATE templates SET spec = ? WHERE name = 'web'", ('{"cmd": 5}',))
        with Store(data) as store:
            with pytest.raises(ConfigError, match=r"'web'.*cmd"):
                store.templates()
            with pytest.raises(ConfigError, match="'web'"):
                store.get_template("web")
            assert store.put_template(template("web")).kind == "updated"
            store.delete_template("web")
            assert [s.name for s in store.templates()] == ["ok"]


class TestBatch:
    def test_put_templates_stores_a_whole_batch_and_reports_each(self, store):
        """One call creates, updates and leaves alone, with the committed record in each Change."""
        store.put_templates([template("web"), template("db", numprocesses=2)])
        changes = store.put_templates([
            template("web", env={"A": "1"}), template("db", numprocesses=2), template("new"),
        ])
        assert [(c.name, c.kind, c.version) for c in changes] == [
            ("web", "updated", 2), ("db", "unchanged", 1), ("new", "created", 1),
        ]
        for change in changes:
            assert change.stored == store.get_template(change.name)

    def test_a_batch_that_fails_midway_stores_nothing(self, store):
        """A template that cannot be stored undoes the ones before it in the same call."""
        store.put_template(template("web"))
        with pytest.raises(InvalidRequest, match="'web' appears more than once"):
            store.put_templates([template("a"), template("web", numprocesses=3), template("web")])
        assert [s.name for s in store.templates()] == ["web"]
        assert store.get_template("web").version == 1

    def test_a_new_launch_spec_forgets_failures_a_count_change_keeps_them(self, store):
        """Failures go with a new spec in the apply's transaction; scaling keeps them."""
        store.put_templates([template("web", numprocesses=2), template("db")])
        store.mark_failed("web", 1, "n1")
        store.mark_failed("db", 1, "n1")
        store.put_templates([template("web", numprocesses=5), template("db", args=["1"])])
        assert store.failed() == {("web", 1): frozenset({"n1"})}


class TestNodeFlagsAndGenerations:
    def test_set_node_flags_sets_both_in_one_call(self, store):
        """Drain is cordon plus draining, stored together; None leaves a flag alone."""
        assert store.set_node_flags("n1", cordoned=True, draining=True) is True
        assert store.set_node_flags("n1", cordoned=True) is False
        assert store.set_node_flags("n1", cordoned=False, draining=None) is True
        [node] = store.nodes()
        assert (node.cordoned, node.draining) == (False, True)

    def test_next_generation_goes_above_what_the_node_reports(self, store):
        """After a restore the stored generation is behind the agent's: the floor wins, then counting goes on."""
        assert store.next_generations(["n1", "n2"]) == {"n1": 1, "n2": 1}
        assert store.next_generations(["n1", "n2"], {"n1": 40, "n2": 0}) == {"n1": 41, "n2": 2}
        assert store.next_generations(["n1"], {"n1": 3}) == {"n1": 42}


class TestNodes:
    def test_put_node_records_labels_agent_and_first_seen(self, store):
        """A registering node gets first_seen = last_seen = now; a later put keeps first_seen."""
        first = store.put_node("n1", {"zone": "a"}, "agent-1")
        assert (first.labels, first.agent_id) == ({"zone": "a"}, "agent-1")
        assert (first.first_seen, first.last_seen) == (1000.0, 1000.0)
        second = store.put_node("n1", {"zone": "b"}, "agent-2")
        assert (second.labels, second.agent_id) == ({"zone": "b"}, "agent-2")
        assert (second.first_seen, second.last_seen) == (1000.0, 1001.0)
        assert store.nodes() == [second]

    def test_cordon_and_drain_of_an_unregistered_node_are_stored_ahead(self, store):
        """Flags set before a node registers survive its registration."""
        assert store.set_cordoned("n1", True) is True
        assert store.set_draining("n1", True) is True
        [ahead] = store.nodes()
        assert (ahead.cordoned, ahead.draining, ahead.first_seen, ahead.last_seen) == (True, True, None, None)
        node = store.put_node("n1", {}, "agent-1")
        assert (node.cordoned, node.draining, node.first_seen) == (True, True, 1000.0)

    def test_flags_report_whether_they_changed(self, store):
        """Setting a flag to its current value changes nothing and says so."""
        store.put_node("n1", {}, "a")
        assert store.set_cordoned("n1", False) is False
        assert store.set_cordoned("n1", True) is True
        assert store.set_cordoned("n1", True) is False
        assert store.set_draining("n1", True) is True
        assert store.set_cordoned("n1", False) is True
        [node] = store.nodes()
        assert (node.cordoned, node.draining) == (False, True)

    def test_uncordoning_an_unknown_node_stores_nothing(self, store):
        """Clearing a flag nobody set does not invent a node record."""
        assert store.set_draining("ghost", False) is False
        assert store.nodes() == []

    def test_touch_node_moves_last_seen_of_registered_nodes_only(self, store):
        """touch_node updates last_seen; a node that never registered is not touched."""
        store.put_node("n1", {}, "a")
        store.set_cordoned("n2", True)
        assert store.touch_node("n1", 5000.0) is True
        assert store.touch_node("n2", 5000.0) is False
        assert store.touch_node("n3", 5000.0) is False
        store.touch_nodes({"n1": 6000.0, "n2": 6000.0})
        assert {n.name: n.last_seen for n in store.nodes()} == {"n1": 6000.0, "n2": None}

    def test_bad_node_labels_are_refused_naming_the_node(self, store):
        """Labels must be string pairs."""
        with pytest.raises(InvalidRequest, match="'n1'"):
            store.put_node("n1", {"zone": 3}, "a")


class TestPlacement:
    def test_save_placement_sets_moves_and_removes_slots(self, store):
        """A node name places a slot, another name moves it, None removes it."""
        store.put_template(template("web", numprocesses=3))
        store.put_template(template("db"))
        store.save_placement({("web", 1): "n1", ("web", 2): "n2", ("web", 3): "n1", ("db", 1): "n3"})
        store.save_placement({("web", 2): "n1", ("web", 3): None, ("web", 9): None})
        assert store.placement() == {("web", 1): "n1", ("web", 2): "n1", ("db", 1): "n3"}

    def test_a_batch_with_an_unknown_template_applies_nothing(self, store):
        """The batch is one transaction: one bad slot and none of it is stored."""
        store.put_template(template("web"))
        with pytest.raises(TemplateNotFound):
            store.save_placement({("web", 1): "n1", ("nope", 1): "n1"})
        assert store.placement() == {}

    def test_bad_ordinal_is_refused(self, store):
        """Ordinals start at 1."""
        store.put_template(template("web"))
        with pytest.raises(InvalidRequest, match="ordinal"):
            store.save_placement({("web", 0): "n1"})

    def test_deleting_a_template_drops_its_placement_and_failures(self, store):
        """Slots and failures go with their template; others stay."""
        store.put_template(template("web"))
        store.put_template(template("db"))
        store.save_placement({("web", 1): "n1", ("db", 1): "n2"})
        store.mark_failed("web", 1, "n1")
        store.mark_failed("db", 1, "n1")
        store.delete_template("web")
        assert store.placement() == {("db", 1): "n2"}
        assert store.failed() == {("db", 1): frozenset({"n1"})}
        store.save_placement({("web", 1): None})

    def test_a_thousand_slot_batch_round_trips(self, store):
        """A large batch lands whole."""
        store.put_template(template("web", numprocesses=1000))
        batch = {("web", i): f"n{i % 7}" for i in range(1, 1001)}
        store.save_placement(batch)
        assert store.placement() == batch


class TestFailures:
    def test_failures_accumulate_per_ordinal_and_clear(self, store):
        """mark_failed collects nodes per ordinal; clear_failed forgets one ordinal or all."""
        store.put_template(template("web", numprocesses=3))
        assert store.mark_failed("web", 1, "n1") is True
        assert store.mark_failed("web", 1, "n1") is False
        store.mark_failed("web", 1, "n2")
        store.mark_failed("web", 2, "n1")
        assert store.failed() == {("web", 1): frozenset({"n1", "n2"}), ("web", 2): frozenset({"n1"})}
        assert store.clear_failed("web", 1) == 2
        assert store.failed() == {("web", 2): frozenset({"n1"})}
        store.mark_failed("web", 3, "n2")
        assert store.clear_failed("web") == 2
        assert store.failed() == {}

    def test_clearing_failures_of_an_unknown_template_is_a_no_op(self, store):
        """Forgetting is idempotent: after delete_template, clear_failed gives 0 instead of raising."""
        store.put_template(template("web"))
        store.mark_failed("web", 1, "n1")
        store.delete_template("web")
        assert store.clear_failed("web") == 0
        assert store.clear_failed("nope", 2) == 0


class TestGenerations:
    def test_generations_increase_per_node_across_reopen(self, tmp_path):
        """Each node's generation is strictly increasing, also after close and reopen."""
        with Store(tmp_path) as store:
            assert [store.next_generation("n1") for _ in range(3)] == [1, 2, 3]
            assert store.next_generation("n2") == 1
        with Store(tmp_path) as store:
            assert store.next_generation("n1") == 4
            assert store.next_generations(["n1", "n2", "n3"]) == {"n1": 5, "n2": 2, "n3": 1}
            assert store.generations() == {"n1": 5, "n2": 2, "n3": 1}


class TestReopen:
    def test_everything_survives_close_and_reopen(self, tmp_path):
        """A reopened Store holds exactly what the closed one acknowledged."""
        with Store(tmp_path) as store:
            store.put_template(template("web", numprocesses=3, env={"A": "1"}))
            store.set_paused("web", True)
            store.put_template(template("db"))
            store.set_count("db", 2)
            store.put_node("n1", {"zone": "a"}, "agent-1")
            store.set_cordoned("n2", True)
            store.save_placement({("web", 1): "n1", ("db", 2): "n1"})
            store.mark_failed("web", 2, "n2")
            store.next_generation("n1")
            before = store_writer.snapshot(store)
            stamps = [(s.created_at, s.updated_at) for s in store.templates()]
        with Store(tmp_path) as store:
            assert store_writer.snapshot(store) == before
            assert [(s.created_at, s.updated_at) for s in store.templates()] == stamps
            assert store.schema_version() == SCHEMA_VERSION

    def test_database_is_in_wal_mode_with_foreign_keys(self, tmp_path):
        """The file is WAL (persistent) and private to its owner."""
        Store(tmp_path).close()
        with raw(tmp_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert (tmp_path / DB_NAME).stat().st_mode & 0o077 == 0

    def test_data_dir_and_lock_are_private_from_creation(self, tmp_path):
        """A data dir the Store creates is 0700 and its lock file 0600, whatever the umask."""
        old = os.umask(0)
        try:
            Store(tmp_path / "data").close()
        finally:
            os.umask(old)
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "data" / "controller.lock").stat().st_mode & 0o777 == 0o600

    def test_using_a_closed_store_is_an_error(self, tmp_path):
        """After close, calls fail loudly instead of reopening anything."""
        store = Store(tmp_path)
        store.close()
        store.close()
        with pytest.raises(RuntimeError, match="closed"):
            store.templates()


def _add_notes_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE templates ADD COLUMN notes TEXT NOT NULL DEFAULT ''")


def _broken_step(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE no_such_table ADD COLUMN x TEXT")


def _columns(data_dir: Path) -> list[str]:
    with raw(data_dir) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(templates)")]


class TestMigrations:
    def test_an_empty_version_zero_database_is_migrated(self, tmp_path):
        """An existing empty file (version 0) gets the whole schema."""
        (tmp_path / DB_NAME).touch()
        with Store(tmp_path) as store:
            assert store.schema_version() == SCHEMA_VERSION
            store.put_template(template("web"))

    def test_an_older_database_is_migrated_keeping_its_rows(self, tmp_path):
        """Pending steps run and the version moves up; existing rows stay."""
        with Store(tmp_path) as store:
            store.put_template(template("web"))
        with raw(tmp_path) as conn:
            assert migrate(conn, tmp_path / DB_NAME, MIGRATIONS + (_add_notes_column,)) == SCHEMA_VERSION
            assert migrate(conn, tmp_path / DB_NAME, MIGRATIONS + (_add_notes_column,)) == SCHEMA_VERSION + 1
            assert conn.execute("SELECT name, notes FROM templates").fetchall() == [("web", "")]

    def test_a_failing_migration_leaves_the_database_as_it_was(self, tmp_path):
        """All steps are one transaction: a failure in the second undoes the first."""
        with Store(tmp_path) as store:
            store.put_template(template("web"))
        with raw(tmp_path) as conn:
            with pytest.raises(ConfigError, match=f"left at version {SCHEMA_VERSION}"):
                migrate(conn, tmp_path / DB_NAME, MIGRATIONS + (_add_notes_column, _broken_step))
        assert "notes" not in _columns(tmp_path)
        with Store(tmp_path) as store:
            assert store.schema_version() == SCHEMA_VERSION
            assert store.get_template("web").version == 1

    def test_a_newer_schema_version_is_refused(self, tmp_path):
        """A database from a newer gaffer is not opened, and is left untouched."""
        Store(tmp_path).close()
        with raw(tmp_path) as conn:
            migrate(conn, tmp_path / DB_NAME, MIGRATIONS + (_add_notes_column,))
        with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            Store(tmp_path)
        with raw(tmp_path) as conn:
            assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION + 1)

    def test_a_foreign_database_is_refused(self, tmp_path):
        """A SQLite file with tables but no gaffer schema version is not touched."""
        with raw(tmp_path) as conn:
            conn.execute("CREATE TABLE people (name TEXT)")
        with pytest.raises(ConfigError, match="not a gaffer database"):
            Store(tmp_path)

    def test_a_file_that_is_not_sqlite_is_refused(self, tmp_path):
        """Garbage in gaffer.db is StorageDamaged naming the file and the way out, not a traceback."""
        (tmp_path / DB_NAME).write_bytes(b"this is not a database at all" * 100)
        with pytest.raises(StorageDamaged, match=f"{DB_NAME} is damaged .*not using it.*gaffer-controller check"):
            Store(tmp_path)


class TestLock:
    def test_second_store_on_the_same_dir_is_refused_until_the_first_closes(self, tmp_path):
        """While one Store is open another on its dir raises ConfigError naming the holder's pid."""
        first = Store(tmp_path)
        with pytest.raises(ConfigError, match=f"in use: process {os.getpid()} holds"):
            Store(tmp_path)
        first.put_template(template("web"))
        first.close()
        with Store(tmp_path) as second:
            assert [s.name for s in second.templates()] == ["web"]

    def test_lock_is_not_inherited_by_processes_the_controller_spawns(self, tmp_path):
        """A child started while the Store is open (as `gaffer start` does) does not keep the dir locked."""
        store = Store(tmp_path)
        child = subprocess.Popen(["sleep", "300"], close_fds=False)
        try:
            store.close()
            Store(tmp_path).close()
        finally:
            child.kill()
            child.wait()

    def test_lock_of_another_process_names_it_and_dies_with_it(self, tmp_path):
        """A holder in another process is named; once it is SIGKILLed the dir opens without cleanup."""
        holder = spawn_writer("hold", tmp_path)
        try:
            assert LineReader(holder).line() == "locked"
            with pytest.raises(ConfigError, match=f"process {holder.pid} holds"):
                Store(tmp_path)
        finally:
            holder.kill()
            holder.wait()
        Store(tmp_path).close()


class TestCrashDurability:
    TOTAL = 1500
    ROUNDS = 6

    def test_every_acknowledged_change_survives_sigkill(self, tmp_path):
        """After SIGKILL at a random point the Store holds exactly the acked ops (maybe one more)."""
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        ops = store_writer.operations(seed, self.TOTAL)
        model = store_writer.Model()
        states = [model.snapshot()]
        for op in ops:
            model.apply(op)
            states.append(model.snapshot())
        done = 0
        for round_no in range(self.ROUNDS):
            acked = self._kill_after(tmp_path, seed, done, rng.randint(1, 40))
            label = f"seed {seed}, round {round_no}, {acked} acked"
            with Store(tmp_path) as store:
                found = store_writer.snapshot(store)
            with raw(tmp_path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], label
            candidates = [n for n in (acked, acked + 1) if n <= self.TOTAL and states[n] == found]
            assert candidates, f"{label}: the store matches neither {acked} nor {acked + 1} ops"
            done = candidates[-1]
            if done == self.TOTAL:
                break
        assert done > 0

    def _kill_after(self, data_dir: Path, seed: int, start: int, acks: int) -> int:
        """Run the writer from op ``start``, SIGKILL it after ``acks`` acks; the last op it acked."""
        child = spawn_writer("run", data_dir, seed, start, self.TOTAL)
        reader = LineReader(child)
        lines = []
        try:
            while len(lines) < acks and (line := reader.line()) is not None:
                lines.append(line)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        lines += reader.rest()
        stderr = child.stderr.read().decode()
        assert lines, f"the writer acked nothing: {stderr}"
        assert all(line.startswith("ack ") for line in lines), (lines, stderr)
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(start + 1, start + 1 + len(numbers))), numbers
        return numbers[-1]
