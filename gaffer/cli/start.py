"""``gaffer start`` and ``gaffer run``: the one-host mode, in the foreground.

``start`` runs every template of a Procfile or TOML/JSON file until Ctrl-C (or SIGTERM), which
stops everything gracefully; a second Ctrl-C kills what is left at once. SIGHUP re-reads the
file and applies only what changed. A bad file is refused before anything starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click
import uvloop

from gaffer.agent import reaper
from gaffer.agent.apps import AppRunner, AppSpec, parse_apps
from gaffer.agent.manager import Manager
from gaffer.agent.tracking import Tracker
from gaffer.common import params
from gaffer.cli.attach import STDIN_RETRY, parse_env, read_chunk
from gaffer.cli.console import Console, ConsoleLogHandler, ConsoleWriter, use_color
from gaffer.cli.embedded import Embedded, EmbeddedSettings
from gaffer.cli.export import export
from gaffer.common.bus import EventBus
from gaffer.common.dependson import reference_problems
from gaffer.common.config import expect, read_config
from gaffer.common.errors import (
    ConfigError,
    GafferError,
    InvalidRequest,
    StdinClosed,
    StdinFull,
    Problem,
    SubscriberTooSlow,
    TemplateError,
)
from gaffer.common.keys import load_keypair
from gaffer.common.loaders import load, resolve_file as resolve_template_file
from gaffer.common.limits import DEFAULT_EVENT_BUFFER, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PER_TEMPLATE, NAME_RE, NAME_RULE
from gaffer.common.ports import MAX_PORT, MIN_PORT, instance_port, overlaps, range_problem
from gaffer.common.procfile_options import check_concurrency_names, parse_concurrency_options
from gaffer.common.tasks import cancel_and_wait
from gaffer.common.template import Template, check_on_host
from gaffer.common.endpoints import default_control, parse_endpoint, require_protection
from gaffer.controller.counts import CountLimits, check_counts
from gaffer.controller.http.address import parse_http

log = logging.getLogger("gaffer")


def read_templates(
    path: Path, counts: dict[str, int], limits: CountLimits = CountLimits(), port: int | None = None
) -> list[Template]:
    """Load (``port``: ``-p``, the base of Procfile and ``"auto"`` ports; skipped lines are
    printed as warnings on stderr), apply ``-c name=N`` overrides, check the counts against the
    embedded controller's ``limits``, the ports (all in 1..65535, no two templates sharing one:
    this is one host), that each ``depends_on`` names a template of the file (it is the whole
    desired state) and what only this host can check."""
    loaded = load(path, port)
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    templates = loaded.templates
    check_concurrency_names(counts, [t.name for t in templates], str(path))
    templates = [t.with_count(counts[t.name]) if t.name in counts else t for t in templates]
    problems = port_problems(templates)
    problems += reference_problems({t.name: t.depends_on for t in templates}, {t.name: t.restart for t in templates})
    for template in templates:
        problems.extend(check_on_host(template))
    if problems:
        raise TemplateError(problems, source=str(path))
    check_counts(limits, {t.name: (0, t.numprocesses) for t in templates}, 0)
    return templates


def port_problems(templates: list[Template]) -> list[Problem]:
    """Ports past 65535 once ``-c`` changed a count, and templates whose ports overlap."""
    problems = []
    for template in templates:
        if template.port is not None and (problem := range_problem(template.port, template.numprocesses)):
            problems.append(Problem(template.name, "port", problem))
    ranges = [(t.name, t.port, t.numprocesses) for t in templates if t.port is not None]
    by_name = {t.name: t for t in templates}
    for first, second in overlaps(ranges):
        a, b = by_name[first], by_name[second]
        problems.append(Problem(second, "port", (
            f"ports {a.port}..{instance_port(a.port or 0, a.numprocesses)} of {first} and "
            f"{b.port}..{instance_port(b.port or 0, b.numprocesses)} of {second} overlap on this host"
        )))
    return problems


def parse_counts(values: tuple[str, ...]) -> dict[str, int]:
    """Every ``-c`` value: ``NAME=N`` or ``NAME=N,NAME=N`` as honcho takes it, counts at most
    MAX_COUNT (``parse_concurrency``); a bad one is a usage error naming the option."""
    try:
        return parse_concurrency_options(values)
    except ConfigError as exc:
        raise click.BadParameter(exc.message.removeprefix("--concurrency: "), param_hint="--concurrency") from None


START_SETTINGS = ("node", "apps")
DEFAULT_HTTP = "127.0.0.1:6080"
START_REMEDY = (
    "Leave --bind at its default (a private unix socket), pass --keys DIR (a key directory "
    "made with `gafferctl keygen`, as gaffer-controller's; see the README, 'Security'), or "
    "pass --insecure to accept an open endpoint."
)


def read_start_config(path: str | None) -> tuple[str | None, list[AppSpec]]:
    """The optional ``--config`` file of ``gaffer start``: ``node`` and ``[[apps]]``."""
    if path is None:
        return None, []
    data = read_config(path, START_SETTINGS)
    node = expect(data, "node", str, path)
    return node, parse_apps(data.get("apps", []), source=path)


def check_node_name(name: str) -> str:
    """The node name the embedded agent says hello with (a hostname may not fit the rule)."""
    if not NAME_RE.match(name):
        shown = repr(name) if len(name) <= 80 else f"of {len(name)} characters"
        raise ConfigError(f"node name {shown} is not valid: use {NAME_RULE} (give one with --node)")
    return name


def resolve_file(file: str | None) -> Path:
    return resolve_template_file(file, Path.cwd())


@click.group()
@click.version_option(package_name="gaffer")
def main() -> None:
    """gaffer: a process manager that grows from one host to a cluster."""


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("-c", "--concurrency", multiple=True, metavar="NAME=N[,NAME=N...]", help="Instances of NAME (repeatable).")
@click.option("-p", "--port", type=params.BoundedInt(MIN_PORT, MAX_PORT, name="port"), default=None, help="Base PORT of Procfile (and port = \"auto\") templates [default: PORT in .env, then in the environment, then 5000].")
@click.option("--node", default=None, help="Node name given to processes (default: hostname).")
@click.option("--data-dir", default=".gaffer", show_default=True, type=click.Path(file_okay=False), help="Where the embedded controller keeps its state.")
@click.option("--bind", default=None, help="Endpoint gafferctl talks to [default: a private unix socket, see `gafferctl --help`].")
@click.option("--keys", default=None, type=click.Path(file_okay=False), help="CURVE key directory, as gaffer-controller's: controller.key_secret and clients/ (TCP, default tcp://127.0.0.1:6001).")
@click.option("--insecure", is_flag=True, help="Allow --bind tcp://... without authentication (any local user could run commands).")
@click.option("--http", "http", default=None, metavar="HOST:PORT|off", help=f"The HTTP API and dashboard [default: {DEFAULT_HTTP}, or none when that port is taken].")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), help="Settings file (node, [[apps]]).")
@click.option("--max-per-template", type=params.PER_TEMPLATE, default=DEFAULT_MAX_PER_TEMPLATE, show_default=True, help="Most instances one template may want.")
@click.option("--max-instances", type=params.TOTAL, default=DEFAULT_MAX_INSTANCES, show_default=True, help="Most instances all templates together may want.")
@click.option("--event-buffer", type=params.EVENT_BUFFER, default=DEFAULT_EVENT_BUFFER, show_default=True, help="Events the controller holds for subscribers to replay.")
@click.option("--color/--no-color", default=None, help="Colour the output (default: when a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Log gaffer's own debug messages.")
def start(
    file: str | None,
    concurrency: tuple[str, ...],
    port: int | None,
    node: str | None,
    data_dir: str,
    bind: str | None,
    keys: str | None,
    insecure: bool,
    http: str | None,
    config: str | None,
    max_per_template: int,
    max_instances: int,
    event_buffer: int,
    color: bool | None,
    verbose: bool,
) -> None:
    """Run the templates of FILE (Procfile, .toml or .json) until Ctrl-C.

    An embedded controller listens on --bind, so gafferctl works against it.
    """
    counts = parse_counts(concurrency)
    limits = CountLimits(max_per_template, max_instances)
    try:
        config_node, apps = read_start_config(config)
        node = check_node_name(node or config_node or socket.gethostname().split(".")[0])
        path = resolve_file(file)
        templates = read_templates(path, counts, limits, port)
        parse_http(http if http is not None else DEFAULT_HTTP)
        if keys is not None:
            load_keypair(Path(keys) / "controller.key_secret")
        if bind is not None:
            require_protection(
                [parse_endpoint(bind, "--bind")], keys is not None, insecure, "gaffer start", START_REMEDY,
            )
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    writer = ConsoleWriter(sys.stdout)
    console = Console(writer, use_color(sys.stdout, color))
    _log_to_console(console, verbose)
    settings = EmbeddedSettings(
        node=node,
        data_dir=Path(data_dir),
        bind=bind,
        insecure=insecure,
        keys=Path(keys) if keys is not None else None,
        limits=limits,
        event_buffer=event_buffer,
        http=http if http is not None else DEFAULT_HTTP,
        http_optional=http is None,
    )
    try:
        code = uvloop.run(_run_start(path, templates, _Reading(counts, port), settings, console, apps))
    finally:
        writer.close()
    sys.exit(code)


async def _run_start(
    path: Path,
    templates: list[Template],
    reading: _Reading,
    settings: EmbeddedSettings,
    console: Console,
    apps: list[AppSpec],
) -> int:
    reaper.install()
    try:
        return await _start_all(path, templates, reading, settings, console, apps)
    finally:
        reaper.uninstall()


async def _start_all(
    path: Path,
    templates: list[Template],
    reading: _Reading,
    settings: EmbeddedSettings,
    console: Console,
    apps: list[AppSpec],
) -> int:
    """Run the embedded controller and agent while the console prints their events; the exit
    code. The printer is drained last, so the console shows everything up to the end."""
    bus = EventBus()
    events = bus.subscribe(("output.", "proc.", "template."))
    console.register([t.name for t in templates])
    console.fit([f"{t.name}.{t.numprocesses}" for t in templates])
    printer = asyncio.create_task(_print_events(bus, events, console))
    try:
        embedded = Embedded(settings, bus)
        try:
            await embedded.start()
        except GafferError as exc:
            console.system(f"cannot start: {exc.message}")
            return 2
        signals = _Signals(path, reading, embedded, console)
        signals.install()
        try:
            return await _run_apps_and_templates(path, templates, embedded, console, apps, signals)
        finally:
            signals.remove()
    finally:
        await _drain(printer, events)


async def _run_apps_and_templates(
    path: Path,
    templates: list[Template],
    embedded: Embedded,
    console: Console,
    apps: list[AppSpec],
    signals: _Signals,
) -> int:
    """Start the apps, apply the file's templates, run until a stop signal, then stop it all."""
    runner = AppRunner(asyncio.get_running_loop(), embedded.manager)
    try:
        await runner.start(apps)
    except GafferError as exc:
        console.system(f"apps refused: {exc.message}")
        await embedded.stop()
        return 2
    _announce(path, templates, embedded, console)
    try:
        await embedded.apply(templates)
    except GafferError as exc:
        console.system(f"cannot apply {path}: {exc.message}")
        signals.stop.set()
    await signals.stop.wait()
    await signals.end_reload()
    await runner.stop()
    await embedded.stop()
    console.system("all processes stopped")
    return 0


