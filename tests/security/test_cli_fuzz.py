"""Fuzz every command-line argument and option: never a traceback, ever (issue 7).

Commands and their parameters are enumerated from the click groups (``gafferctl``, ``gaffer``,
``gaffer-controller``, ``gaffer-agent``), so a command added later is fuzzed without touching
this file. Values mix what an operator mistypes with what an attacker tries: random and
unicode text, text that was not UTF-8 (surrogates), empty strings, 60,000-character names,
huge and negative numbers, NaN and infinities, names of real templates and nodes.

``gafferctl`` runs in-process (click's CliRunner) against one real ``gaffer start`` per module;
the invariant: exit status 0, 1 or 2 and no traceback; afterwards the controller still answers
``status`` and its desired state changed only where a command that succeeded said it would.
The daemons and ``gaffer start``/``run`` are fuzzed up to the point where they would start
serving (``uvloop.run`` is replaced by a stub that returns at once): what is under test is
how they take their arguments; serving is covered by the e2e tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal as signals
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaffer.agent import daemon as agent_daemon
from gaffer.cli import ctl
from gaffer.cli import start as gaffer_cli
from gaffer.client import Client
from gaffer.common.errors import InvalidSignal
from gaffer.common.loaders import load_templates
from gaffer.common.params import SECONDS
from gaffer.common.signals import parse_signal
from gaffer.controller import daemon as controller_daemon

GAFFER = [sys.executable, "-m", "gaffer.cli"]
CTL = [sys.executable, "-m", "gaffer.cli.ctl"]
DEADLINE = 20.0
EXAMPLES = 25
WAIT_BOUND = 0.5
"""Seconds a fuzzed ``gafferctl wait`` may wait for a goal (see ``short_wait``)."""
STREAMING = {("events",)}
"""Commands that never end by themselves: fuzzed as subprocesses (``test_streaming_commands``)."""
PAUSING = {signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU}
MUTATING = {"apply", "delete", "scale", "start", "stop", "restart", "cordon", "uncordon", "drain", "forget"}
FILES = {
    "ok.toml": '[fz]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n',
    "gaffer.toml": '[fz]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n',
    "nan.toml": '[fz]\ncmd = "x"\ngraceful_timeout = nan\n',
    "big.toml": '[fz]\ncmd = "x"\nnumprocesses = 9223372036854775807\n',
    "deep.json": "[" * 5_000 + "]" * 5_000,
    "config.toml": "heartbeat = inf\n",
    "bad.key_secret": "not a key\n",
}

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
NUMBERS = st.sampled_from([
    "0", "1", "-1", "2", "+3", "-0", "0.5", "1e308", "1e-400", "nan", "NaN", "-nan", "inf",
    "-inf", "Infinity", "9223372036854775807", "18446744073709551616", "9" * 400, "1_000", "٣",
    "0x10", " 7 ", "",
])
ODD = st.sampled_from([
    "", " ", "-", "--", "\udcff", "caf\udce9", "x" * 65, "n" * 60_000, "a.b", "a..b", ".", "é",
    "web\n", "${HOME}", "$(id)", "%s%n", "\u202e", "\U0001f600",
])


def names(node: str) -> st.SearchStrategy[str]:
    real = st.sampled_from(["web", "job", "cat", node, "web.1", "web.2", "cat.1", "job.run-1", "ghost", "fz"])
    return st.one_of(real, real, ODD, TEXT, NUMBERS)


def path_text() -> st.SearchStrategy[str]:
    """Relative paths only (the tests run as root): crafted files, or ones that do not exist."""
    made = st.sampled_from(sorted(FILES))
    other = TEXT.map(lambda t: "fz-" + t.replace("..", "_").lstrip("/"))
    return st.one_of(made, other, st.just("."), st.just("fz-dir/"))


def value_for(param: click.Parameter, node: str) -> st.SearchStrategy[str]:
    """A strategy of one command-line value for ``param``, from its type and name."""
    kind = param.type
    if isinstance(kind, click.Path):
        return path_text()
    if isinstance(kind, click.Choice):
        return st.one_of(st.sampled_from(list(kind.choices)), ODD, TEXT)
    if kind.name in ("integer", "float", "seconds") or param.name in ("wait", "lines", "timeout"):
        return st.one_of(NUMBERS, ODD)
    if param.name == "counts" or param.name == "concurrency":
        count = st.one_of(NUMBERS, st.integers(0, 6).map(str))
        return st.builds(lambda n, c, sep: f"{n}{sep}{c}", names(node), count, st.sampled_from(["=", "=", "=+", "=-", ""]))
    if param.name == "signal":
        return st.one_of(st.sampled_from(["TERM", "HUP", "USR1", "KILL", "0", "65", "SIGTERM"]), NUMBERS, ODD, TEXT)
    if param.name == "labels":
        return st.builds(lambda k, v: f"{k}={v}", names(node), st.one_of(TEXT, ODD))
    return names(node)


def tokens_for(param: click.Parameter, node: str, skip: set[str]) -> st.SearchStrategy[list[str]]:
    """Tokens for one parameter: nothing, a flag, an option and its value(s), or arguments."""
    if param.name in skip or getattr(param, "hidden", False):
        return st.just([])
    if isinstance(param, click.Option):
        if param.is_flag or param.count:
            opts = [*param.opts, *param.secondary_opts]
            return st.one_of(st.just([]), st.sampled_from(opts).map(lambda o: [o]))
        if getattr(param, "is_eager", False) and param.name in ("version", "help"):
            return st.just([])
        many = st.lists(value_for(param, node), min_size=1, max_size=3 if param.multiple else 1)
        given = many.map(lambda vs: [t for v in vs for t in (param.opts[0], v)])
        return st.one_of(st.just([]), st.just([]), given)
    if param.nargs == -1:
        return st.lists(value_for(param, node), max_size=3)
    one = value_for(param, node).map(lambda v: [v])
    return one if param.required else st.one_of(st.just([]), one)


def argv(chain: list[click.Command], path: tuple[str, ...], node: str, skip: set[str]) -> st.SearchStrategy[list[str]]:
    """A whole command line below ``chain[0]``: each level's options, then its subcommand."""
    parts: list[st.SearchStrategy[list[str]]] = []
    for depth, command in enumerate(chain):
        options = [p for p in command.params if isinstance(p, click.Option)]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        opts = st.tuples(*(tokens_for(p, node, skip) for p in options)) if options else st.just(())
        args = st.tuples(*(tokens_for(p, node, skip) for p in arguments)) if arguments else st.just(())
        dashes = st.sampled_from([[], ["--"]]) if arguments else st.just([])
        level = st.tuples(opts, dashes, args).map(lambda t: [x for o in t[0] for x in o] + t[1] + [x for a in t[2] for x in a])
        parts.append(level)
        if depth < len(path):
            parts.append(st.just([path[depth]]))
    return st.tuples(*parts).map(lambda ps: [t for p in ps for t in p])


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[click.Command]]]:
    """(path, chain of commands from ``group`` down) for every command, groups included when
    they run by themselves."""
    if not path or getattr(group, "invoke_without_command", False):
        yield path, [group]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            for sub, chain in leaves(command, path + (name,)):
                yield sub, [group, *chain]
        else:
            yield path + (name,), [group, command]


