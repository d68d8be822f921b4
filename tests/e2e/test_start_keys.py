"""`gaffer start` on TCP: the options its refusal names exist, and `--keys` serves CURVE (issue 9, item 4)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

from gaffer.common import keys
from test_gaffer_start import GAFFER, cleanup, isolated, start_gaffer  # noqa: F401 (cleanup: a fixture)

GAFFERCTL = [sys.executable, "-m", "gaffer.cli.ctl"]


async def test_tcp_refusal_names_only_options_gaffer_start_has(tmp_path):
    """`gaffer start --bind tcp://...` without keys names --keys and --insecure, not --controller."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[svc]\ncmd = "sleep"\nargs = ["300"]\n')
    proc = await asyncio.create_subprocess_exec(
        *GAFFER, "start", "--data-dir", str(tmp_path / "data"), "--bind", "tcp://0.0.0.0:*", str(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=isolated(tmp_path),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    text = err.decode()
    assert proc.returncode != 0 and out == b"" and "Traceback" not in text
    assert "--keys DIR" in text and "--insecure" in text and "--controller" not in text
    for option in ("--keys", "--insecure"):
        help_text = subprocess.run([*GAFFER, "start", "--help"], capture_output=True, text=True, timeout=15).stdout
        assert option in help_text


async def test_keys_serve_curve_to_authorized_clients(tmp_path, cleanup):  # noqa: F811
    """`gaffer start --keys DIR --bind tcp://...` runs its templates; a client key from DIR/clients works."""
    keydir = tmp_path / "keys"
    keys.generate(keydir, "controller")
    keys.generate(keydir / "clients", "admin")
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[svc]\ncmd = "sleep"\nargs = ["300"]\n')
    gaffer = await start_gaffer(tmp_path, "--keys", str(keydir), "--bind", "tcp://127.0.0.1:*", str(spec))
    cleanup(gaffer)
    endpoint = (await gaffer.expect(r"gafferctl --controller (tcp://127\.0\.0\.1:\d+) --controller-key")).group(1)
    await gaffer.expect(r"svc\.1 started")
    ctl = await asyncio.create_subprocess_exec(
        *GAFFERCTL, "--controller", endpoint, "--controller-key", str(keydir / "controller.key"),
        "--key", str(keydir / "clients" / "admin.key_secret"), "--json", "status",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=isolated(tmp_path),
    )
    out, err = await asyncio.wait_for(ctl.communicate(), 15)
    assert ctl.returncode == 0, err.decode()
    assert json.loads(out)["transport"] == "curve"
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0
