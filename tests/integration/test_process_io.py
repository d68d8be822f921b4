"""What an instance runs as and what flows in and out of it: identity, stdin, output, stats."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gaffer.agent.launch import build_launch
from gaffer.agent.manager import Manager
from gaffer.common.errors import InvalidRequest, StdinNotEnabled
from gaffer.testing import next_event, pid_dead, poll_until, template

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
async def manager():
    mgr = Manager(node="io-node")
    try:
        yield mgr
    finally:
        await mgr.shutdown()


@pytest.fixture
def open_dir():
    """A directory any user can write to (pytest's tmp_path parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="gaffer-test-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def running_pid(mgr: Manager, instance_id: str) -> int | None:
    for info in mgr.instances():
        if info["id"] == instance_id and info["state"] == "running":
            return info["pid"]
    return None


def nogroup() -> str:
    for name in ("nogroup", "nobody"):
        try:
            grp.getgrnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("this host has neither a nogroup nor a nobody group")


class TestIdentity:
    @needs_root
    async def test_runs_as_template_uid_and_its_primary_group(self, manager, open_dir):
        """uid = nobody: the process runs as nobody with nobody's primary group and HOME."""
        out = open_dir / "id"
        script = f'echo "$(id -u) $(id -g) $HOME $USER" > {out}; sleep 300'
        manager.add(template("who", cmd="sh", args=["-c", script], uid="nobody"))
        await poll_until(lambda: out.exists() and out.read_text().strip() != "")
        nobody = pwd.getpwnam("nobody")
        assert out.read_text().split() == [str(nobody.pw_uid), str(nobody.pw_gid), nobody.pw_dir, "nobody"]

    @needs_root
    async def test_gid_overrides_the_primary_group(self, manager, open_dir):
        """uid + gid: the process's group is the template's gid."""
        out = open_dir / "gid"
        group = nogroup()
        manager.add(template("grp", cmd="sh", args=["-c", f"id -g > {out}; sleep 300"], uid="nobody", gid=group))
        await poll_until(lambda: out.exists() and out.read_text().strip() != "")
        assert int(out.read_text()) == grp.getgrnam(group).gr_gid

    async def test_cwd_is_used_and_a_missing_one_is_reported(self, manager, tmp_path):
        """cwd sets the working directory; a missing cwd is a clear spawn error."""
        out = tmp_path / "pwd"
        manager.add(template("here", cmd="sh", args=["-c", f"pwd > {out}; sleep 300"], cwd=str(tmp_path)))
        await poll_until(lambda: out.exists() and out.read_text().strip() != "")
        assert out.read_text().strip() == str(tmp_path)
        sub = manager.bus.subscribe("proc.nowhere.exit")
        manager.add(template("nowhere", cwd=str(tmp_path / "missing")))
        event = await next_event(sub, "proc.nowhere.exit")
        assert "does not exist" in event.data["error"]


class TestStdin:
    async def test_write_reaches_stdin(self, manager, tmp_path):
        """Bytes written to an instance arrive on its stdin."""
        out = tmp_path / "got"
        manager.add(template("cat", cmd="sh", args=["-c", f"cat > {out}"], redirect_input=True))
        await poll_until(lambda: running_pid(manager, "cat.1") is not None)
        manager.write("cat.1", b"hello\nworld\n")
        await poll_until(lambda: out.exists() and out.read_bytes() == b"hello\nworld\n")

    async def test_write_without_redirect_input_is_refused(self, manager):
        """A template without redirect_input refuses stdin with a clear error."""
        manager.add(template("deaf"))
        await poll_until(lambda: running_pid(manager, "deaf.1") is not None)
        with pytest.raises(StdinNotEnabled, match="redirect_input"):
            manager.write("deaf.1", b"x")

    async def test_write_to_a_stopped_instance_is_refused(self, manager):
        """Writing to an instance that is not running says so."""
        manager.add(template("idle", cmd="sh", args=["-c", "exit 0"], restart="never", redirect_input=True))
        await manager.wait_until(lambda: manager.instances("idle")[0]["state"] == "exited", timeout=5)
        with pytest.raises(InvalidRequest, match="not running"):
            manager.write("idle.1", b"x")


class TestOutput:
    async def test_output_is_captured_into_ring_buffer_and_bus(self, manager):
        """stdout and stderr lines are kept per instance and published while subscribed."""
        sub = manager.bus.subscribe("output.talk.1.")
        script = "echo one; echo two >&2; echo three; sleep 300"
        manager.add(template("talk", cmd="sh", args=["-c", script]))
        seen = set()
        while len(seen) < 3:
            event = await next_event(sub, "output.talk.1.")
            seen.update((event.data["stream"], text) for text in event.data["text"].split("\n"))
        assert seen == {("out", "one"), ("err", "two"), ("out", "three")}
        lines = manager.output("talk.1")
        assert [ln.text for ln in lines if ln.stream == "out"] == ["one", "three"]
        assert [ln.text for ln in manager.output("talk.1", stream="err")] == ["two"]

    async def test_streams_not_redirected_go_nowhere(self, manager):
        """With redirect_output = [], the process has /dev/null, not a pipe."""
        manager.add(template("quiet", redirect_output=[]))
        await poll_until(lambda: running_pid(manager, "quiet.1") is not None)
        pid = running_pid(manager, "quiet.1")
        assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"

    async def test_output_after_exit_is_not_lost(self, manager):
        """Lines printed right before the process exits are still captured."""
        sub = manager.bus.subscribe("proc.last.exit")
        script = "for i in 1 2 3 4 5; do echo line$i; done"
        manager.add(template("last", cmd="sh", args=["-c", script], restart="never"))
        await next_event(sub, "proc.last.exit")
        assert [ln.text for ln in manager.output("last.1")] == [f"line{i}" for i in range(1, 6)]

    async def test_log_files_rotate_and_timestamp_lines(self, manager, tmp_path):
        """log.dir gets <id>.log with timestamped lines, rotated by size with backups."""
        script = "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; sleep 300"
        manager.add(template(
            "logger", cmd="sh", args=["-c", script],
            log={"dir": str(tmp_path), "max_bytes": 2048, "backups": 2},
        ))
        current = tmp_path / "logger.1.log"
        await poll_until(lambda: current.exists() and "line-199" in current.read_text())
        assert current.exists() and (tmp_path / "logger.1.log.1").exists()
        assert (tmp_path / "logger.1.log.2").exists() and not (tmp_path / "logger.1.log.3").exists()
        last = current.read_text().splitlines()[-1]
        stamp, stream, text = last.split(" ", 2)
        assert stamp.endswith("Z") and "T" in stamp and stream == "out" and text.startswith("line-199")
        assert current.stat().st_size <= 2048


class TestStats:
    async def test_stats_per_instance_and_summed_per_template(self, manager):
        """stats report cpu, mem, cmdline and children per instance, and sums."""
        script = "sleep 300 & wait"
        manager.add(template("st", cmd="sh", args=["-c", script], numprocesses=2))
        await poll_until(lambda: all(running_pid(manager, f"st.{n}") for n in (1, 2)))
        await poll_until(lambda: all(len(_children(running_pid(manager, f"st.{n}"))) == 1 for n in (1, 2)))
        report = await manager.stats("st")
        summary = report["st"]
        assert {i["id"] for i in summary["instances"]} == {"st.1", "st.2"}
        for item in summary["instances"]:
            assert item["cmdline"][:2] == ["sh", "-c"]
            assert item["mem"] > 0 and item["cpu"] >= 0
            assert len(item["children"]) == 1 and item["children"][0]["mem"] > 0
        total = sum(i["mem"] + sum(c["mem"] for c in i["children"]) for i in summary["instances"])
        assert summary["mem"] == total

    async def test_stats_of_a_busy_process_shows_cpu(self, manager):
        """A process spinning the CPU shows a non-zero cpu percentage."""
        manager.add(template("spin", cmd="sh", args=["-c", "while :; do :; done"]))
        await poll_until(lambda: running_pid(manager, "spin.1") is not None)
        report = await manager.stats("spin")
        assert report["spin"]["cpu"] > 5


def _children(pid: int | None) -> list[int]:
    import psutil

    if pid is None:
        return []
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


class TestOneOff:
    async def test_run_reports_exit_status_and_never_restarts(self, manager):
        """run spawns one process from the template and reports how it ended."""
        manager.add(template("job", cmd="sh", args=["-c", "echo done; exit 7"], numprocesses=0))
        inst = manager.run("job")
        status = await inst.done
        assert status.code == 7
        assert [ln.text for ln in manager.output(inst.id)] == ["done"]
        [row] = manager.instances("job")
        assert row["id"] == inst.id and row["state"] == "exited" and row["oneoff"]
        assert row["last_exit"] == {"status": 7, "signal": None}

    async def test_run_with_replacement_args(self, manager):
        """run ARGS replace the template's args for that one run."""
        manager.add(template("echoer", cmd="echo", args=["default"], numprocesses=0))
        inst = manager.run("echoer", ["custom", "words"])
        await inst.done
        assert [ln.text for ln in inst.output.tail()] == ["custom words"]

    async def test_oneoff_is_stopped_by_shutdown(self, manager):
        """A long one-off run does not outlive the Manager."""
        manager.add(template("long", numprocesses=0))
        inst = manager.run("long")
        pid = inst.pid
        await manager.shutdown()
        assert (await inst.done).signal is not None
        assert pid_dead(pid)


class TestLaunchForReal:
    def test_shell_receives_every_arg_intact(self) -> None:
        """Running the shell argv for real prints each arg exactly as given."""
        args = ["a b", "it's", 'say "hi"', "$literal", "back\\slash", "*", ""]
        t = template(cmd="printf '[%s]\\n'", shell=True, args=[a.replace("$", "$$") for a in args])
        spec = build_launch(t, 1, "n", {"PATH": os.defpath})
        result = subprocess.run(spec.argv, env=spec.env, capture_output=True, text=True, check=True)
        assert result.stdout.splitlines() == [f"[{a}]" for a in args]
