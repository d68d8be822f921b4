"""Daemon config files and settings: every number finite and bounded, hostile files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gaffer.common.config import expect, read_config
from gaffer.common.errors import ConfigError, GafferError
from gaffer.agent import daemon as agent_daemon
from gaffer.controller import daemon as controller_daemon


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


class TestReadConfig:
    @pytest.mark.parametrize("text", [
        "a = " + "[" * 100_000 + "]" * 100_000,
        "[" + ".".join(["a"] * 2_000) + "]\n",
    ])
    def test_deep_nesting_is_one_clear_error(self, tmp_path: Path, text: str) -> None:
        """A config file nested 100,000 levels (or a 2,000-part key) is a ConfigError, not a RecursionError."""
        path = write(tmp_path / "c.toml", text)
        with pytest.raises(ConfigError, match=f"{path}: invalid TOML: nested"):
            read_config(path, ["a"])


class TestExpect:
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
    def test_nan_and_infinities_are_refused(self, value: float) -> None:
        """A float setting is never NaN or infinite, bounds or not."""
        with pytest.raises(ConfigError, match=f"c.toml: heartbeat: must be a finite number, got {value}"):
            expect({"heartbeat": value}, "heartbeat", (int, float), "c.toml")

    def test_bounds_name_the_setting(self) -> None:
        """Numbers outside low..high are refused with the setting's name."""
        with pytest.raises(ConfigError, match=r"c.toml: node_grace: must be <= 86400, got 1e\+09"):
            expect({"node_grace": 1e9}, "node_grace", (int, float), "c.toml", low=0, high=86_400)
        with pytest.raises(ConfigError, match="c.toml: down_misses: must be >= 1, got 0"):
            expect({"down_misses": 0}, "down_misses", int, "c.toml", low=1, high=1000)
        with pytest.raises(ConfigError, match="must be <= 1000, got a number too large to show"):
            expect({"n": 10**400}, "n", int, "c.toml", low=1, high=1000)
        assert expect({"n": 7}, "n", int, "c.toml", low=1, high=1000) == 7


class TestControllerSettings:
    @pytest.mark.parametrize(("line", "message"), [
        ("heartbeat = nan", "heartbeat: must be a finite number, got nan"),
        ("heartbeat = inf", "heartbeat: must be a finite number, got inf"),
        ("heartbeat = 0.0", "heartbeat: must be >= 0.01, got 0"),
        ("startup_grace = -inf", "startup_grace: must be a finite number, got -inf"),
        ("node_grace = nan", "node_grace: must be a finite number, got nan"),
        ("node_grace = 1e300", "node_grace: must be <= 86400"),
        ("suspect_misses = 9223372036854775807", "suspect_misses: must be <= 1000"),
        ("max_per_template = 0", "max_per_template: must be >= 1, got 0"),
        ("max_per_template = 2000000", "max_per_template: must be <= 1e+06"),
        ("max_instances = 100000000000", "max_instances: must be <= 1e+07"),
        ("event_buffer = 0", "event_buffer: must be >= 1, got 0"),
        ("event_buffer = 10000001", "event_buffer: must be <= 1e+07"),
        ("backup_every = nan", "backup_every: must be a finite number, got nan"),
        ("backup_keep = 0", "backup_keep: must be >= 1, got 0"),
        ("metrics_max_templates = -1", "metrics_max_templates: must be >= 0, got -1"),
        ("metrics_max_instances = 1e3", "metrics_max_instances: must be int, got float"),
        ("metrics_max_instances = 2000000", "metrics_max_instances: must be <= 1e+06"),
        ("heartbeat = 3600\ndown_misses = 1000\nsuspect_misses = 999", "heartbeat x down_misses must be at most 86400"),
    ])
    def test_liveness_and_limits_are_finite_and_bounded(self, tmp_path: Path, line: str, message: str) -> None:
        """Heartbeat, graces, misses and count limits from a file are checked by name."""
        path = write(tmp_path / "c.toml", line + "\n")
        with pytest.raises(GafferError) as info:
            controller_daemon.build_settings({}, path)
        assert message in info.value.message

    def test_limits_default_and_come_from_the_file(self, tmp_path: Path) -> None:
        """max_per_template / max_instances default to 100,000 / 1,000,000; a file sets them."""
        defaults = controller_daemon.build_settings({}, None)
        assert (defaults.max_per_template, defaults.max_instances) == (100_000, 1_000_000)
        path = write(tmp_path / "c.toml", "max_per_template = 5\nmax_instances = 50\n")
        given = controller_daemon.build_settings({}, path)
        assert (given.max_per_template, given.max_instances) == (5, 50)


    def test_event_buffer_defaults_to_100000_and_comes_from_the_file_or_the_option(self, tmp_path: Path) -> None:
        """event_buffer: 100,000 by default; the file sets it; the option wins over the file."""
        assert controller_daemon.build_settings({}, None).event_buffer == 100_000
        path = write(tmp_path / "c.toml", "event_buffer = 500\n")
        assert controller_daemon.build_settings({}, path).event_buffer == 500
        assert controller_daemon.build_settings({"event_buffer": 7}, path).event_buffer == 7

    def test_metrics_caps_default_to_1000_and_come_from_the_file_or_the_option(self, tmp_path: Path) -> None:
        """metrics_max_templates / metrics_max_instances: 1,000 each; the file sets them; options win."""
        defaults = controller_daemon.build_settings({}, None)
        assert (defaults.metrics_max_templates, defaults.metrics_max_instances) == (1_000, 1_000)
        path = write(tmp_path / "c.toml", "metrics_max_templates = 0\nmetrics_max_instances = 50\n")
        given = controller_daemon.build_settings({"metrics_max_instances": 9}, path)
        assert (given.metrics_max_templates, given.metrics_max_instances) == (0, 9)


class TestAgentPaths:
    def test_a_relative_state_dir_is_made_absolute_before_anything_starts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--state-dir rel is taken from the working directory at start (issue 9: the keeper
        daemonises into / and could not find its lock under a relative path)."""
        monkeypatch.chdir(tmp_path)
        settings, _, _, _ = agent_daemon.build_settings(
            {"state_dir": "rel/state", "name": "n1", "controller": "ipc:///tmp/none.sock"}, None
        )
        assert settings.state_dir == tmp_path / "rel" / "state"


class TestAgentStatsInterval:
    def test_the_stats_interval_comes_from_the_option_the_file_or_the_default(self, tmp_path: Path) -> None:
        """--stats-interval wins over the config file's stats_interval, which wins over 5 s."""
        base = {"name": "n1", "controller": "ipc:///tmp/none.sock"}
        path = tmp_path / "agent.toml"
        path.write_text("stats_interval = 2.5\n")
        assert agent_daemon.build_settings(base, None)[0].stats_interval == 5.0
        assert agent_daemon.build_settings(base, str(path))[0].stats_interval == 2.5
        assert agent_daemon.build_settings({**base, "stats_interval": 1.0}, str(path))[0].stats_interval == 1.0

    def test_an_out_of_bounds_stats_interval_is_refused_naming_it(self, tmp_path: Path) -> None:
        """A stats_interval under 0.5 s or over an hour is one clear error naming the field."""
        path = tmp_path / "agent.toml"
        path.write_text("stats_interval = 0.1\n")
        with pytest.raises(GafferError, match="stats_interval"):
            agent_daemon.build_settings({"name": "n1", "controller": "ipc:///tmp/none.sock"}, str(path))
        result = CliRunner().invoke(agent_daemon.main, ["--stats-interval", "7200"])
        assert result.exit_code == 2 and "--stats-interval" in result.output and "3600" in result.output
