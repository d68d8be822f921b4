"""``gaffer-controller``: the controller as a daemon (options, config file, signals, logs)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import click
import uvloop

from gaffer.common.config import LOG_LEVELS, expect, read_config, setup_daemon_logging
from gaffer.common.errors import GafferError
from gaffer.controller.controller import Controller
from gaffer.controller.liveness import Liveness
from gaffer.controller.settings import DEFAULT_KEYED_BIND, ControllerSettings

log = logging.getLogger("gaffer.controller")

SETTINGS = (
    "bind", "pub", "data_dir", "keys", "insecure", "socket_group", "heartbeat", "suspect_misses", "down_misses",
    "startup_grace", "node_grace",
)


def build_settings(options: dict[str, Any], config: str | None) -> ControllerSettings:
    """Options given on the command line win over the config file, which wins over defaults."""
    data: dict[str, Any] = read_config(config, SETTINGS) if config else {}
    where = config or "options"

    def pick(key: str, kind: type | tuple[type, ...]) -> Any:
        if options.get(key) is not None:
            return options[key]
        return expect(data, key, kind, where)

    bind = pick("bind", str)
    pub = pick("pub", str)
    defaults = Liveness()
    liveness = Liveness(
        interval=float(pick("heartbeat", (int, float)) or defaults.interval),
        suspect_misses=int(pick("suspect_misses", int) or defaults.suspect_misses),
        down_misses=int(pick("down_misses", int) or defaults.down_misses),
        startup_grace=float(_first(pick("startup_grace", (int, float)), defaults.startup_grace)),
    )
    if liveness.interval <= 0 or liveness.suspect_misses < 1 or liveness.down_misses <= liveness.suspect_misses:
        raise GafferError(
            f"{where}: need heartbeat > 0, suspect_misses >= 1 and down_misses > suspect_misses"
        )
    keys = pick("keys", str)
    return ControllerSettings(
        bind=bind,
        pub=pub,
        data_dir=Path(pick("data_dir", str) or ".gaffer"),
        keys=Path(keys) if keys else None,
        insecure=bool(pick("insecure", bool)),
        socket_group=pick("socket_group", str),
        liveness=liveness,
        node_grace=float(_first(pick("node_grace", (int, float)), 2.0)),
    )


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


@click.command()
@click.option("--bind", help=f"Endpoint for agents and clients [default: a private unix socket in the runtime dir; {DEFAULT_KEYED_BIND} with --keys].")
@click.option("--pub", help="Endpoint for event subscribers [default: beside --bind, or its port + 1].")
@click.option("--data-dir", help="Where the desired state is kept [default: .gaffer].")
@click.option("--keys", help="Key directory: controller.key_secret, agents/, clients/.")
@click.option("--insecure", is_flag=True, default=None, help="Allow TCP without CURVE keys (anyone who reaches it can run commands).")
@click.option("--socket-group", help="Let this group use the local sockets (runtime dir 0750, sockets 0660).")
@click.option("--heartbeat", type=float, help="Heartbeat interval in seconds [default: 1].")
@click.option("--suspect-misses", type=int, help="Missed heartbeats before a node is suspect [3].")
@click.option("--down-misses", type=int, help="Missed heartbeats before a node is down [5].")
@click.option("--startup-grace", type=float, help="Seconds after start before any node is declared down [10].")
@click.option("--node-grace", type=float, help="Seconds a node stays down before its instances move [2].")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file with the same settings.")
@click.option("--log-level", default="info", type=click.Choice(LOG_LEVELS))
@click.version_option(package_name="gaffer")
def main(config: str | None, log_level: str, **options: Any) -> None:
    """Run the gaffer controller."""
    setup_daemon_logging(log_level)
    try:
        settings = build_settings(options, config)
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    try:
        uvloop.run(_serve(settings))
    except GafferError as exc:
        raise click.ClickException(exc.message) from None


async def _serve(settings: ControllerSettings) -> None:
    controller = Controller(settings)
    await controller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping (managed processes keep running on their agents)")
        await controller.stop()
