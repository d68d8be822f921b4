"""Issue 7, section 3: bad input to the real commands gives one clear line, never a traceback.

Each test runs `gafferctl`, `gaffer start`, `gaffer-controller` as an operator would, in a
subprocess with its own runtime directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gaffer.testing import free_port, pid_dead
from test_gaffer_start import GAFFER, cleanup, start_gaffer  # noqa: F401 (fixture)
from test_gafferctl import CTL, Ctl, gaffer  # noqa: F401 (fixture)

CONTROLLER = [str(Path(sys.executable).parent / "gaffer-controller")]
DEADLINE = 15.0


def run(cmd: list[str], tmp: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, code: int = 1) -> str:
    """The error line of a command that failed cleanly with ``code``."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr.strip().splitlines()[-1]


class TestEndpointsAndFiles:
    def test_controller_garbage_is_one_line(self, tmp_path):
        """gafferctl --controller garbage names the option and the accepted forms."""
        line = one_line_error(run(CTL, tmp_path, "--controller", "garbage", "nodes"))
        assert line == "Error: controller: 'garbage' is not an endpoint: use tcp://HOST:PORT or ipc://PATH"

    def test_keygen_into_an_unwritable_directory_is_one_line(self, tmp_path):
        """keygen --dir on a directory nobody may write (even root: /sys) fails cleanly, leaves nothing."""
        line = one_line_error(run(CTL, tmp_path, "keygen", "k", "--dir", "/sys/kernel"))
        assert line.startswith("Error: cannot write /sys/kernel/k.key_secret: ")
        assert not Path("/sys/kernel/k.key").exists()

    def test_controller_port_in_use_is_one_line(self, tmp_path):
        """gaffer-controller on a port another socket holds says so and exits 1."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            done = run(CONTROLLER, tmp_path, "--bind", f"tcp://127.0.0.1:{port}", "--insecure",
                       "--data-dir", str(tmp_path / "data"))
        line = one_line_error(done)
        assert f"tcp://127.0.0.1:{port}" in line and "in use" in line

    def test_controller_on_ipv6_loopback_answers(self, tmp_path):
        """--bind tcp://[::1]:PORT listens on IPv6 and gafferctl reaches it there."""
        port = free_port()
        endpoint = f"tcp://[::1]:{port}"
        env = {**os.environ, "GAFFER_RUNTIME_DIR": str(tmp_path / "run")}
        proc = subprocess.Popen(
            [*CONTROLLER, "--bind", endpoint, "--insecure", "--data-dir", str(tmp_path / "data")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                done = run(CTL, tmp_path, "--controller", endpoint, "--timeout", "1", "--json", "status")
                if done.returncode == 0:
                    break
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, done.stderr
            assert json.loads(done.stdout)["endpoint"] == endpoint
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)

    @pytest.mark.parametrize("name", ["deep.json", "deep.toml"])
    def test_gaffer_start_with_a_100000_level_file_is_one_line(self, tmp_path, name):
        """A template file nested 100,000 levels is refused before anything starts."""
        path = tmp_path / name
        prefix = "" if name.endswith("json") else "a = "
        path.write_text(prefix + "[" * 100_000 + "]" * 100_000)
        line = one_line_error(run(GAFFER, tmp_path, "start", "--data-dir", str(tmp_path / "d"), str(path)))
        assert line == f"Error: {path}: invalid {'JSON' if name.endswith('json') else 'TOML'}: nested too deeply (at most 32 levels)"

    def test_gaffer_start_with_a_bad_node_name_is_one_line(self, tmp_path):
        """--node with a dot would never say hello (the wire refuses it): refused at once."""
        path = tmp_path / "gaffer.toml"
        path.write_text('[web]\ncmd = "sleep"\nargs = ["300"]\n')
        line = one_line_error(run(GAFFER, tmp_path, "start", "--node", "a.b", "--data-dir", str(tmp_path / "d"), str(path)))
        assert line.startswith("Error: node name 'a.b' is not valid: use letters, digits")

    def test_gaffer_controller_with_a_100000_level_config_is_one_line(self, tmp_path):
        """A daemon config file nested 100,000 levels is refused in one line."""
        path = tmp_path / "c.toml"
        path.write_text("heartbeat = " + "[" * 100_000 + "]" * 100_000)
        line = one_line_error(run(CONTROLLER, tmp_path, "--config", str(path)))
        assert line == f"Error: {path}: invalid TOML: nested too deeply (at most 32 levels)"


class TestNumbersOnTheCommandLine:
    @pytest.mark.parametrize(("cmd", "args", "option"), [
        (CTL, ("--timeout", "nan", "nodes"), "--timeout"),
        (CTL, ("--timeout", "inf", "nodes"), "--timeout"),
        (CTL, ("drain", "n1", "--wait", "nan"), "--wait"),
        (CTL, ("logs", "web", "-n", "99999999999"), "-n"),
        (CONTROLLER, ("--heartbeat", "inf"), "--heartbeat"),
        (CONTROLLER, ("--node-grace", "nan"), "--node-grace"),
        (CONTROLLER, ("--startup-grace", "-inf"), "--startup-grace"),
        (CONTROLLER, ("--down-misses", "9" * 100), "--down-misses"),
        (CONTROLLER, ("--max-per-template", "0"), "--max-per-template"),
        (GAFFER, ("start", "-c", "web=9223372036854775807"), "--concurrency"),
    ])
    def test_nan_infinite_and_huge_options_are_usage_errors(self, tmp_path, cmd, args, option):
        """Every float and int option refuses NaN, infinities and huge values with exit 2."""
        line = one_line_error(run(cmd, tmp_path, *args), code=2)
        assert line.startswith("Error: Invalid value for") and option in line


class TestAgainstGafferStart:
    def test_bad_counts_names_and_nodes_are_one_line_and_change_nothing(self, gaffer):  # noqa: F811
        """Huge counts, unknown or huge nodes and bad names are refused; the state stays."""
        before = gaffer.json("templates")
        node = gaffer.json("nodes")[0]["name"]
        cases = [
            (("scale", "web=9223372036854775807"), "Error: bad count '9223372036854775807': at most 1,000,000 instances"),
            (("scale", "web=200000"), "Error: web: 200,000 instances is over the limit of 100,000 per template (--max-per-template)"),
            (("cordon", "ghost"), "Error: no node named 'ghost' (see `gafferctl nodes`)"),
            (("drain", "n" * 60_000), "Error: argument 'node': a string of 60000 characters is not a node name"),
            (("node", "forget", node), f"Error: node '{node}' is up: only a node that is down can be forgotten"),
            (("get", "a.b"), "Error: argument 'name': 'a.b' is not a template name"),
        ]
        for args, expected in cases:
            assert one_line_error(gaffer.run(*args, check=False)).startswith(expected)
        assert gaffer.json("templates") == before
        assert [n["name"] for n in gaffer.json("nodes")] == [node]


async def test_never_restart_spawn_failure_is_shown_once(tmp_path, cleanup):  # noqa: F811
    """restart = "never" with a missing binary: exited, one console line, no retry."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[ghost]\ncmd = "/nonexistent/binary"\nrestart = "never"\n')
    started = await start_gaffer(tmp_path, str(spec))
    cleanup(started)
    await started.expect(r"ghost\.1 failed to start: command '/nonexistent/binary' not found")
    ctl = Ctl(tmp_path / "run")
    rows = ctl.until(lambda rows: rows and rows[0]["state"] == "exited", "ps", what="ghost.1 exited")
    assert rows[0]["pid"] is None
    started.proc.send_signal(signal.SIGINT)
    assert await started.finish() == 0
    output = "".join(started.lines)
    assert output.count("/nonexistent/binary") == 1, output


async def test_retried_spawn_failure_is_shown_once_then_counted(tmp_path, cleanup):  # noqa: F811
    """on-failure retries; the console shows the error once and the repeats as a count."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text(
        '[ghost]\ncmd = "/nonexistent/binary"\nrestart = "on-failure"\n'
        'flapping = { attempts = 4, window = 30, retry_in = 0, max_retry = 0 }\n'
    )
    started = await start_gaffer(tmp_path, str(spec))
    cleanup(started)
    await started.expect(r"ghost\.1 failed: flapping")
    started.proc.send_signal(signal.SIGINT)
    assert await started.finish() == 0
    output = "".join(started.lines)
    assert output.count("ghost.1 failed to start: command '/nonexistent/binary' not found\n") == 1, output
    assert output.count("(again, 3 times)") == 1, output
    assert all(pid_dead(pid) for pid in started.pids.values())
