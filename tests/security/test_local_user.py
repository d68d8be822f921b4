"""A local user who is not gaffer's can do nothing against the defaults.

Before this, `gaffer start` and a keyless controller listened on 127.0.0.1 and accepted any
local user: one `gafferctl apply` ran `id` as root. Here a real unprivileged user (created for
the test, removed after) attacks the default `gaffer start`, a default `gaffer-controller` with
a default `gaffer-agent`, and the agent's fd keeper: every attempt is refused by the file
system, and no gaffer process listens on TCP at all. The same attacks run as root succeed,
so the refusals are the protection, not a broken attack.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

ATTACKER = Path(__file__).with_name("attacker.py")
BIN = Path(sys.executable).parent
DEADLINE = 20.0


def _need_root_and_useradd() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates a user)"
    if not shutil.which("useradd") or not shutil.which("userdel"):
        return "needs useradd/userdel (passwd)"
    return None


pytestmark = pytest.mark.skipif(_need_root_and_useradd() is not None, reason=_need_root_and_useradd() or "")


@pytest.fixture
def intruder() -> Iterator[pwd.struct_passwd]:
    """A fresh system user with no home, no shell and no groups; removed, with anything it
    still runs, at the end."""
    name = f"gafprobe{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        user = pwd.getpwnam(name)
        for proc in psutil.process_iter(["uids"]):
            if proc.info["uids"] and proc.info["uids"].real == user.pw_uid:
                proc.kill()
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp dirs are private to root, which
    would hide a mistake of ours): only gaffer's modes can keep the intruder out."""
    base = Path(tempfile.mkdtemp(prefix="gaffer-sec-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def attack(user: pwd.struct_passwd | None, attacks: list[list[str]], groups: list[int] = ()) -> dict[str, str]:
    """Run the attacks as ``user`` (root when None) with these supplementary groups:
    {"kind target": outcome}."""
    uid, gid = (user.pw_uid, user.pw_gid) if user else (0, 0)
    done = subprocess.run(
        [sys.executable, str(ATTACKER), str(uid), str(gid), ",".join(map(str, groups)) or "-", json.dumps(attacks)],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    errors = [r for r in results if r["outcome"] == "error"]
    assert not errors, f"an attack failed for another reason than a refusal: {errors}"
    return {" ".join(r["attack"]): r["outcome"] for r in results}


def tcp_listeners(pid: int) -> list:
    proc = psutil.Process(pid)
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            found += [c for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return found


def gafferctl_json(env: dict[str, str], *args: str):
    done = subprocess.run(
        [sys.executable, "-m", "gaffer.cli.ctl", *args, "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # poll


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def stop(proc: subprocess.Popen, sig: int = 2) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_intruder_can_do_nothing_against_default_gaffer_start(intruder, world):
    """The default `gaffer start`: private sockets and data; on TCP only the HTTP API on
    loopback, which refuses every request without its token; every attack refused."""
    app = world / "app"
    app.mkdir(mode=0o755)
    (app / "gaffer.toml").write_text('[w]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n')
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(world / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaffer.cli", "start", "--no-color"], cwd=app, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (rows := gafferctl_json(env, "ps")) and rows[0]["state"] == "running", "w.1 running")
        run, data = world / "run", app / ".gaffer"
        assert mode(run) == 0o700 and mode(data) == 0o700 and mode(data / "gaffer.db") == 0o600
        listening = {(c.laddr.ip, c.laddr.port) for c in tcp_listeners(proc.pid)}
        assert listening <= {("127.0.0.1", 6080)}, listening
        status = gafferctl_json(env, "status")
        http_attacks = [["http_apply", status["http"]]] if status["http"] else []
        assert mode(data / "admin.token") == 0o600
        attacks = [
            ["read_file", str(data / "admin.token")],
            ["apply", f"ipc://{run}/control.sock"],
            ["connect_unix", f"{run}/control.sock"],
            ["connect_unix", f"{run}/events.sock"],
            ["list_dir", str(run)],
            ["list_dir", str(data)],
            ["read_file", str(data / "gaffer.db")],
        ]
        as_intruder = attack(intruder, attacks + http_attacks)
        assert set(as_intruder.values()) == {"denied"}, as_intruder
        assert set(attack(None, attacks).values()) == {"succeeded"}
        templates = gafferctl_json(env, "templates")
        assert [t["name"] for t in templates] == ["pwned", "w"]
    finally:
        stop(proc)


def test_intruder_can_do_nothing_against_default_controller_agent_and_keeper(intruder, world):
    """A keyless `gaffer-controller` and `gaffer-agent` with their defaults: the control and
    event sockets, the data and state dirs and the agent's fd keeper are all out of reach."""
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(world / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    data, state = world / "controller", world / "agent"
    controller = subprocess.Popen(
        [str(BIN / "gaffer-controller"), "--data-dir", str(data), "--startup-grace", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    agent = None
    try:
        wait_for(lambda: (world / "run" / "control.sock").exists(), "the control socket")
        agent = subprocess.Popen(
            [str(BIN / "gaffer-agent"), "--name", "probe", "--state-dir", str(state)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: (nodes := gafferctl_json(env, "nodes")) and nodes[0]["state"] == "up", "the agent up")
        wait_for(lambda: (state / "keeper.sock").exists(), "the keeper socket")
        run = world / "run"
        assert mode(run) == 0o700 and mode(data) == 0o700 and mode(state) == 0o700
        assert tcp_listeners(controller.pid) == [] and tcp_listeners(agent.pid) == []
        attacks = [
            ["apply", f"ipc://{run}/control.sock"],
            ["connect_unix", f"{run}/control.sock"],
            ["connect_unix", f"{run}/events.sock"],
            ["connect_unix", str(state / "keeper.sock")],
            ["list_dir", str(state)],
            ["read_file", str(data / "gaffer.db")],
        ]
        as_intruder = attack(intruder, attacks)
        assert set(as_intruder.values()) == {"denied"}, as_intruder
        assert attack(None, attacks[:1]) == {f"apply ipc://{run}/control.sock": "succeeded"}
    finally:
        if agent is not None:
            stop(agent, 3)
        stop(controller)


@pytest.fixture
def gaffer_group() -> Iterator[grp.struct_group]:
    """A fresh group for --socket-group, removed at the end."""
    name = f"gafgrp{secrets.token_hex(3)}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        yield grp.getgrnam(name)
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def test_socket_group_lets_its_members_in_and_nobody_else(intruder, world, gaffer_group):
    """--socket-group: the runtime dir is 0750 and the sockets 0660 for that group; a member
    can apply, the same user without the group cannot."""
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(world / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    controller = subprocess.Popen(
        [str(BIN / "gaffer-controller"), "--data-dir", str(world / "data"), "--socket-group", gaffer_group.gr_name],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        control = world / "run" / "control.sock"
        wait_for(lambda: control.exists() and control.stat().st_gid == gaffer_group.gr_gid, "the shared socket")
        assert mode(world / "run") == 0o750 and mode(control) == 0o660
        assert mode(world / "data") == 0o700
        attacks = [["apply", f"ipc://{control}"]]
        assert set(attack(intruder, attacks).values()) == {"denied"}
        assert set(attack(intruder, attacks, groups=[gaffer_group.gr_gid]).values()) == {"succeeded"}
    finally:
        stop(controller)
