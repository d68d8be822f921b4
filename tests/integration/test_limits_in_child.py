"""A template's rlimits, umask and nice hold in its real process, read back from /proc; a
template without them still takes posix_spawn; what the host refuses fails the spawn clearly."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from gaffer.agent import childlimits, limitchain, spawning
from gaffer.agent.childlimits import CAP_SYS_NICE, CAP_SYS_RESOURCE, ChildLimits, read_privileges
from gaffer.agent.limitchain import Tools
from gaffer.agent.manager import Manager
from gaffer.agent.process import devnull
from gaffer.testing import next_event, poll_until, template

SLEEP = os.path.realpath("/bin/sleep")
SYSTEM_PYTHON = "/usr/bin/python3"
"""A python any user may run (the test venv's may live under a private home)."""


@pytest.fixture(params=["chain", "helper"])
def way(request, monkeypatch) -> str:
    """Each test that takes it runs twice: with the host's prlimit and setpriv (the chain) and
    as on a host without them (the execwrap helper)."""
    if request.param == "chain" and limitchain.system_tools().prlimit is None:
        pytest.skip("no prlimit on this host")
    if request.param == "helper":
        monkeypatch.setattr(spawning, "system_tools", Tools)
    return request.param


@pytest.fixture
async def manager():
    mgr = Manager(node="limits-node")
    try:
        yield mgr
    finally:
        await mgr.shutdown()


def running_pid(mgr: Manager, instance_id: str) -> int | None:
    for info in mgr.instances():
        if info["id"] == instance_id and info["state"] == "running":
            return info["pid"]
    return None


def execed(pid: int, program: str = SLEEP) -> bool:
    """Whether ``pid`` now runs ``program`` (after the helper's exec, if there is one)."""
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == program
    except OSError:
        return False


async def running_program(mgr: Manager, instance_id: str) -> int:
    await poll_until(lambda: running_pid(mgr, instance_id) is not None, what=f"{instance_id} running")
    pid = running_pid(mgr, instance_id)
    assert pid is not None
    await poll_until(lambda: execed(pid), what=f"{instance_id} exec'd")
    return pid


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """``/proc/<pid>/limits`` as {name: (soft, hard)}."""
    names = {"Max open files": "nofile", "Max processes": "nproc", "Max core file size": "core",
             "Max locked memory": "memlock", "Max address space": "as"}
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        for label, name in names.items():
            if line.startswith(label):
                soft, hard = line[len(label):].split()[:2]
                out[name] = (soft, hard)
    return out


def proc_umask(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return line.split()[1]
    raise AssertionError("no Umask line")


def proc_nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19 - 3])  # field 19 of stat(5), counted after pid and (comm)