def _announce(path: Path, templates: list[Template], embedded: Embedded, console: Console) -> None:
    """The first lines: how many processes, from where, and the gafferctl that reaches them."""
    count = sum(t.numprocesses for t in templates)
    endpoint = embedded.controller.endpoint
    ctl = "gafferctl" if endpoint == str(default_control()) else f"gafferctl --controller {endpoint}"
    keys = embedded.settings.keys
    if keys is not None:
        ctl += f" --controller-key {keys / 'controller.key'} --key CLIENT.key_secret"
    url = embedded.dashboard_url()
    dashboard = f"dashboard {url}" if url else "no dashboard (--http)"
    console.system(
        f"starting {count} processes from {path} on node {embedded.settings.node}; {dashboard}; "
        f"{ctl} ps; Ctrl-C to stop"
    )
    warning = embedded.controller.security_warning()
    if warning:
        console.system(warning)


@dataclass(frozen=True)
class _Reading:
    """The command line's say in reading FILE, again at each SIGHUP: ``-c`` and ``-p``."""

    counts: dict[str, int]
    port: int | None


class _Signals:
    """What ``gaffer start`` does on signals: the first SIGINT/SIGTERM sets ``stop`` (a
    graceful stop of everything), the next ones kill what is left at once; SIGHUP re-reads the
    file and applies the difference, one reload at a time. Owns the reload task."""

    STOP = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, path: Path, reading: _Reading, embedded: Embedded, console: Console) -> None:
        self.stop = asyncio.Event()
        self._path = path
        self._reading = reading
        self._embedded = embedded
        self._console = console
        self._interrupts = 0
        self._reloading: asyncio.Task | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.STOP:
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (*self.STOP, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    async def end_reload(self) -> None:
        """Cancel a reload still being applied, and wait for it."""
        await cancel_and_wait(self._reloading)

    def _on_stop_signal(self) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            self._console.system("stopping all processes (Ctrl-C again to kill them now)")
            self.stop.set()
            return
        self._console.system("killing all processes")
        manager = self._embedded.manager
        for template in manager.templates():
            manager.kill(template.name, "KILL", group=True)

    def _on_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            self._console.system("a reload is still being applied; send SIGHUP again once it is done")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        embedded = self._embedded
        try:
            fresh = read_templates(self._path, self._reading.counts, embedded.settings.limits, self._reading.port)
            self._console.register(sorted(t.name for t in fresh))
            results = await embedded.apply(fresh)
        except GafferError as exc:
            self._console.system(f"reload refused, keeping the running templates: {exc.message}")
            return
        changes = [f"{r['name']} {r['change']}" for r in results if r["change"] != "unchanged"]
        shown = ", ".join(changes[:20]) + (f" and {len(changes) - 20} more" if len(changes) > 20 else "")
        self._console.system("reloaded: " + (shown if changes else "nothing changed"))


async def _print_events(bus: EventBus, events, console: Console) -> None:
    while True:
        try:
            async for event in events:
                console.show(event)
            return
        except SubscriberTooSlow:
            console.system("console fell behind; some output was skipped")
            events = bus.subscribe(events.prefixes)


async def _drain(printer: asyncio.Task, events) -> None:
    """Let the printer show the last events, then end it."""
    await asyncio.sleep(0)
    events.close()
    try:
        await asyncio.wait_for(printer, 2.0)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        printer.cancel()


main.add_command(export)


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("-c", "--concurrency", multiple=True, metavar="NAME=N[,NAME=N...]", help="As for start: instances of NAME (repeatable).")
@click.option("-p", "--port", type=params.BoundedInt(MIN_PORT, MAX_PORT, name="port"), default=None, help="As for start: the base PORT.")
def check(file: str | None, concurrency: tuple[str, ...], port: int | None) -> None:
    """Check FILE (Procfile, .toml or .json; default as for start) without starting anything,
    with the -c and -p that start would be given.

    Skipped lines are warnings (stderr); every problem is listed, one a line, and the exit
    status is 1 when there is one.
    """
    counts = parse_counts(concurrency)
    try:
        path = resolve_file(file)
        templates = read_templates(path, counts, port=port)
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    for warning in limit_warnings(templates):
        click.echo(f"warning: {warning}", err=True)
    count = sum(t.numprocesses for t in templates)
    click.echo(f"{path}: ok, {len(templates)} templates, {count} processes")


def limit_warnings(templates: list[Template]) -> list[str]:
    """The ``rlimits``/``nice`` settings this host would refuse to gaffer run by this user (the
    agent's own check, ``childlimits.host_refusals``): its spawns of them would fail here."""
    from gaffer.agent.childlimits import host_refusals, read_privileges  # only check needs them

    privileges = read_privileges()
    return [
        f"{template.name}.{field}: {reason}: `gaffer start` here, as this user, would fail to spawn it"
        for template in templates for field, reason in host_refusals(template, privileges)
    ]


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-f", "--file", "file", default=None, type=click.Path(dir_okay=False), help="Template file.")
@click.option("--node", default=None, help="Node name given to the process (default: hostname).")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Add KEY=VALUE to the process's environment (repeatable).")
def run(name: str, args: tuple[str, ...], file: str | None, node: str | None, env: tuple[str, ...]) -> None:
    """Run template NAME once (not restarted) and exit with its status.

    ARGS, when given, replace the template's args (put -- before them to pass options such
    as -e as they are). Output shows as it comes; stdin goes to the process if the template
    has redirect_input. Ctrl-C (or SIGTERM) sends that signal to its whole process group, KILL
    after its graceful_timeout, and exits 130 (143) once it has ended.
    """
    try:
        overrides = parse_env(env)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-e/--env") from None
    try:
        path = resolve_file(file)
        templates = {t.name: t for t in read_templates(path, {})}
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    if name not in templates:
        raise click.ClickException(f"{path}: no template named {name!r} (have: {', '.join(sorted(templates))})")
    template = templates[name]
    if overrides:
        template = replace(template, env={**template.env, **overrides})
    code = uvloop.run(_run_once(template, list(args) or None, node or socket.gethostname()))
    sys.exit(code)


async def _run_once(template: Template, args: list[str] | None, node: str) -> int:
    reaper.install()
    tracker = Tracker.for_host(node, None, "subreaper")
    try:
        return await _run_tracked(template, args, node, tracker)
    finally:
        await tracker.aclose(finish=True)
        reaper.uninstall()


async def _run_tracked(template: Template, args: list[str] | None, node: str, tracker: Tracker) -> int:
    loop = asyncio.get_running_loop()
    manager = Manager(node=node, tracker=tracker)
    manager.add(template.with_count(0))
    events = manager.bus.subscribe(f"output.{template.name}.run-")
    try:
        inst = manager.run(template.name, args)
    except GafferError as exc:
        click.echo(f"gaffer: {template.name}: {exc.message}", err=True)
        return 127
    interrupted: list[int] = []

    def on_signal(signum: int) -> None:
        """The first signal goes to the run's group (KILL after graceful_timeout); a second
        one KILLs it now."""
        if interrupted:
            manager.kill(inst.id, signal.SIGKILL, group=True)
            return
        interrupted.append(signum)
        manager.lease_run(inst.id, 0, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    async def relay() -> None:
        async for event in events:
            stream = sys.stdout if event.data["stream"] == "out" else sys.stderr
            stream.write(event.data["text"] + "\n")
            stream.flush()

    relay_task = asyncio.create_task(relay())
    feed = asyncio.create_task(_feed_stdin(manager, inst.id)) if template.redirect_input else None
    assert inst.done is not None
    status = await inst.done
    await cancel_and_wait(feed)
    await manager.shutdown()
    await _drain(relay_task, events)
    if interrupted:
        return 128 + interrupted[0]
    if status.signal is not None:
        return 128 + status.signal
    return status.code if status.code is not None else 1


async def _feed_stdin(manager: Manager, ident: str) -> None:
    """This command's stdin to the run's, then its end of file (quietly stops once the run
    closed its stdin or ended)."""
    try:
        while True:
            try:
                chunk = await read_chunk(0)
            except OSError:
                chunk = b""
            while True:
                try:
                    manager.write(ident, chunk, eof=not chunk)
                    break
                except StdinFull:
                    await asyncio.sleep(STDIN_RETRY)  # the run reads slowly: let its pipe drain
            if not chunk:
                return
    except (StdinClosed, InvalidRequest):
        return


def _log_to_console(console: Console, verbose: bool) -> None:
    handler = ConsoleLogHandler(console)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gaffer")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    for chatty in ("gaffer.controller", "gaffer.agent.link", "gaffer.agent.assignment"):
        logging.getLogger(chatty).setLevel(logging.NOTSET if verbose else logging.WARNING)
