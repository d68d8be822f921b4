"""The fast spawn path (``os.posix_spawn``) gives a child what ``Popen`` gave it, and the
agent takes it for a plain template."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from gaffer.agent import spawning
from gaffer.agent.process import devnull

SH = "/bin/sh"


def run(argv: tuple[str, ...], env: dict[str, str] | None = None, cwd: str | None = None,
        uid: int | None = None) -> tuple[str, subprocess.Popen | None]:
    """Spawn through ``spawning.spawn`` with stdout on a pipe; its output, and the Popen if
    the slow path was taken."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    null = devnull()
    try:
        pid, popen = spawning.spawn(argv, env if env is not None else dict(os.environ),
                                    (null, write_end, null), cwd=cwd, uid=uid)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out, popen


def test_a_plain_spawn_takes_posix_spawn_and_leads_its_own_session() -> None:
    """No cwd, no user: posix_spawn (no Popen); the child leads a new session, as with Popen."""
    out, popen = run((SH, "-c", 'echo "$$ $(cut -d" " -f6 /proc/$$/stat)"'))
    pid, sid = out.split()
    assert popen is None
    assert pid == sid


def test_the_child_gets_only_its_standard_streams(tmp_path: Path) -> None:
    """A descriptor this process holds open and inheritable is not passed on (what Popen's
    close_fds did)."""
    leaked = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(leaked, True)
    spawning._sealed = False
    try:
        out, popen = run((SH, "-c", "ls /proc/$$/fd"))
    finally:
        os.close(leaked)
    assert popen is None
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2]


def test_ignored_signals_are_back_to_their_defaults_in_the_child() -> None:
    """SIGPIPE and SIGXFSZ, which Python ignores, are not ignored in the child (Popen's
    restore_signals)."""
    assert signal.getsignal(signal.SIGPIPE) is signal.SIG_IGN
    out, _ = run((SH, "-c", "grep SigIgn /proc/$$/status"))
    ignored = int(out.split()[1], 16)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (signum - 1)), signal.Signals(signum).name


def test_a_bare_name_is_looked_up_in_the_childs_path(tmp_path: Path) -> None:
    """The PATH of the child's environment finds the program, as Popen does, not the
    agent's own PATH."""
    tool = tmp_path / "only-here"
    tool.write_text("#!/bin/sh\necho found\n")
    tool.chmod(0o755)
    out, popen = run(("only-here",), env={"PATH": f"/nonexistent:{tmp_path}"})
    assert popen is None
    assert out == "found\n"


@pytest.mark.parametrize("name, setup, error", [
    ("missing", None, FileNotFoundError),
    ("not-executable", 0o644, PermissionError),
])
def test_a_program_that_cannot_run_fails_as_with_popen(tmp_path: Path, name, setup, error) -> None:
    """Not found on the PATH, or found but not executable: the errors Popen raises."""
    if setup is not None:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(setup)
    env = {"PATH": str(tmp_path)}
    with pytest.raises(error):
        subprocess.Popen((name,), env=env, stdout=subprocess.DEVNULL)
    with pytest.raises(error):
        spawning.spawn((name,), env, (devnull(),) * 3)
    with pytest.raises(error):
        spawning.spawn((str(tmp_path / name),), env, (devnull(),) * 3)


def test_another_working_directory_or_a_user_takes_popen(tmp_path: Path) -> None:
    """What posix_spawn cannot do here (chdir, switching users) goes through Popen; the
    agent's own working directory counts as none."""
    out, popen = run((SH, "-c", "pwd"), cwd=str(tmp_path))
    assert popen is not None and out.strip() == str(tmp_path)
    out, popen = run((SH, "-c", "pwd"), cwd=os.getcwd())
    assert popen is None and out.strip() == os.getcwd()
    out, popen = run((SH, "-c", "id -u"), uid=os.getuid())
    assert popen is not None and out.strip() == str(os.getuid())