class TestLimitsHold:
    async def test_rlimits_umask_and_nice_are_in_the_running_process(self, manager):
        """Every rlimit (single value, pair, unlimited), the umask and nice read back from /proc."""
        manager.add(template("lim", rlimits={
            "nofile": [512, 1024], "nproc": 4000, "core": 0, "memlock": [65536, 131072],
            "as": ["unlimited", "unlimited"],
        }, umask="027", nice=7))
        pid = await running_program(manager, "lim.1")
        assert proc_limits(pid) == {
            "nofile": ("512", "1024"), "nproc": ("4000", "4000"), "core": ("0", "0"),
            "memlock": ("65536", "131072"), "as": ("unlimited", "unlimited"),
        }
        assert proc_umask(pid) == "0027"
        assert proc_nice(pid) == 7

    async def test_a_umask_alone_is_set(self, manager):
        """umask without rlimits or nice (Popen's umask=): the process's Umask."""
        manager.add(template("masked", umask=0o077))
        pid = await running_program(manager, "masked.1")
        assert proc_umask(pid) == "0077"

    async def test_the_limits_hold_from_the_programs_start(self, manager, tmp_path):
        """The program's first look at its limits already sees them (no window without)."""
        out = tmp_path / "seen"
        script = f'grep "open files" /proc/$$$$/limits > {out}; grep Umask /proc/$$$$/status >> {out}; sleep 300'  # $$ is gaffer's literal $
        manager.add(template("early", cmd="sh", args=["-c", script], rlimits={"nofile": 300}, umask="002"))
        await poll_until(lambda: out.exists() and "Umask" in out.read_text())
        first, second = out.read_text().splitlines()
        assert first.split()[3:5] == ["300", "300"]
        assert second.split() == ["Umask:", "0002"]

    @pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
    async def test_limits_are_set_before_the_user_switch(self, manager):
        """As root with uid = nobody: a nice below 0 and a raised nofile still hold (set while
        the agent's privilege applies), and the process runs as nobody."""
        privileges = read_privileges()
        if not privileges.can(CAP_SYS_NICE):
            pytest.skip("needs CAP_SYS_NICE")
        hard = privileges.rlimits["nofile"][1]
        manager.add(template("low", uid="nobody", nice=-3, rlimits={"nofile": [16, hard]}))
        pid = await running_program(manager, "low.1")
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("nobody").pw_uid
        assert proc_nice(pid) == -3
        assert proc_limits(pid)["nofile"] == ("16", str(hard))


class TestSpawnUnchanged:
    async def test_a_template_without_limits_still_takes_posix_spawn(self, manager, monkeypatch):
        """No rlimits, umask or nice: the program itself is posix_spawn'ed (no helper, no Popen)."""
        calls = []
        real = os.posix_spawn

        def spy(path, argv, env, **kwargs):
            calls.append(os.fsdecode(path))
            return real(path, argv, env, **kwargs)

        monkeypatch.setattr(spawning.os, "posix_spawn", spy)
        monkeypatch.setattr(spawning.subprocess, "Popen", None)
        manager.add(template("plain"))
        await running_program(manager, "plain.1")
        assert len(calls) == 1 and os.path.realpath(calls[0]) == SLEEP
        manager.add(template("limited", rlimits={"core": 0}))
        await running_program(manager, "limited.1")
        assert os.fsdecode(calls[-1]) == (limitchain.system_tools().prlimit or sys.executable)

    def test_the_helper_keeps_argv_env_cwd_session_and_streams(self, tmp_path, way):
        """Through the chain or the helper: argv as given, the program found on the child's PATH, only the
        child's env, its cwd, a new session, and exactly fds 0, 1 and 2 (listed first, before
        the shell opens a pipe or redirection of its own)."""
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "only-here").symlink_to(os.path.realpath("/bin/sh"))
        script = ('ls /proc/$$/fd; echo --; tr "\\0" "|" < /proc/$$/cmdline; echo; pwd; '
                  'env | sort | tr "\\n" ,; echo; echo "$$ $(cut -d" " -f6 /proc/$$/stat)"')
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        env = {"PATH": f"/nonexistent:{tmp_path / 'bin'}:/usr/bin:/bin", "ONLY": "this é"}
        try:
            pid, popen = spawning.spawn(("only-here", "-c", script, "zero", "a b"), env,
                                        (devnull(), write_end, write_end), cwd=str(tmp_path),
                                        uid=os.getuid(), limits=ChildLimits(rlimits=(("core", 0, 0),)))
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            listing, _, rest = pipe.read().decode().partition("--\n")
        cmdline, cwd, seen_env, ids = rest.splitlines()
        os.waitpid(pid, 0)
        assert popen is None or way == "chain"
        assert cmdline == f"only-here|-c|{script}|zero|a b|"
        assert cwd == str(tmp_path)
        assert set(seen_env.strip(",").split(",")) == {f"PATH={env['PATH']}", "ONLY=this é", f"PWD={tmp_path}"}
        assert listing.split() == ["0", "1", "2"]
        child, session = ids.split()
        assert child == session == str(pid)


    def test_the_helper_leaves_signal_dispositions_as_the_fast_path_does(self, way):
        """Ignored, blocked and caught signals in the program are the same through the chain
        or the helper (Python's start-up ignores SIGPIPE/SIGXFSZ and catches SIGINT: all undone)."""
        def signals(limits: ChildLimits | None) -> list[str]:
            # exec: a forking sh blocks every signal around its fork, which grep would read
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            try:
                pid, _ = spawning.spawn(("/bin/sh", "-c", "exec grep -E '^Sig(Ign|Blk|Cgt)' /proc/$$/status"),
                                        {}, (devnull(), write_end, devnull()), limits=limits)
            finally:
                os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                out = pipe.read().decode().splitlines()
            os.waitpid(pid, 0)
            return out

        assert signals(ChildLimits(nice=1)) == signals(None)
        assert signals(ChildLimits(rlimits=(("core", 0, 0),), nice=1)) == signals(None)


