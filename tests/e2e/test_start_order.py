"""`gaffer start` on a TOML file with ``depends_on``: a database, a migration and web workers
start in that order on one host, and Ctrl-C stops them in reverse (issue 12, "Start order").
The processes record their own start, listen, done and stop times (tests/integration/marker.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gaffer.testing import free_port, poll_until

GAFFER = [sys.executable, "-m", "gaffer.cli"]
MARKER = Path(__file__).resolve().parents[1] / "integration" / "marker.py"


def marked(out: Path, name: str) -> float | None:
    path = out / name
    return float(path.read_text()) if path.exists() else None


def app(out: Path, port: int) -> str:
    run = f'cmd = "{sys.executable}"\nstartsecs = 0\n'
    return (
        f'[web]\n{run}args = ["{MARKER}", "{out}", "wait"]\nnumprocesses = 2\n'
        'depends_on = ["db", {name = "migrate", condition = "completed"}]\n\n'
        f'[migrate]\n{run}args = ["{MARKER}", "{out}", "job", "0.2"]\nrestart = "never"\ndepends_on = ["db"]\n\n'
        f'[db]\n{run}args = ["{MARKER}", "{out}", "serve", "0.5"]\nport = {port}\n'
        'health = {type = "tcp", port = "$PORT", interval = 0.1, timeout = 0.1, start_period = 30}\n'
    )


async def test_start_runs_db_then_migration_then_web_and_ctrl_c_stops_web_before_db(tmp_path):
    """db listens (ready) before the migration starts, the migration finishes before any web
    worker starts; on Ctrl-C both web workers have stopped before db is asked to stop."""
    out = tmp_path / "marks"
    out.mkdir()
    spec = tmp_path / "app.toml"
    spec.write_text(app(out, free_port()))
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", "--no-color", "--data-dir", str(tmp_path / "data"), str(spec),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")},
    )
    try:
        await poll_until(lambda: marked(out, "web.1.start") and marked(out, "web.2.start"), timeout=30,
                         what="both web workers started")
        db_listened, migrate_done = marked(out, "db.1.listen"), marked(out, "migrate.1.done")
        assert db_listened is not None and migrate_done is not None
        assert marked(out, "db.1.start") < db_listened < marked(out, "migrate.1.start") < migrate_done
        assert migrate_done < marked(out, "web.1.start") and migrate_done < marked(out, "web.2.start")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stops = {name: marked(out, f"{name}.stop") for name in ("web.1", "web.2", "db.1")}
    assert all(stops.values()), stops
    assert max(stops["web.1"], stops["web.2"]) < stops["db.1"]


async def test_a_cycle_in_the_file_is_refused_before_anything_starts(tmp_path):
    """gaffer start on a file whose templates depend on each other in a loop: refused with the
    cycle named and no traceback, before anything starts."""
    spec = tmp_path / "app.toml"
    spec.write_text(
        '[web]\ncmd = "sleep"\nargs = ["300"]\ndepends_on = ["api"]\n\n'
        '[api]\ncmd = "sleep"\nargs = ["300"]\ndepends_on = ["web"]\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", "--data-dir", str(tmp_path / "data"), str(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode != 0 and out == b""
    assert "api.depends_on: depends_on cycle: api -> web -> api" in err.decode()
    assert "Traceback" not in err.decode()


async def test_a_dependency_missing_from_the_file_is_refused(tmp_path):
    """gaffer start's file is the whole desired state: web on a db it does not define is
    refused before anything starts, naming the field."""
    spec = tmp_path / "app.toml"
    spec.write_text('[web]\ncmd = "sleep"\nargs = ["300"]\ndepends_on = ["db"]\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", "--data-dir", str(tmp_path / "data"), str(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode != 0 and out == b""
    assert "web.depends_on: 'db' is not a template" in err.decode()
