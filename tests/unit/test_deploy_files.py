"""The example files under deploy/ stay valid as the code changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaffer.agent import daemon as agent_daemon
from gaffer.agent.apps import parse_apps
from gaffer.common.config import read_config
from gaffer.common.errors import ConfigError
from gaffer.common.loaders import load_templates
from gaffer.controller import daemon as controller_daemon

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_templates_validate() -> None:
    """deploy/config/web.toml is a valid template file."""
    names = [t.name for t in load_templates(DEPLOY / "config" / "web.toml")]
    assert names == ["web", "worker"]


def test_example_controller_config_builds_settings() -> None:
    """deploy/config/controller.toml holds only known settings with the right types."""
    settings = controller_daemon.build_settings({}, str(DEPLOY / "config" / "controller.toml"))
    assert settings.bind == "tcp://10.0.0.10:6001" and settings.liveness.down_misses == 5
    assert (settings.backup_every, settings.backup_keep, settings.backup_dir) == (3600.0, 5, None)


def test_example_agent_config_is_known_settings_and_apps() -> None:
    """deploy/config/agent.toml parses; only its key files are missing on a test machine."""
    data = read_config(DEPLOY / "config" / "agent.toml", agent_daemon.SETTINGS)
    assert [app.use for app in parse_apps(data["apps"])] == ["webhooks"]
    with pytest.raises(ConfigError, match="no such key file"):
        agent_daemon.build_settings({}, str(DEPLOY / "config" / "agent.toml"))


@pytest.mark.parametrize("unit", ["gaffer-agent.service", "gaffer-controller.service"])
def test_systemd_units_run_the_installed_commands(unit: str) -> None:
    """The units start the console scripts setup.cfg installs, with a config file."""
    text = (DEPLOY / "systemd" / unit).read_text()
    command = unit.removesuffix(".service")
    assert f"ExecStart=/usr/local/bin/{command} --config /etc/gaffer/" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    if command == "gaffer-agent":
        assert "KillMode=process" in text