class TestRefused:
    async def test_nofile_above_nr_open_fails_the_spawn(self, manager):
        """A nofile the kernel never grants is a spawn error naming rlimits.nofile."""
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        sub = manager.bus.subscribe("proc.big.exit")
        manager.add(template("big", rlimits={"nofile": nr_open + 1}))
        event = await next_event(sub, "proc.big.exit")
        assert "rlimits.nofile" in event.data["error"] and "fs.nr_open" in event.data["error"]

    async def test_a_hard_limit_above_the_agents_fails_without_privilege(self, manager):
        """Without CAP_SYS_RESOURCE, raising a hard limit is a spawn error that says so."""
        privileges = read_privileges()
        if privileges.can(CAP_SYS_RESOURCE):
            pytest.skip("this agent may raise hard limits")
        hard = privileges.rlimits["core"][1]
        if hard >= childlimits.INFINITE:
            hard = privileges.rlimits["nproc"][1]
            name = "nproc"
        else:
            name = "core"
        if hard >= childlimits.INFINITE:
            pytest.skip("no finite hard limit to go above")
        sub = manager.bus.subscribe("proc.high.exit")
        manager.add(template("high", rlimits={name: hard + 1}))
        event = await next_event(sub, "proc.high.exit")
        assert f"rlimits.{name}" in event.data["error"] and "CAP_SYS_RESOURCE" in event.data["error"]

    @pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                        reason="runs a non-root agent (as nobody, with the system's python3) through root")
    def test_a_negative_nice_fails_the_spawn_for_a_non_root_agent(self):
        """An agent running as nobody cannot lower nice: the spawn is refused, saying why; a
        higher nice it may set, and the child runs with it."""
        code = (
            "import os\n"
            "from gaffer.agent import spawning\n"
            "from gaffer.agent.childlimits import ChildLimits, NotGranted\n"
            "null = os.open('/dev/null', os.O_RDWR | os.O_CLOEXEC)\n"
            "env = {'PATH': '/usr/bin:/bin'}\n"
            "check = 'test $(cut -d\" \" -f19 /proc/$$/stat) = 5'\n"
            "pid, _ = spawning.spawn(('sh', '-c', check), env, (null,) * 3, limits=ChildLimits(nice=5))\n"
            "print('nice 5 exit', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
            "try:\n"
            "    spawning.spawn(('true',), env, (null,) * 3, limits=ChildLimits(nice=-5))\n"
            "except NotGranted as exc:\n"
            "    print('refused:', exc)\n"
        )
        root = str(Path(spawning.__file__).resolve().parents[2])
        done = subprocess.run([SYSTEM_PYTHON, "-c", code], user="nobody", extra_groups=[], cwd="/",
                              env={"PYTHONPATH": root}, capture_output=True, text=True, timeout=60)
        lines = done.stdout.splitlines()
        assert lines[0] == "nice 5 exit 0", done.stdout + done.stderr
        assert lines[1].startswith("refused: nice -5 is below") and "CAP_SYS_NICE" in lines[1]

    def test_the_helper_reports_a_refusal_it_meets_and_exits_127(self, monkeypatch, way):
        """If the host refuses anyway (the check bypassed), the helper says why on stderr and
        exits 127 (prlimit: 1) without running the program."""
        monkeypatch.setattr(spawning, "grant_problem", lambda *args: None)
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            pid, _ = spawning.spawn(("/bin/echo", "ran"), {}, (devnull(), write_end, write_end),
                                    limits=ChildLimits(rlimits=(("nofile", nr_open + 1, nr_open + 1),)))
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            out = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        if way == "helper":
            assert os.waitstatus_to_exitcode(status) == 127
            assert out.startswith("gaffer: rlimits.nofile: ") and "ran" not in out
        else:
            assert os.waitstatus_to_exitcode(status) == 1
            assert out.startswith("prlimit: failed to set the NOFILE resource limit") and "ran" not in out