def ctl_leaves() -> list[tuple[tuple[str, ...], list[click.Command]]]:
    found = []
    for path, chain in leaves(ctl.main):
        if not path or path in STREAMING:
            continue
        found.append((path, chain[1:]))
    return found


@contextlib.contextmanager
def scratch(root: Path) -> Iterator[None]:
    """Run in a fresh directory holding the crafted FILES (relative paths land here)."""
    here = os.getcwd()
    work = tempfile.mkdtemp(dir=root)
    try:
        os.chdir(work)
        for name, text in FILES.items():
            Path(name).write_text(text)
        yield
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)


def check_outcome(result, argv_used: list[str]) -> None:
    """The invariant: a clean exit status and never a traceback."""
    shown = [a if len(a) < 80 else f"<{len(a)} chars>" for a in argv_used]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown}: raised {result.exception!r}") from result.exception
    assert result.exit_code in (0, 1, 2), (shown, result.exit_code, result.output[-500:])
    assert "Traceback" not in result.output, (shown, result.output[-2000:])


# ------------------------------------------------------------------------- gafferctl


class World:
    """The running `gaffer start` and what the fuzz did to it."""

    def __init__(self, root: Path, env: dict[str, str], client: Client) -> None:
        self.root = root
        self.env = env
        self.client = client
        self.node = client.call("nodes")[0]["name"]
        self.touched: set[str] = set()

    def restore(self) -> None:
        """Back to the file's templates, running, on an uncordoned node (each command's fuzz
        starts from the same state, whatever the one before deleted or stopped)."""
        self.touched = set()
        call = self.client.call
        call("apply", templates=[t.to_dict() for t in load_templates(self.root / "gaffer.toml")])
        for name in ("web", "cat", "job"):
            call("start", name=name)
        call("uncordon", node=self.node)
        for name in {t["name"] for t in call("templates")} - {"web", "cat", "job"}:
            call("delete", name=name)

    def desired(self) -> dict[str, Any]:
        call = self.client.call
        templates = {t["name"]: (t["numprocesses"], t["paused"], t["version"]) for t in call("templates")}
        nodes = {f"node:{n['name']}": (n["cordoned"], n["draining"]) for n in call("nodes")}
        return {**templates, **nodes}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fuzz")
    spec = root / "gaffer.toml"
    spec.write_text(
        '[web]\ncmd = "sleep"\nargs = ["300"]\nstartsecs = 0\n\n'
        '[cat]\ncmd = "cat"\nredirect_input = true\nstartsecs = 0\n\n'
        '[job]\ncmd = "sh"\nargs = ["-c", "echo done"]\nnumprocesses = 0\nrestart = "never"\n'
    )
    env = {**os.environ, "GAFFER_RUNTIME_DIR": str(root / "run")}
    env.pop("GAFFER_CONTROLLER", None)
    proc = subprocess.Popen(
        [*GAFFER, "start", "--no-color", "--data-dir", str(root / "data"),
         "--max-per-template", "4", "--max-instances", "12", str(spec)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            done = subprocess.run([*CTL, "ps", "--json"], env=env, capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and sum(r["state"] == "running" for r in json.loads(done.stdout)) == 2:
                break
            assert proc.poll() is None and time.monotonic() < deadline, done.stderr
            time.sleep(0.05)  # poll
        with Client(f"ipc://{root}/run/control.sock", timeout=10.0) as client:
            yield World(root, env, client)
    finally:
        proc.send_signal(signals.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def runner(world) -> CliRunner:
    return CliRunner(env={"GAFFER_RUNTIME_DIR": world.env["GAFFER_RUNTIME_DIR"], "GAFFER_CONTROLLER": None})


def short_wait(args: list[str]) -> list[str]:
    """``wait``'s own --timeout at most WAIT_BOUND seconds, given when the fuzz left it out (the
    default is 60 s): a goal that is never reached ends quickly. Values the option refuses are
    kept, so their refusal is still fuzzed."""
    out = list(args)
    i, seen = 0, False
    while i < len(out) and out[i] != "--":
        if out[i] in ("--timeout", "--running") and i + 1 < len(out):
            if out[i] == "--timeout":
                seen = True
                with contextlib.suppress(click.BadParameter):
                    if SECONDS.convert(out[i + 1], None, None) > WAIT_BOUND:
                        out[i + 1] = str(WAIT_BOUND)
            i += 2
        else:
            i += 1
    return out if seen else ["--timeout", str(WAIT_BOUND), *out]


def safe(path: tuple[str, ...], args: list[str], node: str) -> list[str]:
    """Keep the fuzz from blocking or freezing its own target: no one-off of a long-running
    template, no drain of the real node (it would wait --wait seconds), no stop signals, no
    ``wait`` for longer than WAIT_BOUND seconds."""
    if path == ("wait",):
        args = short_wait(args)
    if path == ("run",):
        args = ["job" if a in ("web", "cat") else a for a in args]
    if path == ("drain",):
        args = [a if a != node else "ghost" for a in args]
    if path == ("kill",):
        out = []
        for a in args:
            try:
                pausing = parse_signal(a) in PAUSING
            except InvalidSignal:
                pausing = False
            out.append("TERM" if pausing else a)
        args = out
    return args


@pytest.mark.parametrize(("path", "chain"), ctl_leaves(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_gafferctl_command(world, runner, path, chain):
    """Every gafferctl command with fuzzed arguments and options: no traceback, clean status."""
    skip = {"follow"}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(argv(chain, path[1:], world.node, skip))
    def fuzz(args: list[str]) -> None:
        args = safe(path, args, world.node)
        full = ["--timeout", "5", *path[:1], *args]
        with scratch(world.root):
            result = runner.invoke(ctl.main, full, catch_exceptions=True)
        check_outcome(result, full)
        if result.exit_code == 0 and (set(path) & MUTATING):
            for arg in args:
                world.touched.add(arg.partition("=")[0])
                world.touched.add(f"node:{arg}")
            world.touched.add("fz")

    world.restore()
    before = world.desired()
    fuzz()
    after = world.desired()
    for key in set(before) | set(after):
        if before.get(key) != after.get(key):
            assert key in world.touched, f"{key} changed ({before.get(key)} -> {after.get(key)}) but no command said so"
    assert world.client.call("status")["nodes"]["up"] == 1


def test_gafferctl_global_options(world, runner):
    """--controller, --key, --controller-key, --timeout and --json fuzzed on `status`."""
    skip = {"version", "help"}

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(argv([ctl.main], (), world.node, skip))
    def fuzz(args: list[str]) -> None:
        remote = any(a in args for a in ("--controller", "--key", "--controller-key"))
        full = [*args, *(["--timeout", "0.3"] if remote else []), "status"]
        with scratch(world.root):
            result = runner.invoke(ctl.main, full, catch_exceptions=True)
        check_outcome(result, full)

    fuzz()
    assert world.client.call("status")["nodes"]["up"] == 1


@pytest.mark.parametrize("args", [
    ["events", ""], ["events", "\udcff"], ["events", "p" * 60_000], ["events", "proc.", "node.\U0001f600"],
    ["logs", "web", "-f"], ["logs", "\udcff", "-f"], ["logs", "x" * 60_000, "-f", "-n", "nan"],
])
def test_streaming_commands(world, args):
    """Commands that follow a stream: an error at once, or streaming until Ctrl-C; never a traceback."""
    argv_bytes = [os.fsencode(a) for a in [*CTL, *args]]
    proc = subprocess.Popen(argv_bytes, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 1.0
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # poll: a command that is still streaming after a second is streaming
    if proc.poll() is None:
        proc.send_signal(signals.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode in (0, 1, 2), (args[:2], proc.returncode, err[-500:])
    assert b"Traceback" not in out + err, err[-2000:]


# ------------------------------------------------------------------- daemons and gaffer


class Stub:
    """Stands in for ``uvloop.run``: whatever got this far would now serve; stop here."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, coroutine: Any, **_: Any) -> int:
        coroutine.close()
        self.calls += 1
        return 0


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Commands set up logging for their process; put every logger back afterwards."""
    touched = [logging.getLogger(), logging.getLogger("gaffer"),
               *(logging.getLogger(n) for n in ("gaffer.controller", "gaffer.agent.link", "gaffer.agent.assignment"))]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in touched]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


PROGRAMS = {
    "gaffer": (gaffer_cli, gaffer_cli.main),
    "gaffer-controller": (controller_daemon, controller_daemon.main),
    "gaffer-agent": (agent_daemon, agent_daemon.main),
}


def program_leaves() -> list[tuple[str, tuple[str, ...], list[click.Command]]]:
    return [(program, path, chain) for program, (_, group) in PROGRAMS.items()
            for path, chain in (leaves(group) if isinstance(group, click.Group) else [((), [group])])]


@pytest.mark.parametrize(("program", "path", "chain"), program_leaves(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v) if isinstance(v, tuple) else "")
def test_every_daemon_and_gaffer_command(tmp_path, monkeypatch, quiet_logging, program, path, chain):
    """gaffer start/run, gaffer-controller and gaffer-agent with fuzzed options: no traceback."""
    module, group = PROGRAMS[program]
    stub = Stub()
    monkeypatch.setattr(module.uvloop, "run", stub)
    monkeypatch.setenv("GAFFER_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("GAFFER_CONTROLLER", raising=False)
    runner = CliRunner()

    @settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(argv(chain, path, "node1", {"version", "help"}))
    def fuzz(args: list[str]) -> None:
        with scratch(tmp_path):
            result = runner.invoke(group, args, catch_exceptions=True)
        check_outcome(result, args)

    fuzz()
