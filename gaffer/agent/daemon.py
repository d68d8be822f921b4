"""``gaffer-agent``: the Manager of one host, linked to a controller.

Stopping the agent (SIGTERM, SIGINT) leaves the managed processes running by default: an
upgrade or a crash of the agent must not take the host's services down. ``--stop-processes``
(or SIGQUIT) stops them gracefully first, for when the host itself is being retired. Either
way, stops already in progress are finished first (``Agent.stop``). SIGHUP re-reads
``--config`` (``common/reload.py``): ``RELOADABLE`` settings are applied at once, the others
are named as needing a restart, and a file that no longer validates is refused with its
reason while the running configuration stays.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any, Callable

import click
import uvloop

from gaffer.agent import reaper
from gaffer.agent.agent import Agent
from gaffer.agent.apps import AppRunner, AppSpec, parse_apps
from gaffer.agent.link import LinkSettings
from gaffer.agent.statpush import DEFAULT_INTERVAL as DEFAULT_STATS_INTERVAL
from gaffer.agent.tracking import MODES
from gaffer.common.config import (
    LOG_LEVELS,
    expect,
    pick_log_level,
    read_config,
    set_log_level,
    setup_daemon_logging,
)
from gaffer.common.endpoints import (
    DEFAULT_KEYED_BIND,
    INSECURE_WARNING,
    default_control,
    parse_endpoint,
    require_protection,
)
from gaffer.common.errors import ConfigError, GafferError
from gaffer.common.keys import fingerprint as key_fingerprint
from gaffer.common.keys import load_keypair, load_public
from gaffer.common import params
from gaffer.common.limits import MAX_STATS_INTERVAL, MIN_STATS_INTERVAL
from gaffer.common.reload import config_changes
from gaffer.common.template import LABEL_RE, NAME_RE

log = logging.getLogger("gaffer.agent")

SETTINGS = (
    "controller", "name", "labels", "state_dir", "key", "controller_key", "insecure", "apps",
    "stop_processes", "log_level", "stats_interval",
)
RELOADABLE = frozenset({"log_level", "stop_processes"})
"""What SIGHUP applies while the agent runs. The controller endpoint, the node's name and
labels (told to the controller at hello), the state dir, keys and apps are fixed at start."""
DEFAULT_STATE_DIR = "/var/lib/gaffer/agent"


def _first(value: Any, default: float) -> Any:
    """``value`` unless it is None (0 is a value)."""
    return default if value is None else value


def parse_labels(values: tuple[str, ...] | list[str] | dict[str, Any], where: str) -> dict[str, str]:
    items = values.items() if isinstance(values, dict) else (v.partition("=")[::2] for v in values)
    labels: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or not LABEL_RE.match(key):
            raise ConfigError(f"{where}: label {key!r}: use KEY=VALUE with a key of letters, digits, '_', '.', '/', '-'")
        if not isinstance(value, str) or len(value) > 256:
            raise ConfigError(f"{where}: label {key}: the value must be a string of at most 256 characters")
        labels[key] = value
    return labels


Built = tuple[LinkSettings, list[AppSpec], bool, bool]
"""What build_settings gives: link settings, apps, insecure, stop_processes."""


def load(options: dict[str, Any], config: str | None) -> tuple[Built, str]:
    """The settings and the log level from the options and the config file, read once."""
    data: dict[str, Any] = read_config(config, SETTINGS) if config else {}
    level = pick_log_level(options.get("log_level"), data, config or "options")
    return build_settings(options, config, data), level


def settings_values(built: Built, log_level: str) -> dict[str, object]:
    """The settings by their config file names (keys by fingerprint), for ``config_changes``."""
    settings, apps, insecure, stop_processes = built
    return {
        "controller": settings.controller, "name": settings.node, "labels": dict(settings.labels),
        "state_dir": str(settings.state_dir),
        "key": settings.keys.fingerprint if settings.keys else None,
        "controller_key": key_fingerprint(settings.controller_key) if settings.controller_key else None,
        "insecure": insecure, "apps": tuple(apps), "stop_processes": stop_processes,
        "log_level": log_level, "stats_interval": settings.stats_interval,
    }


def build_settings(options: dict[str, Any], config: str | None, data: dict[str, Any] | None = None) -> Built:
    if data is None:
        data = read_config(config, SETTINGS) if config else {}
    where = config or "options"

    def pick(key: str, kind: type | tuple[type, ...], low: float | None = None, high: float | None = None) -> Any:
        if options.get(key) not in (None, ()):
            return options[key]
        return expect(data, key, kind, where, low=low, high=high)

    name = pick("name", str) or socket.gethostname().split(".")[0]
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r}: use letters, digits, '-' and '_' (no dots)")
    labels = parse_labels(pick("labels", (dict, list, tuple)) or {}, where)
    key = pick("key", str)
    controller_key = pick("controller_key", str)
    if bool(key) != bool(controller_key):
        raise ConfigError(f"{where}: --key and --controller-key go together (CURVE needs both)")
    insecure = bool(pick("insecure", bool))
    given = pick("controller", str)
    if given:
        controller = parse_endpoint(given, f"{where}: controller")
    else:
        controller = parse_endpoint(DEFAULT_KEYED_BIND) if key else default_control()
    require_protection([controller], bool(key), insecure, "gaffer-agent")
    settings = LinkSettings(
        controller=str(controller),
        node=name,
        labels=labels,
        # absolute now: the keeper daemonises into / and must find its socket and lock
        state_dir=Path(pick("state_dir", str) or DEFAULT_STATE_DIR).absolute(),
        keys=load_keypair(key) if key else None,
        controller_key=load_public(controller_key) if controller_key else None,
        stats_interval=float(_first(
            pick("stats_interval", (int, float), MIN_STATS_INTERVAL, MAX_STATS_INTERVAL), DEFAULT_STATS_INTERVAL
        )),
    )
    apps = parse_apps(data.get("apps", []), source=config)
    return settings, apps, insecure, bool(pick("stop_processes", bool))


@click.command()
@click.option("--controller", help=f"Controller endpoint [default: the local controller's unix socket; {DEFAULT_KEYED_BIND} with --key].")
@click.option("--name", help="This node's name [default: the short hostname].")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Node label (repeatable).")
@click.option("--state-dir", help=f"Where the agent keeps its state [default: {DEFAULT_STATE_DIR}].")
@click.option("--key", help="This agent's secret key file (NAME.key_secret).")
@click.option("--controller-key", help="The controller's public key file (controller.key).")
@click.option("--insecure", is_flag=True, default=None, help="Allow a TCP controller endpoint without CURVE keys.")
@click.option("--stop-processes", is_flag=True, default=None, help="Stop managed processes when the agent stops.")
@click.option("--stats-interval", type=params.STATS_INTERVAL,
              help=f"Seconds between stats pushes to the controller [default: {DEFAULT_STATS_INTERVAL:g}].")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file with the same settings and [[apps]].")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="[default: the config file's log_level, or info]")
@click.option("--tracking", default="auto", show_default=True, type=click.Choice(MODES),
              help="Track descendants in a cgroup per instance (auto: where the host allows) "
                   "or as a child subreaper only.")
@click.version_option(package_name="gaffer")
def main(config: str | None, tracking: str, **options: Any) -> None:
    """Run the gaffer agent of this host."""
    try:
        built, level = load(options, config)
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    setup_daemon_logging(level)
    reread = Reload(lambda: load(options, config), config, built, level) if config else None
    settings, apps, _, stop_processes = built
    try:
        uvloop.run(_serve(settings, apps, stop_processes, tracking, reread))
    except GafferError as exc:
        raise click.ClickException(exc.message) from None


class Reload:
    """SIGHUP: re-read the config file, log what changed, keep what is applied."""

    def __init__(self, reread: Callable[[], tuple[Built, str]], source: str, built: Built, level: str) -> None:
        self._reread = reread
        self._source = source
        self.running = built
        self.level = level

    def __call__(self) -> None:
        try:
            new, level = self._reread()
        except GafferError as exc:
            log.error("reload of %s refused, keeping the running configuration: %s", self._source, exc.message)
            return
        changes = config_changes(
            settings_values(self.running, self.level), settings_values(new, level), RELOADABLE
        )
        settings, apps, insecure, _ = self.running
        self.running = (settings, apps, insecure, new[3])
        if level != self.level:
            set_log_level(level)
            self.level = level
        for severity, line in changes.lines(self._source):
            log.log(severity, line)

    @property
    def stop_processes(self) -> bool:
        return self.running[3]


async def _serve(
    settings: LinkSettings, apps: list[AppSpec], stop_processes: bool, tracking: str = "auto",
    reload: Reload | None = None,
) -> None:
    reaper.install()
    try:
        await _serve_agent(settings, apps, stop_processes, tracking, reload)
    finally:
        reaper.uninstall()


def _on_hup_without_config() -> None:
    log.warning("SIGHUP: no --config file to re-read; nothing changed")


async def _serve_agent(
    settings: LinkSettings, apps: list[AppSpec], stop_processes: bool, tracking: str,
    reload: Reload | None,
) -> None:
    loop = asyncio.get_running_loop()
    agent = Agent(settings, tracking=tracking)
    stop = asyncio.Event()
    quit_all = False

    def on_quit() -> None:
        nonlocal quit_all
        quit_all = True
        stop.set()

    # before start: a signal that comes while it starts is handled once it has started
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGQUIT, on_quit)
    loop.add_signal_handler(signal.SIGHUP, reload if reload is not None else _on_hup_without_config)
    runner = AppRunner(loop, agent.manager)
    await runner.start(apps)
    await agent.start()
    if settings.keys:
        fingerprint = settings.keys.fingerprint
    elif settings.controller.startswith("ipc://"):
        fingerprint = "none (local socket)"
    else:
        fingerprint = "none (INSECURE: TCP without CURVE keys)"
        log.warning(INSECURE_WARNING.format(endpoints=settings.controller))
    log.info(
        "gaffer-agent node %s (agent %s) -> controller %s, key %s, labels %s, state in %s, "
        "processes tracked by %s%s",
        settings.node, agent.agent_id, settings.controller, fingerprint,
        settings.labels or "{}", settings.state_dir, agent.tracker.mode,
        f" ({agent.tracker.reason})" if agent.tracker.reason else "",
    )
    await stop.wait()
    stop_all = quit_all or (reload.stop_processes if reload is not None else stop_processes)
    await runner.stop()
    if stop_all:
        log.info("stopping every managed process")
    else:
        log.info("agent stopping; managed processes keep running")
    await agent.stop(stop_processes=stop_all)