def bytes_read(pid: int) -> int:
    """What ``pid`` has read with read(2) since its clone, across all its execs (``rchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar line")


PYTHON_START_UP_READS = 100_000
"""Python's start-up reads its standard library: over 300 kB even with ``-I -S``. prlimit,
setpriv and sleep read only their ELF headers and the loader's: under 20 kB together."""


def thread_nices() -> dict[str, int]:
    """Every thread of this process and its nice (threads are listed in /proc/self/task)."""
    return {tid: proc_nice_of(f"/proc/self/task/{tid}/stat") for tid in os.listdir("/proc/self/task")}


def proc_nice_of(path: str) -> int:
    stat = Path(path).read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19 - 3])


class TestNoPythonInTheChild:
    @pytest.mark.parametrize("settings", [
        {"rlimits": {"nofile": 1024, "core": 0}, "nice": 1},
        {"nice": 2},
        {"rlimits": {"core": 0}, "umask": "027", "cwd": "/"},
        {"rlimits": {"core": 0}, "uid": "nobody"},
    ], ids=["rlimits+nice", "nice", "rlimits+umask+cwd", "rlimits+uid"])
    async def test_the_child_runs_no_python_before_its_program(self, manager, settings):
        """With rlimits or nice, what the instance read before and in its program is a C
        program's few kB, not Python's start-up (the settings still hold)."""
        if "uid" in settings and (os.geteuid() != 0 or limitchain.system_tools().setpriv is None):
            pytest.skip("switching users needs root, and setpriv")
        if "rlimits" in settings and limitchain.system_tools().prlimit is None:
            pytest.skip("no prlimit on this host")
        manager.add(template("quick", **settings))
        pid = await running_program(manager, "quick.1")
        assert bytes_read(pid) < PYTHON_START_UP_READS
        assert proc_nice(pid) == settings.get("nice", 0)
        if "rlimits" in settings:
            assert proc_limits(pid)["core"] == ("0", "0")

    @pytest.mark.parametrize("reversible", [True, False], ids=["this-thread", "own-thread"])
    async def test_nice_is_set_on_the_spawning_thread_only(self, monkeypatch, reversible):
        """The child starts with the nice; every thread of the agent keeps its own (the loop's
        set back, or a spawning thread of its own that then leaves the process)."""
        if reversible and not limitchain.nice_reversible(9, read_privileges()):
            pytest.skip("this agent may not set its nice back from 9")
        monkeypatch.setattr(spawning, "nice_reversible", lambda nice, privileges: reversible)
        before = thread_nices()
        pid, popen = spawning.spawn((SLEEP, "30"), {}, (devnull(),) * 3, limits=ChildLimits(nice=9))
        try:
            assert popen is None
            assert proc_nice(pid) == 9
            after = thread_nices()
            assert {tid: after[tid] for tid in before if tid in after} == {
                tid: nice for tid, nice in before.items() if tid in after}
            await poll_until(lambda: 9 not in thread_nices().values(), what="the spawning thread gone")
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
