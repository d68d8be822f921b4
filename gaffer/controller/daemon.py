"""``gaffer-controller``: the controller as a daemon (options, config file, signals, logs).

``gaffer-controller [OPTIONS]`` runs the daemon; its subcommands (``check``, ``export``,
``import``, ``forget-template``) work on a stopped controller's store (``offline.py``).

Signals: SIGTERM and SIGINT stop it (managed processes keep running on their agents); SIGHUP
re-reads ``--config`` (``common/reload.py``): ``RELOADABLE`` settings are applied at once, the
others are named as needing a restart, and a file that no longer validates is refused with
its reason while the running configuration stays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click
import uvloop

from gaffer.common import params
from gaffer.common.config import (
    LOG_LEVELS,
    expect,
    pick_log_level,
    read_config,
    set_log_level,
    setup_daemon_logging,
)
from gaffer.common.endpoints import DEFAULT_KEYED_BIND
from gaffer.common.errors import GafferError
from gaffer.common.limits import (
    DEFAULT_EVENT_BUFFER,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_PER_TEMPLATE,
    DEFAULT_METRICS_INSTANCES,
    DEFAULT_METRICS_TEMPLATES,
    MAX_BACKUPS,
    MAX_COUNT,
    MAX_DURATION,
    MAX_EVENT_BUFFER,
    MAX_HEARTBEAT,
    MAX_METRICS_SERIES,
    MAX_MISSES,
    MAX_TOTAL,
    MAX_WAIT,
    MIN_HEARTBEAT,
)
from gaffer.common.reload import config_changes
from gaffer.controller import offline
from gaffer.controller.controller import Controller
from gaffer.controller.heap import freeze_startup
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.storespec import parse_store

log = logging.getLogger("gaffer.controller")

SETTINGS = (
    "bind", "pub", "data_dir", "store", "keys", "insecure", "socket_group", "heartbeat", "suspect_misses", "down_misses",
    "startup_grace", "node_grace", "backup_every", "backup_dir", "backup_keep", "max_per_template",
    "max_instances", "event_buffer", "http", "tls_cert", "tls_key", "log_level",
    "metrics_max_templates", "metrics_max_instances",
)
RELOADABLE = frozenset({"log_level", "node_grace", "max_per_template", "max_instances"})
"""What SIGHUP applies while the controller runs. Endpoints, keys, the data dir and the
socket group are fixed by what is bound and opened; liveness timing is fixed because agents
were told it at hello; backups by their running schedule."""
DEFAULT_DATA_DIR = ".gaffer"
DEFAULT_BACKUP_EVERY = 3600.0
DEFAULT_BACKUP_KEEP = 5


def load(options: dict[str, Any], config: str | None) -> tuple[ControllerSettings, str]:
    """The settings and the log level from the options and the config file, read once."""
    data: dict[str, Any] = read_config(config, SETTINGS) if config else {}
    level = pick_log_level(options.get("log_level"), data, config or "options")
    return build_settings(options, config, data), level


def settings_values(settings: ControllerSettings, log_level: str) -> dict[str, object]:
    """The settings by their config file names, for ``config_changes``."""
    liveness = settings.liveness
    return {
        "bind": settings.bind, "pub": settings.pub, "data_dir": str(settings.data_dir),
        "store": str(settings.store) if settings.store is not None else None,
        "keys": str(settings.keys) if settings.keys else None, "insecure": settings.insecure,
        "socket_group": settings.socket_group, "heartbeat": liveness.interval,
        "suspect_misses": liveness.suspect_misses, "down_misses": liveness.down_misses,
        "startup_grace": liveness.startup_grace, "node_grace": settings.node_grace,
        "backup_every": settings.backup_every,
        "backup_dir": str(settings.backup_dir) if settings.backup_dir else None,
        "backup_keep": settings.backup_keep, "max_per_template": settings.max_per_template,
        "max_instances": settings.max_instances, "event_buffer": settings.event_buffer,
        "http": settings.http, "tls_cert": str(settings.tls_cert) if settings.tls_cert else None,
        "tls_key": str(settings.tls_key) if settings.tls_key else None, "log_level": log_level,
        "metrics_max_templates": settings.metrics_max_templates,
        "metrics_max_instances": settings.metrics_max_instances,
    }


def build_settings(
    options: dict[str, Any], config: str | None, data: dict[str, Any] | None = None
) -> ControllerSettings:
    """Options given on the command line win over the config file, which wins over defaults."""
    if data is None:
        data = read_config(config, SETTINGS) if config else {}
    where = config or "options"

    def pick(key: str, kind: type | tuple[type, ...], low: float | None = None, high: float | None = None) -> Any:
        if options.get(key) is not None:
            return options[key]
        return expect(data, key, kind, where, low=low, high=high)

    bind = pick("bind", str)
    pub = pick("pub", str)
    defaults = Liveness()
    liveness = Liveness(
        interval=float(pick("heartbeat", (int, float), MIN_HEARTBEAT, MAX_HEARTBEAT) or defaults.interval),
        suspect_misses=int(pick("suspect_misses", int, 1, MAX_MISSES) or defaults.suspect_misses),
        down_misses=int(pick("down_misses", int, 1, MAX_MISSES) or defaults.down_misses),
        startup_grace=float(_first(pick("startup_grace", (int, float), 0, MAX_WAIT), defaults.startup_grace)),
    )
    if liveness.down_misses <= liveness.suspect_misses:
        raise GafferError(f"{where}: need down_misses > suspect_misses")
    if liveness.down_after > MAX_WAIT:
        raise GafferError(f"{where}: heartbeat x down_misses must be at most {MAX_WAIT:g} seconds")
    keys = pick("keys", str)
    backup_every = float(_first(pick("backup_every", (int, float), 0, MAX_DURATION), DEFAULT_BACKUP_EVERY))
    backup_keep = _first(pick("backup_keep", int, 1, MAX_BACKUPS), DEFAULT_BACKUP_KEEP)
    if not math.isfinite(backup_every) or backup_every < 0:
        raise GafferError(f"{where}: backup_every must be a number of seconds >= 0 (0: no backups)")
    if backup_keep < 1:
        raise GafferError(f"{where}: backup_keep must be at least 1")
    backup_dir = pick("backup_dir", str)
    tls_cert, tls_key = pick("tls_cert", str), pick("tls_key", str)
    store = pick("store", str)
    return ControllerSettings(
        bind=bind,
        pub=pub,
        data_dir=Path(pick("data_dir", str) or DEFAULT_DATA_DIR),
        store=parse_store(store) if store is not None else None,
        keys=Path(keys) if keys else None,
        insecure=bool(pick("insecure", bool)),
        socket_group=pick("socket_group", str),
        liveness=liveness,
        node_grace=float(_first(pick("node_grace", (int, float), 0, MAX_WAIT), 2.0)),
        max_per_template=_first(pick("max_per_template", int, 1, MAX_COUNT), DEFAULT_MAX_PER_TEMPLATE),
        max_instances=_first(pick("max_instances", int, 1, MAX_TOTAL), DEFAULT_MAX_INSTANCES),
        event_buffer=_first(pick("event_buffer", int, 1, MAX_EVENT_BUFFER), DEFAULT_EVENT_BUFFER),
        backup_every=backup_every,
        backup_dir=Path(backup_dir) if backup_dir else None,
        backup_keep=backup_keep,
        http=pick("http", str),
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
        metrics_max_templates=_first(pick("metrics_max_templates", int, 0, MAX_METRICS_SERIES), DEFAULT_METRICS_TEMPLATES),
        metrics_max_instances=_first(pick("metrics_max_instances", int, 0, MAX_METRICS_SERIES), DEFAULT_METRICS_INSTANCES),
    )


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


@click.group(invoke_without_command=True)
@click.option("--bind", help=f"Endpoint for agents and clients [default: a private unix socket in the runtime dir; {DEFAULT_KEYED_BIND} with --keys].")
@click.option("--pub", help="Endpoint for event subscribers [default: beside --bind, or its port + 1].")
@click.option("--data-dir", help="Where the desired state is kept [default: .gaffer].")
@click.option("--store", help="Where the desired state is kept: sqlite:DIR or etcd://HOST:PORT,... [default: sqlite:DATA_DIR].")
@click.option("--keys", help="Key directory: controller.key_secret, agents/, clients/.")
@click.option("--insecure", is_flag=True, default=None, help="Allow TCP without CURVE keys (anyone who reaches it can run commands).")
@click.option("--socket-group", help="Let this group use the local sockets (runtime dir 0750, sockets 0660).")
@click.option("--heartbeat", type=params.HEARTBEAT, help="Heartbeat interval in seconds [default: 1].")
@click.option("--suspect-misses", type=params.MISSES, help="Missed heartbeats before a node is suspect [3].")
@click.option("--down-misses", type=params.MISSES, help="Missed heartbeats before a node is down [5].")
@click.option("--startup-grace", type=params.SECONDS, help="Seconds after start before any node is declared down [10].")
@click.option("--node-grace", type=params.SECONDS, help="Seconds a node stays down before its instances move [2].")
@click.option("--max-per-template", type=params.PER_TEMPLATE, help=f"Most instances one template may want [{DEFAULT_MAX_PER_TEMPLATE}].")
@click.option("--max-instances", type=params.TOTAL, help=f"Most instances all templates together may want [{DEFAULT_MAX_INSTANCES}].")
@click.option("--event-buffer", type=params.EVENT_BUFFER, help=f"Events held for subscribers to replay [{DEFAULT_EVENT_BUFFER}].")
@click.option("--backup-every", type=params.DURATION, help="Seconds between backups of the store; 0: none [3600].")
@click.option("--backup-dir", help="Where backups go [default: DATA_DIR/backups].")
@click.option("--backup-keep", type=params.KEEP, help="How many backups to keep [5].")
@click.option("--http", help="HOST:PORT of the HTTP API, /metrics and the dashboard, or 'off' [default: off].")
@click.option("--tls-cert", help="Certificate (PEM) for --http; needed off loopback unless --insecure.")
@click.option("--tls-key", help="Private key (PEM) of --tls-cert.")
@click.option("--metrics-max-templates", type=params.METRICS_SERIES, help=f"Templates with series of their own on /metrics [{DEFAULT_METRICS_TEMPLATES}].")
@click.option("--metrics-max-instances", type=params.METRICS_SERIES, help=f"Instances with series of their own on /metrics [{DEFAULT_METRICS_INSTANCES}].")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file with the same settings.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="[default: the config file's log_level, or info]")
@click.version_option(package_name="gaffer")
@click.pass_context
def main(ctx: click.Context, config: str | None, **options: Any) -> None:
    """Run the gaffer controller (or, with a command, work on a stopped controller's store)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config, "data_dir": options["data_dir"]}
        return
    try:
        settings, level = load(options, config)
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    setup_daemon_logging(level)
    reread = (lambda: load(options, config)) if config else None
    try:
        uvloop.run(_serve(settings, level, reread, config))
    except GafferError as exc:
        raise click.ClickException(exc.message) from None


Reread = Callable[[], tuple[ControllerSettings, str]]


async def _serve(
    settings: ControllerSettings, level: str = "info", reread: Reread | None = None, source: str | None = None
) -> None:
    controller = Controller(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        nonlocal settings, level
        if reread is None or source is None:
            log.warning("SIGHUP: no --config file to re-read; nothing changed")
            return
        try:
            new, new_level = reread()
        except GafferError as exc:
            log.error("reload of %s refused, keeping the running configuration: %s", source, exc.message)
            return
        changes = config_changes(settings_values(settings, level), settings_values(new, new_level), RELOADABLE)
        if any(change.key != "log_level" for change in changes.applied):
            settings = controller.reconfigure(new)
        if new_level != level:
            set_log_level(new_level)
            level = new_level
        for severity, line in changes.lines(source):
            log.log(severity, line)

    # before start: a signal that comes while it starts is handled once it has started
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await controller.start()
    frozen = freeze_startup()
    log.debug("froze %d objects made at startup (no full collection walks them)", frozen)
    try:
        await stop.wait()
    finally:
        log.info("stopping (managed processes keep running on their agents)")
        await controller.stop()


# --------------------------------------------------------------------------- offline commands

DATA_DIR_HELP = "The stopped controller's data dir [default: the group's, the config file's, or .gaffer]."


def _data_dir(ctx: click.Context, given: str | None) -> Path:
    """This command's --data-dir, else the one given before it, else the config file's."""
    if given:
        return Path(given)
    parent = ctx.obj or {}
    if parent.get("data_dir"):
        return Path(parent["data_dir"])
    if parent.get("config"):
        data = read_config(parent["config"], SETTINGS)
        found = expect(data, "data_dir", str, parent["config"])
        if found:
            return Path(found)
    return Path(DEFAULT_DATA_DIR)


def _fail(exc: GafferError) -> click.ClickException:
    return click.ClickException(exc.message)


@main.command()
@click.option("--data-dir", help=DATA_DIR_HELP)
@click.option("--full", is_flag=True, help="integrity_check (every index against its table) instead of quick_check.")
@click.pass_context
def check(ctx: click.Context, data_dir: str | None, full: bool) -> None:
    """Check the store: SQLite's own check, the schema, and every stored template.

    Prints every problem, one a line; exits 1 if there is any.
    """
    try:
        report = offline.check(_data_dir(ctx, data_dir), full)
    except GafferError as exc:
        raise _fail(exc) from None
    for line in report.problems:
        click.echo(line)
    click.echo(report.summary, err=not report.ok)
    ctx.exit(0 if report.ok else 1)


@main.command()
@click.argument("target", default="-", metavar="[FILE|-]")
@click.option("--data-dir", help=DATA_DIR_HELP)
@click.pass_context
def export(ctx: click.Context, target: str, data_dir: str | None) -> None:
    """Write the desired state as JSON to FILE (mode 0600) or stdout.

    Templates that no longer validate are written with their raw spec and named on stderr;
    exits 1 if some part of the store could not be read.
    """
    try:
        state, problems = offline.export(_data_dir(ctx, data_dir))
        text = state.dumps()
        if target == "-":
            sys.stdout.write(text)
        else:
            offline.write_private(Path(target), text.encode())
    except GafferError as exc:
        raise _fail(exc) from None
    for record in state.invalid:
        click.echo(
            f"warning: template {record.name!r} no longer validates ({record.invalid}); exported its raw spec",
            err=True,
        )
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    where = "stdout" if target == "-" else target
    click.echo(f"exported {len(state.templates)} templates and {len(state.nodes)} nodes to {where}", err=True)
    ctx.exit(1 if problems else 0)


@main.command("import")
@click.argument("source", metavar="FILE|-")
@click.option("--data-dir", help=DATA_DIR_HELP)
@click.option("--replace", is_flag=True, help="Replace a store that is not empty (the old file is kept beside it).")
@click.pass_context
def import_(ctx: click.Context, source: str, data_dir: str | None, replace: bool) -> None:
    """Make FILE (an export, or a backup) the desired state: validated first, all or nothing."""
    try:
        done = offline.import_state(_data_dir(ctx, data_dir), source, replace)
    except GafferError as exc:
        raise _fail(exc) from None
    click.echo(f"imported {done.templates} templates and {done.nodes} nodes from {source}")
    if done.kept is not None:
        click.echo(f"the replaced store is kept as {done.kept}")


@main.command("forget-template")
@click.argument("name")
@click.option("--data-dir", help=DATA_DIR_HELP)
@click.pass_context
def forget_template(ctx: click.Context, name: str, data_dir: str | None) -> None:
    """Delete template NAME from the store, even one whose stored spec no longer reads.

    Its placement and failure history go with it; agents stop its instances once the
    controller is back.
    """
    try:
        offline.forget_template(_data_dir(ctx, data_dir), name)
    except GafferError as exc:
        raise _fail(exc) from None
    click.echo(f"forgot template {name!r}")
