"""The command lines through click's CliRunner, where no controller is needed: help, bad arguments, keygen.

What needs a controller is in tests/integration/test_ctl.py. Nothing here serves: ``gaffer
start`` and ``run`` are stopped before their loop (``uvloop.run`` fails the test if reached),
and every gafferctl case fails before it makes a client.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from gaffer.agent import daemon as agent_daemon
from gaffer.cli import ctl
from gaffer.cli import start as gaffer_cli
from gaffer.controller import daemon as controller_daemon

PROGRAMS = {
    "gafferctl": ctl.main,
    "gaffer": gaffer_cli.main,
    "gaffer-agent": agent_daemon.main,
    "gaffer-controller": controller_daemon.main,
}
TEMPLATE = '[web]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n'


def _commands(name: str, command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...], click.Command]]:
    yield name, path, command
    if isinstance(command, click.Group):
        for sub_name, sub in sorted(command.commands.items()):
            yield from _commands(name, sub, (*path, sub_name))


COMMANDS = [case for name, program in PROGRAMS.items() for case in _commands(name, program)]


def invoke(program: click.Command, *args: str, **kwargs) -> Result:
    """Run ``program`` in this process; a traceback (an exception click did not handle) fails the test."""
    result = CliRunner().invoke(program, list(args), **kwargs)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r}") from result.exception
    assert "Traceback" not in result.output
    return result


def refused(program: click.Command, *args: str, code: int = 1) -> str:
    """The one line of stderr a refused command line gives, with exit status ``code``."""
    result = invoke(program, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(autouse=True)
def never_serve(monkeypatch):
    """Fail instead of starting gaffer's loop: these tests only take arguments."""

    def run(coro, **_):
        coro.close()
        raise AssertionError("a command got as far as serving")

    monkeypatch.setattr(gaffer_cli.uvloop, "run", run)


@pytest.fixture
def templates(tmp_path) -> Path:
    path = tmp_path / "gaffer.toml"
    path.write_text(TEMPLATE)
    return path


class TestHelp:
    @pytest.mark.parametrize(("program", "path", "command"), COMMANDS, ids=[" ".join([n, *p]) for n, p, _ in COMMANDS])
    def test_every_command_has_help(self, program, path, command):
        """`--help` of every command of every program: exit 0, its usage and the first line of its doc."""
        result = invoke(PROGRAMS[program], *path, "--help")
        assert result.exit_code == 0
        assert result.stdout.startswith("Usage: ")
        assert " ".join(path) in result.stdout.splitlines()[0]
        first = (command.help or "").strip().split("\n")[0]
        assert " ".join(first.split()) in " ".join(result.stdout.split())

    def test_gafferctl_lists_every_command(self):
        """`gafferctl --help` names each command the design lists."""
        listed = invoke(ctl.main, "--help").stdout
        for name in ("nodes", "apply", "templates", "get", "delete", "scale", "start", "stop", "restart", "ps",
                     "stats", "kill", "logs", "write", "events", "cordon", "uncordon", "drain", "node", "keygen",
                     "status", "run"):
            assert f"\n  {name} " in listed, name

    @pytest.mark.parametrize("program", ["gafferctl", "gaffer", "gaffer-agent"])
    def test_version(self, program):
        """`--version` prints the installed version and exits 0."""
        result = invoke(PROGRAMS[program], "--version")
        assert result.exit_code == 0 and "version" in result.stdout


class TestGafferctlArguments:
    @pytest.mark.parametrize(("args", "says"), [
        (["nope"], "No such command 'nope'"),
        (["get"], "Missing argument 'NAME'"),
        (["scale"], "Missing argument 'NAME=N|NAME=+N|NAME=-N...'"),
        (["apply"], "Missing argument 'FILES...'"),
        (["kill"], "Missing argument 'TARGET'"),
        (["write", "web.1"], "Missing argument 'DATA'"),
        (["node", "forget"], "Missing argument 'NAME'"),
        (["--timeout", "nan", "nodes"], "Invalid value for '--timeout': must be a finite number, got 'nan'"),
        (["--timeout", "0", "nodes"], "Invalid value for '--timeout': must be > 0, got 0"),
        (["--timeout", "1e9", "nodes"], "Invalid value for '--timeout': must be at most 86400, got 1e+09"),
        (["drain", "n1", "--wait", "-1"], "Invalid value for '--wait': must be >= 0, got -1"),
        (["logs", "web", "-n", "x"], "Invalid value for '-n' / '--lines': expected an integer, got 'x'"),
        (["logs", "web", "-n", "100001"], "Invalid value for '-n' / '--lines': must be at most 100000, got 100001"),
        (["events", "x" * 2000], "a topic prefix is at most"),
        (["events", "--since", "-1"], "Invalid value for '--since': must be >= 0, got -1"),
        (["events", "--since", "x"], "Invalid value for '--since': expected an integer, got 'x'"),
        (["nodes", "--bogus"], "No such option '--bogus'"),
    ])
    def test_usage_errors(self, args, says):
        """Missing arguments, unknown commands and options, bad numbers: exit 2 and a line naming the problem."""
        assert says in refused(ctl.main, *args, code=2)

    @pytest.mark.parametrize("item", ["web", "=3", "web=", "web3"])
    def test_scale_needs_name_equals_count(self, item):
        """`scale` refuses an item that is not NAME=N before asking the controller anything."""
        assert refused(ctl.main, "scale", item) == f"Error: expected NAME=N, NAME=+N or NAME=-N, got {item!r}"

    def test_a_key_needs_the_controllers_key(self, tmp_path):
        """`--key` without `--controller-key` (or the reverse) is one clear line."""
        says = "Error: --key and --controller-key go together (CURVE needs both)"
        assert refused(ctl.main, "--key", str(tmp_path / "a.key_secret"), "nodes") == says
        assert refused(ctl.main, "--controller-key", str(tmp_path / "c.key"), "status") == says

    def test_missing_or_wrong_key_files(self, tmp_path):
        """A key file that is not there, or a public key given as the secret, is named in one line."""
        invoke(ctl.main, "keygen", "me", "--dir", str(tmp_path))
        missing = refused(ctl.main, "--key", str(tmp_path / "no.key_secret"), "--controller-key", str(tmp_path / "me.key"), "nodes")
        assert missing == f"Error: {tmp_path / 'no.key_secret'}: no such key file"
        public = refused(ctl.main, "--key", str(tmp_path / "me.key"), "--controller-key", str(tmp_path / "me.key"), "nodes")
        assert public == f"Error: {tmp_path / 'me.key'}: holds no secret key (use the .key_secret file)"

    def test_apply_checks_its_files_first(self, tmp_path, templates):
        """`apply`: a missing file, an invalid template, or a name in two files is refused before any request."""
        assert str(tmp_path / "none.toml") in refused(ctl.main, "apply", str(tmp_path / "none.toml"))
        broken = tmp_path / "broken.toml"
        broken.write_text('[x]\ncmd = "a"\nnumprocesses = -2\n')
        assert "x.numprocesses: must be >= 0, got -2" in refused(ctl.main, "apply", str(broken))
        again = tmp_path / "again.toml"
        again.write_text(TEMPLATE)
        assert refused(ctl.main, "apply", str(templates), str(again)) == "Error: defined in more than one file: web"


