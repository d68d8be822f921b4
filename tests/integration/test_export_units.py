"""``gaffer export systemd`` units checked by systemd's own ``systemd-analyze verify`` (issue 9)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gaffer.cli import start

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (the unit tests parse the units)")
def test_exported_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every unit export writes (services with quotes, % and $PORT; targets) verifies clean."""
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(
        "web: python3 -m http.server $PORT --bind 127.0.0.1 # '50%' \"done\"\nworker: sleep 60\n"
    )
    (root / ".env").write_text("SECRET='a b\"c'\n")
    old = Path.cwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(start.main, ["export", "systemd", "units", "-c", "web=2"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    units = sorted(str(p) for p in (root / "units").iterdir() if p.suffix in (".service", ".target"))
    assert len(units) == 6
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert "WorkingDirectory" not in verify.stderr and "ExecStart" not in verify.stderr, verify.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (the unit tests parse the units)")
def test_units_with_depends_on_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """depends_on's After=/Wants=/Requires=, a oneshot job and a notify service verify clean,
    comments included."""
    (tmp_path / "gaffer.toml").write_text(
        '[db]\ncmd = "/bin/sleep"\nargs = ["60"]\nnotify = true\n'
        '[migrate]\ncmd = "/bin/true"\nrestart = "on-failure"\ndepends_on = ["db"]\n'
        '[web]\ncmd = "/bin/sleep"\nargs = ["60"]\nnumprocesses = 2\n'
        'depends_on = [{name = "db", condition = "started"}, {name = "migrate", condition = "completed"}]\n'
    )
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(start.main, ["export", "systemd", "units", "--app", "shop"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    units = sorted(str(p) for p in (tmp_path / "units").iterdir() if p.suffix in (".service", ".target"))
    assert len(units) == 8
    assert "Requires=shop-migrate-1.service" in (tmp_path / "units" / "shop-web-1.service").read_text()
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
