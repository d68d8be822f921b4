"""`gaffer start -c web=2,worker=1 -p BASE` on a Procfile whose web processes bind `$PORT`:
each instance gets its own port, as honcho gives them, and `gafferctl ps --json` shows it
(issue 9: "$PORT", "Concurrency and base port")."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gaffer.testing import pid_dead, interrupt

GAFFER = [sys.executable, "-m", "gaffer.cli"]
CTL = [sys.executable, "-m", "gaffer.cli.ctl"]
DEADLINE = 20.0


def free_base(offsets: tuple[int, ...]) -> int:
    """A loopback port ``base`` with ``base + offset`` free for every offset (bounded tries)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + max(offsets) > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for offset in offsets:
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free block of loopback ports")


def ps(env: dict[str, str]) -> list[dict] | None:
    done = subprocess.run([*CTL, "ps", "--json"], env=env, capture_output=True, text=True, timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else None


def ps_until(env: dict[str, str], predicate, what: str) -> list[dict]:
    """Poll `gafferctl ps --json` until ``predicate(rows)`` holds (bounded by DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    rows = None
    while time.monotonic() < deadline:
        rows = ps(env)
        if rows is not None and predicate(rows):
            return rows
        time.sleep(0.1)  # poll
    raise AssertionError(f"timed out waiting for {what}: last ps {rows}")


def test_each_instance_binds_its_own_port_from_p_and_ps_shows_it(tmp_path: Path) -> None:
    """-c web=2,worker=1 -p BASE: web.1 and web.2 serve HTTP on BASE and BASE+1 (no "Address
    already in use" crash loop), worker.1 gets BASE+100, and ps --json has each port."""
    base = free_base((0, 1, 100))
    (tmp_path / "Procfile").write_text(
        f"web: exec {sys.executable} -m http.server $PORT --bind 127.0.0.1\n"
        "worker: echo worker got $PORT; exec sleep 300\n"
    )
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    env.pop("PORT", None)
    log = tmp_path / "gaffer.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*GAFFER, "start", "--no-color", "--data-dir", str(tmp_path / "data"),
             "-c", "web=2,worker=1", "-p", str(base), str(tmp_path / "Procfile")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    pids: list[int] = []
    try:
        rows = ps_until(env, lambda rows: len(rows) == 3 and all(r["state"] == "running" for r in rows), "3 running")
        pids = [r["pid"] for r in rows]
        assert {r["id"]: r["port"] for r in rows} == {"web.1": base, "web.2": base + 1, "worker.1": base + 100}
        for port in (base, base + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
                assert answer.status == 200
        assert all(r["restarts"] == 0 for r in ps(env) or [])
    finally:
        interrupt(proc)
        for pid in pids:
            if pid and not pid_dead(pid):
                os.kill(pid, signal.SIGKILL)
    assert f"worker.1 | worker got {base + 100}" in " ".join(log.read_text().split())