class TestKeygen:
    def test_writes_a_key_pair(self, tmp_path):
        """`keygen NAME --dir DIR`: NAME.key, a private NAME.key_secret, and their paths and fingerprint printed."""
        result = invoke(ctl.main, "keygen", "node1", "--dir", str(tmp_path))
        assert result.exit_code == 0
        public, secret = tmp_path / "node1.key", tmp_path / "node1.key_secret"
        assert result.stdout.startswith(f"wrote {public} and {secret} (sha256:")
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert "secret-key" in secret.read_text() and "secret-key" not in public.read_text()

    def test_json_and_a_new_directory(self, tmp_path):
        """With --json: the paths and the fingerprint; a missing directory is created."""
        result = invoke(ctl.main, "--json", "keygen", "c1", "--dir", str(tmp_path / "keys" / "clients"))
        shown = json.loads(result.stdout)
        assert shown["public"] == str(tmp_path / "keys" / "clients" / "c1.key")
        assert shown["secret"] == str(tmp_path / "keys" / "clients" / "c1.key_secret")
        assert shown["fingerprint"].startswith("sha256:")

    def test_never_overwrites_and_checks_the_name(self, tmp_path):
        """A second keygen of a name is refused and leaves the key as it was; a bad name is refused."""
        invoke(ctl.main, "keygen", "k", "--dir", str(tmp_path))
        before = (tmp_path / "k.key_secret").read_bytes()
        assert refused(ctl.main, "keygen", "k", "--dir", str(tmp_path)) == (
            f"Error: {tmp_path / 'k.key'} already exists: refusing to overwrite a key"
        )
        assert (tmp_path / "k.key_secret").read_bytes() == before
        assert "key name '../k' is not valid" in refused(ctl.main, "keygen", "../k", "--dir", str(tmp_path))


class TestGafferArguments:
    @pytest.mark.parametrize(("args", "says"), [
        (["start", "-c", "web"], "Invalid value for --concurrency: expected NAME=COUNT, got 'web'"),
        (["start", "-c", "web=-1"], "Invalid value for --concurrency: web: the count must be a whole number 0..1,000,000, got 'web=-1'"),
        (["start", "-c", "web=1000001"], "web: the count must be at most 1,000,000"),
        (["start", "--max-per-template", "nan"], "Invalid value for '--max-per-template'"),
        (["start", "--event-buffer", "0"], "Invalid value for '--event-buffer'"),
        (["start", "--event-buffer", "10000001"], "Invalid value for '--event-buffer'"),
        (["run"], "Missing argument 'NAME'"),
    ])
    def test_usage_errors(self, args, says):
        """Bad -c values and limits: exit 2 with the option named."""
        assert says in refused(gaffer_cli.main, *args, code=2)

    def test_start_refuses_before_it_serves(self, tmp_path, templates, monkeypatch):
        """No file here, a missing file, an unknown -c template, a bad node name, TCP without keys: one line each."""
        empty = tmp_path / "empty"
        empty.mkdir()
        monkeypatch.chdir(empty)
        assert refused(gaffer_cli.main, "start") == (
            "Error: no template file given and none of gaffer.toml, Procfile, gaffer.json here"
        )
        assert str(tmp_path / "none.toml") in refused(gaffer_cli.main, "start", str(tmp_path / "none.toml"))
        unknown = refused(gaffer_cli.main, "start", str(templates), "-c", "ghost=1")
        assert unknown == f"Error: --concurrency: {templates} has no process type ghost (it has: web)"
        assert "node name 'bad name' is not valid" in refused(gaffer_cli.main, "start", str(templates), "--node", "bad name")
        insecure = refused(gaffer_cli.main, "start", str(templates), "--node", "n1", "--bind", "tcp://127.0.0.1:7000")
        assert insecure.startswith("Error: gaffer start would use tcp://127.0.0.1:7000 without encryption")

    def test_run_needs_a_template_of_the_file(self, templates):
        """`gaffer run NAME` for a name the file does not hold lists the ones it does."""
        says = refused(gaffer_cli.main, "run", "ghost", "-f", str(templates))
        assert says == f"Error: {templates}: no template named 'ghost' (have: web)"
